// Package radius authenticates PPP users against a RADIUS server (RFC 2865)
// with PAP, CHAP-MD5 (RFC 2865 §5.3/§5.40) or MS-CHAPv2 (RFC 2548 §2.3),
// honours Framed-IP-Address and Framed-Route from the reply, and sends
// accounting Start / Interim-Update / Stop with byte and packet counters
// (RFC 2866, RFC 2869 gigawords). Built on layeh.com/radius.
//
// The PPP layer hands over the raw exchange (Request); Authenticate returns
// accept/reject and, for MS-CHAPv2, the authenticator response from
// MS-CHAP2-Success that the PPP server puts in its Success packet.
package radius

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"strings"
	"sync/atomic"
	"time"

	"layeh.com/radius"
	"layeh.com/radius/rfc2865"
	"layeh.com/radius/rfc2866"
	"layeh.com/radius/rfc2869"
	"layeh.com/radius/vendors/microsoft"
)

// PPP authentication methods.
const (
	MethodPAP      = "pap"
	MethodCHAP     = "chap"
	MethodMSCHAPv2 = "mschapv2"
)

// Errors.
var (
	ErrBadRequest = errors.New("radius: request is missing fields for its method")
	ErrNoServer   = errors.New("radius: no answer from the server")
	// ErrBusy: Config.MaxInFlight Access-Requests are already waiting.
	ErrBusy   = errors.New("radius: too many requests in flight")
	ErrNoAcct = errors.New("radius: no accounting server configured")
)

// Config configures a Client.
type Config struct {
	// Auth and Acct are host:port of the authentication and accounting
	// servers (Acct may be empty).
	Auth, Acct string
	// AuthServers and AcctServers are further servers tried in this order
	// after Auth and Acct (fail-over; one shared Secret).
	AuthServers, AcctServers []string
	// DeadTime is how long a server that did not answer is skipped
	// (DefaultDeadTime).
	DeadTime time.Duration
	// Now is the clock (default time.Now).
	Now func() time.Time
	// Secret is the shared secret (never logged).
	Secret []byte
	// NASIdentifier names this gateway (RFC 2865 §5.32).
	NASIdentifier string
	// Timeout bounds one exchange including retries (default 3s); packets
	// are retransmitted every second within it.
	Timeout time.Duration
	// MaxInFlight bounds the Access-Requests waiting for an answer at
	// once (DefaultMaxInFlight); one more fails at once with ErrBusy
	// (counted in Stats.Busy) instead of piling up on a slow server.
	MaxInFlight int
	// Logger; nil discards.
	Logger *slog.Logger
}

// DefaultMaxInFlight is Config.MaxInFlight's default: a fleet
// reconnecting after a restart is paced to a few hundred logins a second
// (gateway pacing), each answered in milliseconds.
const DefaultMaxInFlight = 256

// Stats are the client's counters.
type Stats struct {
	Accepts, Rejects, Timeouts atomic.Uint64
	AcctSent, AcctFailed       atomic.Uint64
	BadReplies                 atomic.Uint64 // unparseable Framed-Route etc.
	// ServerDead counts servers marked dead; Failovers requests sent to
	// a further server; AllDead requests failed at once because every
	// server was dead.
	ServerDead, Failovers, AllDead atomic.Uint64
	// Busy counts Access-Requests refused by MaxInFlight.
	Busy atomic.Uint64
}

// Client talks to the RADIUS server. Safe for concurrent use.
type Client struct {
	cfg        Config
	rc         *radius.Client
	log        *slog.Logger
	auth, acct *serverPool
	inflight   chan struct{} // one token per Access-Request waiting (MaxInFlight)
	// Stats are the client's counters.
	Stats Stats
}

// New returns a Client.
func New(cfg Config) *Client {
	if cfg.Timeout == 0 {
		cfg.Timeout = 3 * time.Second
	}
	if cfg.NASIdentifier == "" {
		cfg.NASIdentifier = "fleetgate"
	}
	log := cfg.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	if cfg.DeadTime == 0 {
		cfg.DeadTime = DefaultDeadTime
	}
	if cfg.MaxInFlight <= 0 {
		cfg.MaxInFlight = DefaultMaxInFlight
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	c := &Client{cfg: cfg, log: log, rc: &radius.Client{Retry: time.Second, MaxPacketErrors: 10}, inflight: make(chan struct{}, cfg.MaxInFlight)}
	c.auth = newServerPool("auth", servers(cfg.Auth, cfg.AuthServers), cfg.DeadTime, cfg.Now, log, &c.Stats)
	c.acct = newServerPool("acct", servers(cfg.Acct, cfg.AcctServers), cfg.DeadTime, cfg.Now, log, &c.Stats)
	return c
}

func servers(first string, more []string) []string {
	var out []string
	if first != "" {
		out = append(out, first)
	}
	return append(out, more...)
}

// HasAcct reports whether accounting servers are configured.
func (c *Client) HasAcct() bool { return len(c.acct.addrs) > 0 }

// ServersAlive reports, per configured server (host:port), whether it is
// considered alive now.
func (c *Client) ServersAlive() map[string]bool {
	m := c.auth.alive()
	for k, v := range c.acct.alive() {
		m[k] = v
	}
	return m
}

// Request is one PPP authentication exchange, as the PPP server saw it.
type Request struct {
	Method string // pap, chap or mschapv2
	User   string
	// PAP.
	Password string
	// CHAP-MD5: identifier, the challenge we sent, the 16-byte response.
	CHAPID        byte
	CHAPChallenge []byte
	CHAPResponse  []byte
	// MS-CHAPv2 (RFC 2759): the 16-byte authenticator challenge we sent,
	// the peer's identifier, 16-byte peer challenge and 24-byte NT-Response.
	MSCHAPAuthChallenge []byte
	MSCHAPIdent         byte
	MSCHAPPeerChallenge []byte
	MSCHAPNTResponse    []byte
	// Session context (optional): our session ID, the peer's outer address
	// (Calling-Station-Id) and the NAS port.
	SessionID string
	CallingID string
	NASPort   uint32
}

// Result is the server's answer.
type Result struct {
	Accept bool
	// ReplyMessage is the server's Reply-Message, if any.
	ReplyMessage string
	// FramedIP is Framed-IP-Address (invalid when absent).
	FramedIP netip.Addr
	// FramedRoutes are the prefixes of Framed-Route attributes.
	FramedRoutes []netip.Prefix
	// IPv6Prefix is the site's IPv6 prefix from Delegated-IPv6-Prefix, else
	// Framed-IPv6-Prefix (invalid when absent or unusable).
	IPv6Prefix netip.Prefix
	// MSCHAP2Success is the authenticator response "S=<40 hex>" from
	// MS-CHAP2-Success (ident byte stripped), for the PPP Success packet.
	MSCHAP2Success string
	// Class is echoed in accounting (RFC 2865 §5.25).
	Class []byte
	// FilterIDs are the Filter-Id values (RFC 2865 §5.11); the gateway
	// may bind a user to a phase 1 identity through one.
	FilterIDs []string
	// SessionTimeout and InterimInterval (Acct-Interim-Interval), if sent.
	SessionTimeout  time.Duration
	InterimInterval time.Duration
}

// Authenticate sends an Access-Request for req.
func (c *Client) Authenticate(ctx context.Context, req Request) (*Result, error) {
	select {
	case c.inflight <- struct{}{}:
		defer func() { <-c.inflight }()
	default:
		c.Stats.Busy.Add(1)
		return nil, ErrBusy
	}
	p := radius.New(radius.CodeAccessRequest, c.cfg.Secret)
	if err := rfc2865.UserName_SetString(p, req.User); err != nil {
		return nil, fmt.Errorf("radius: %w", err)
	}
	switch req.Method {
	case MethodPAP:
		if err := rfc2865.UserPassword_SetString(p, req.Password); err != nil {
			return nil, fmt.Errorf("radius: %w", err)
		}
	case MethodCHAP:
		if len(req.CHAPResponse) != 16 || len(req.CHAPChallenge) == 0 {
			return nil, ErrBadRequest
		}
		_ = rfc2865.CHAPPassword_Set(p, append([]byte{req.CHAPID}, req.CHAPResponse...))
		_ = rfc2865.CHAPChallenge_Set(p, req.CHAPChallenge)
	case MethodMSCHAPv2:
		if len(req.MSCHAPAuthChallenge) != 16 || len(req.MSCHAPPeerChallenge) != 16 || len(req.MSCHAPNTResponse) != 24 {
			return nil, ErrBadRequest
		}
		_ = microsoft.MSCHAPChallenge_Add(p, req.MSCHAPAuthChallenge)
		// RFC 2548 §2.3.2: Ident, Flags, Peer-Challenge(16), Reserved(8), Response(24).
		v := make([]byte, 0, 50)
		v = append(v, req.MSCHAPIdent, 0)
		v = append(v, req.MSCHAPPeerChallenge...)
		v = append(v, make([]byte, 8)...)
		v = append(v, req.MSCHAPNTResponse...)
		_ = microsoft.MSCHAP2Response_Add(p, v)
	default:
		return nil, fmt.Errorf("%w: method %q", ErrBadRequest, req.Method)
	}
	c.addNAS(p, req.SessionID, req.CallingID, req.NASPort)
	_ = rfc2865.ServiceType_Set(p, rfc2865.ServiceType_Value_FramedUser)
	_ = rfc2865.FramedProtocol_Set(p, rfc2865.FramedProtocol_Value_PPP)
	resp, err := c.poolExchange(ctx, c.auth, p)
	if err != nil {
		c.Stats.Timeouts.Add(1)
		return nil, err
	}
	res := &Result{Accept: resp.Code == radius.CodeAccessAccept, ReplyMessage: rfc2865.ReplyMessage_GetString(resp)}
	if !res.Accept {
		c.Stats.Rejects.Add(1)
		c.log.Info("radius reject", "user", req.User, "method", req.Method)
		return res, nil
	}
	c.Stats.Accepts.Add(1)
	if ip := rfc2865.FramedIPAddress_Get(resp); ip != nil {
		if a, ok := netip.AddrFromSlice(ip.To4()); ok && !a.IsUnspecified() && a != netip.AddrFrom4([4]byte{255, 255, 255, 254}) && a != netip.AddrFrom4([4]byte{255, 255, 255, 255}) {
			res.FramedIP = a // 255.255.255.254/255 mean "NAS chooses" (RFC 2865 §5.8)
		}
	}
	routes, _ := rfc2865.FramedRoute_GetStrings(resp)
	for _, r := range routes {
		pf, err := ParseFramedRoute(r)
		if err != nil {
			c.Stats.BadReplies.Add(1)
			c.log.Warn("radius: ignoring bad Framed-Route", "user", req.User, "route", r, "err", err)
			continue
		}
		res.FramedRoutes = append(res.FramedRoutes, pf)
	}
	pf6, errs6 := sitePrefix6(resp)
	for _, err := range errs6 {
		c.Stats.BadReplies.Add(1)
		c.log.Warn("radius: ignoring unusable IPv6 prefix", "user", req.User, "err", err)
	}
	res.IPv6Prefix = pf6
	if s := microsoft.MSCHAP2Success_Get(resp); len(s) > 1 {
		res.MSCHAP2Success = string(s[1:])
	}
	res.Class = rfc2865.Class_Get(resp)
	res.FilterIDs, _ = rfc2865.FilterID_GetStrings(resp)
	if st := rfc2865.SessionTimeout_Get(resp); st > 0 {
		res.SessionTimeout = time.Duration(st) * time.Second
	}
	if ii := rfc2869.AcctInterimInterval_Get(resp); ii > 0 {
		res.InterimInterval = time.Duration(ii) * time.Second
	}
	return res, nil
}

func (c *Client) addNAS(p *radius.Packet, sessionID, callingID string, port uint32) {
	_ = rfc2865.NASIdentifier_SetString(p, c.cfg.NASIdentifier)
	_ = rfc2865.NASPort_Set(p, rfc2865.NASPort(port))
	_ = rfc2865.NASPortType_Set(p, rfc2865.NASPortType_Value_Virtual)
	if callingID != "" {
		_ = rfc2865.CallingStationID_SetString(p, callingID)
	}
	if sessionID != "" {
		_ = rfc2866.AcctSessionID_SetString(p, sessionID)
	}
}

func (c *Client) exchange(ctx context.Context, p *radius.Packet, addr string) (*radius.Packet, error) {
	ctx, cancel := context.WithTimeout(ctx, c.cfg.Timeout)
	defer cancel()
	resp, err := c.rc.Exchange(ctx, p, addr)
	if err != nil {
		var ne net.Error
		if errors.Is(err, context.DeadlineExceeded) || (errors.As(err, &ne) && ne.Timeout()) {
			return nil, fmt.Errorf("%w (%s): %v", ErrNoServer, addr, err)
		}
		return nil, fmt.Errorf("radius: %s: %w", addr, err)
	}
	return resp, nil
}

// ParseFramedRoute parses the prefix of a Framed-Route value (RFC 2865
// §5.22): "10.10.8.0/24 0.0.0.0 1", "10.10.8.0/24", or the classic
// "10.10.8.0 255.255.255.0" form... as long as it names an IPv4 prefix.
func ParseFramedRoute(s string) (netip.Prefix, error) {
	f := strings.Fields(s)
	if len(f) == 0 {
		return netip.Prefix{}, errors.New("radius: empty Framed-Route")
	}
	if p, err := netip.ParsePrefix(f[0]); err == nil && p.Addr().Is4() {
		return p.Masked(), nil
	}
	a, err := netip.ParseAddr(f[0])
	if err != nil || !a.Is4() {
		return netip.Prefix{}, fmt.Errorf("radius: Framed-Route %q: no IPv4 destination", s)
	}
	if len(f) > 1 {
		if m := net.ParseIP(f[1]).To4(); m != nil {
			if ones, bits := net.IPMask(m).Size(); bits == 32 {
				return netip.PrefixFrom(a, ones).Masked(), nil
			}
		}
	}
	return netip.PrefixFrom(a, 32), nil
}
