package engine

import (
	"log/slog"
	"net"
	"net/netip"
	"sync"
	"time"

	"github.com/fleetgate/fleetgate/uplink/ike"
)

// admitConn wraps the IKE or NAT-T socket and looks at every datagram that
// claims to open a Main Mode (responder cookie zero, RFC 2408 §3.1) before
// the IKE engine sees it. Junk (issue 18, finding 5: 28 bytes with a
// victim's source address) is dropped, counted and logged at most once a
// second; a well-formed first message is passed on and noted for the
// set-up time histogram. Nobody is charged here: pacing applies when the
// third message proves the peer's address (ike.Config.Admit, engine.go),
// so neither junk nor well-formed spoofed first messages can spend a
// victim's tokens.
type admitConn struct {
	net.PacketConn
	udp  *net.UDPConn
	natt bool
	// first is told about every new well-formed first message.
	first func(src netip.Addr)
	// malformed is told about every first message dropped as junk.
	malformed func(src netip.Addr)
	log       *slog.Logger
	now       func() time.Time

	mu   sync.Mutex
	seen map[[8]byte]struct{} // initiator cookies already noted
	logs logLimiter
}

func newAdmitConn(pc net.PacketConn, natt bool, first, malformed func(netip.Addr)) *admitConn {
	c := &admitConn{PacketConn: pc, natt: natt, first: first, malformed: malformed, seen: map[[8]byte]struct{}{},
		log: slog.New(slog.DiscardHandler), now: time.Now}
	c.udp, _ = pc.(*net.UDPConn)
	return c
}

// ReadFrom returns the next datagram that is not a malformed first phase 1
// message.
func (c *admitConn) ReadFrom(b []byte) (int, net.Addr, error) {
	for {
		var (
			n   int
			src netip.AddrPort
			a   net.Addr
			err error
		)
		if c.udp != nil {
			n, src, err = c.udp.ReadFromUDPAddrPort(b)
			if err == nil {
				src = netip.AddrPortFrom(src.Addr().Unmap(), src.Port())
			}
		} else {
			n, a, err = c.PacketConn.ReadFrom(b)
			if err == nil {
				src, _ = netip.ParseAddrPort(a.String())
			}
		}
		if err != nil {
			return n, a, err
		}
		if !c.check(b[:n], src.Addr()) {
			continue
		}
		if a == nil {
			a = net.UDPAddrFromAddrPort(src)
		}
		return n, a, nil
	}
}

// check classifies one datagram; false means drop it.
func (c *admitConn) check(b []byte, src netip.Addr) bool {
	ic, kind := firstPhase1(b, c.natt)
	switch kind {
	case notFirst:
		return true
	case junkFirst:
		if c.malformed != nil {
			c.malformed(src)
		}
		c.logs.warn(c.log, c.now(), "first Main Mode message malformed: dropped", "peer", src)
		return false
	}
	c.mu.Lock()
	_, seen := c.seen[ic]
	if !seen {
		if len(c.seen) >= admittedMax {
			clear(c.seen)
		}
		c.seen[ic] = struct{}{}
	}
	c.mu.Unlock()
	if !seen && c.first != nil {
		c.first(src)
	}
	return true
}

// logLimiter lets one warning a second through and says how many were
// held back (STYLE §6: peer misbehaviour is logged rate-limited).
type logLimiter struct {
	mu    sync.Mutex
	at    time.Time
	muted int
}

func (l *logLimiter) warn(log *slog.Logger, now time.Time, msg string, args ...any) {
	l.mu.Lock()
	if now.Sub(l.at) < time.Second {
		l.muted++
		l.mu.Unlock()
		return
	}
	muted := l.muted
	l.at, l.muted = now, 0
	l.mu.Unlock()
	log.Warn(msg, append(args, "suppressed", muted)...)
}

// firstKind is what firstPhase1 found.
type firstKind uint8

const (
	notFirst  firstKind = iota // not a first Main Mode message: pass it on
	firstMM                    // a well-formed first Main Mode message
	junkFirst                  // claims to open a Main Mode but would be dropped by the responder
)

// firstPhase1 classifies b: the first message of a Main Mode (RFC 2408
// §3.1: responder cookie still zero, RFC 2409 §5: HDR, SA) with its
// initiator cookie, or junk that claims to be one, or anything else. On the
// NAT-T port IKE follows a non-ESP marker; anything else there (ESP,
// keepalives) is not inspected. Aggressive Mode, which the responder never
// accepts, is passed on (the responder counts and drops it).
func firstPhase1(b []byte, natt bool) ([8]byte, firstKind) {
	var ic [8]byte
	if natt {
		if len(b) < nonESPMarkerLen || b[0]|b[1]|b[2]|b[3] != 0 {
			return ic, notFirst
		}
		b = b[nonESPMarkerLen:]
	}
	if len(b) < isakmpHeaderLen {
		if len(b) >= 19 && isZero(b[8:16]) && b[18] == exchIdentityProtection {
			return ic, junkFirst
		}
		return ic, notFirst
	}
	if !isZero(b[8:16]) || b[18] != exchIdentityProtection {
		return ic, notFirst
	}
	if !wellFormedMM1(b) {
		return ic, junkFirst
	}
	copy(ic[:], b[:8])
	return ic, firstMM
}

// wellFormedMM1 applies the responder's own parsers (uplink/ike) to a first
// Main Mode message: valid header and payload chain, not encrypted,
// message ID zero, and an SA payload (the first payload, RFC 2409 §5) in the
// IPsec DOI offering an ISAKMP proposal.
func wellFormedMM1(b []byte) bool {
	m, err := ike.ParseMessage(b)
	if err != nil || m.Encrypted != nil || m.Header.MessageID != 0 || len(m.Payloads) == 0 || m.Payloads[0].Type != ike.PayloadSA {
		return false
	}
	sa, err := ike.ParseSA(m.Payloads[0].Body)
	if err != nil {
		return false
	}
	for _, p := range sa.Proposals {
		if p.Protocol == ike.ProtoISAKMP {
			return true
		}
	}
	return false
}

func isZero(b []byte) bool {
	for _, x := range b {
		if x != 0 {
			return false
		}
	}
	return true
}
