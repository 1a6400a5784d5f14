package radius

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"sync"
	"sync/atomic"
	"time"

	"layeh.com/radius"
	"layeh.com/radius/rfc2865"
	"layeh.com/radius/rfc2866"
	"layeh.com/radius/rfc3576"
)

// DefaultDAEPort is the Dynamic Authorization port (RFC 5176 §2.3).
const DefaultDAEPort = 3799

// SessionMatch identifies the sessions a Disconnect- or CoA-Request names
// (RFC 5176 §3: Acct-Session-Id, User-Name, Framed-IP-Address). Every
// field that is set must match.
type SessionMatch struct {
	SessionID string
	User      string
	FramedIP  netip.Addr
}

// Empty reports whether the request named no session at all.
func (m SessionMatch) Empty() bool { return m.SessionID == "" && m.User == "" && !m.FramedIP.IsValid() }

// DAEConfig configures a Dynamic Authorization listener.
type DAEConfig struct {
	// Listen is host:port (port DefaultDAEPort when 0).
	Listen string
	// Secret shared with the dynamic authorization clients (never logged).
	Secret []byte
	// Clients are the source prefixes allowed to send requests (empty:
	// any source; the secret still has to match).
	Clients []netip.Prefix
	// Disconnect ends the matching sessions and returns how many.
	Disconnect func(SessionMatch) int
	// CoA applies a change of authorization (Filter-Id) to the matching
	// sessions; it returns how many and an error when the change cannot
	// be applied (CoA-NAK). Nil: every CoA-Request gets CoA-NAK
	// Unsupported-Service.
	CoA func(m SessionMatch, filterID string) (int, error)
	// Logger; nil discards.
	Logger *slog.Logger
}

// DAEStats are the listener's counters.
type DAEStats struct {
	DisconnectACK, DisconnectNAK atomic.Uint64
	CoAACK, CoANAK               atomic.Uint64
	// Malformed counts datagrams that are not a RADIUS Disconnect- or
	// CoA-Request; BadAuthenticator those whose authenticator does not
	// verify with our secret (a wrong secret); UnknownClient those from
	// a source outside Clients. All three are dropped without reply.
	Malformed, BadAuthenticator, UnknownClient atomic.Uint64
}

// DAE is the Disconnect-Request / CoA-Request listener (RFC 5176).
type DAE struct {
	cfg  DAEConfig
	log  *slog.Logger
	conn *net.UDPConn
	// Stats are the listener's counters.
	Stats DAEStats

	mu      sync.Mutex
	lastLog map[string]time.Time // rate limit of warnings, by kind
}

// ListenDAE binds the listener.
func ListenDAE(cfg DAEConfig) (*DAE, error) {
	if len(cfg.Secret) == 0 {
		return nil, errors.New("radius: dae needs a secret")
	}
	ap, err := netip.ParseAddrPort(cfg.Listen)
	if err != nil {
		return nil, fmt.Errorf("radius: dae listen %q: %w", cfg.Listen, err)
	}
	c, err := net.ListenUDP("udp", net.UDPAddrFromAddrPort(ap))
	if err != nil {
		return nil, fmt.Errorf("radius: dae: %w", err)
	}
	return newDAE(cfg, c), nil
}

func newDAE(cfg DAEConfig, c *net.UDPConn) *DAE {
	log := cfg.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return &DAE{cfg: cfg, log: log, conn: c, lastLog: map[string]time.Time{}}
}

// Addr is the bound address.
func (d *DAE) Addr() net.Addr { return d.conn.LocalAddr() }

// Serve answers requests until ctx is done.
func (d *DAE) Serve(ctx context.Context) {
	stop := context.AfterFunc(ctx, func() { d.conn.Close() })
	defer stop()
	buf := make([]byte, 4096)
	for {
		n, src, err := d.conn.ReadFromUDPAddrPort(buf)
		if err != nil {
			if ctx.Err() != nil || errors.Is(err, net.ErrClosed) {
				return
			}
			continue
		}
		if reply := d.handle(src.Addr().Unmap(), buf[:n]); reply != nil {
			_, _ = d.conn.WriteToUDPAddrPort(reply, src)
		}
	}
}

// Close closes the socket.
func (d *DAE) Close() error { return d.conn.Close() }

// warn logs at most once a second per kind.
func (d *DAE) warn(kind, msg string, args ...any) {
	d.mu.Lock()
	now := time.Now()
	if now.Sub(d.lastLog[kind]) < time.Second {
		d.mu.Unlock()
		return
	}
	d.lastLog[kind] = now
	d.mu.Unlock()
	d.log.Warn(msg, args...)
}

func (d *DAE) allowed(src netip.Addr) bool {
	if len(d.cfg.Clients) == 0 {
		return true
	}
	for _, p := range d.cfg.Clients {
		if p.Contains(src) {
			return true
		}
	}
	return false
}

// handle processes one datagram and returns the reply (nil: drop).
func (d *DAE) handle(src netip.Addr, b []byte) []byte {
	if !d.allowed(src) {
		d.Stats.UnknownClient.Add(1)
		d.warn("client", "radius dae: request from a source not in dae_clients dropped", "peer", src)
		return nil
	}
	req, err := radius.Parse(b, d.cfg.Secret)
	if err != nil || (req.Code != radius.CodeDisconnectRequest && req.Code != radius.CodeCoARequest) {
		d.Stats.Malformed.Add(1)
		reason := "not a Disconnect-Request or CoA-Request"
		if err != nil {
			reason = err.Error()
		}
		d.warn("malformed", "radius dae: malformed request dropped", "peer", src, "reason", reason)
		return nil
	}
	if !radius.IsAuthenticRequest(b, d.cfg.Secret) {
		d.Stats.BadAuthenticator.Add(1)
		d.warn("auth", "radius dae: request authenticator does not verify (wrong secret?): ignored", "peer", src, "msg_type", req.Code.String())
		return nil
	}
	m := SessionMatch{User: rfc2865.UserName_GetString(req), SessionID: rfc2866.AcctSessionID_GetString(req)}
	if ip := rfc2865.FramedIPAddress_Get(req); ip != nil {
		if a, ok := netip.AddrFromSlice(ip.To4()); ok {
			m.FramedIP = a
		}
	}
	ackCode, nakCode := radius.CodeDisconnectACK, radius.CodeDisconnectNAK
	ack, nak := &d.Stats.DisconnectACK, &d.Stats.DisconnectNAK
	if req.Code == radius.CodeCoARequest {
		ackCode, nakCode = radius.CodeCoAACK, radius.CodeCoANAK
		ack, nak = &d.Stats.CoAACK, &d.Stats.CoANAK
	}
	reply := func(code radius.Code, cause rfc3576.ErrorCause) []byte {
		resp := req.Response(code)
		if cause != 0 {
			_ = rfc3576.ErrorCause_Set(resp, cause)
		}
		out, err := resp.Encode()
		if err != nil {
			return nil
		}
		return out
	}
	if m.Empty() {
		nak.Add(1)
		d.warn("missing", "radius dae: request names no session (Acct-Session-Id, User-Name or Framed-IP-Address)", "peer", src, "msg_type", req.Code.String())
		return reply(nakCode, rfc3576.ErrorCause_Value_MissingAttribute)
	}
	var n int
	if req.Code == radius.CodeDisconnectRequest {
		if d.cfg.Disconnect != nil {
			n = d.cfg.Disconnect(m)
		}
	} else {
		filter := rfc2865.FilterID_GetString(req)
		if d.cfg.CoA == nil || filter == "" {
			nak.Add(1)
			return reply(nakCode, rfc3576.ErrorCause_Value_UnsupportedService)
		}
		var err error
		if n, err = d.cfg.CoA(m, filter); err != nil {
			nak.Add(1)
			d.log.Info("radius coa refused", "peer", src, "session", m.SessionID, "user", m.User, "filter", filter, "err", err)
			return reply(nakCode, rfc3576.ErrorCause_Value_InvalidRequest)
		}
	}
	if n == 0 {
		nak.Add(1)
		d.log.Info("radius dae: no such session", "peer", src, "msg_type", req.Code.String(), "session", m.SessionID, "user", m.User, "framed_ip", m.FramedIP)
		return reply(nakCode, rfc3576.ErrorCause_Value_SessionContextNotFound)
	}
	ack.Add(1)
	d.log.Info("radius dae: request applied", "peer", src, "msg_type", req.Code.String(), "sessions", n, "session", m.SessionID, "user", m.User)
	return reply(ackCode, 0)
}
