package engine

import (
	"log/slog"
	"net"
	"net/netip"
	"sync"
	"time"

	"github.com/fleetgate/fleetgate/uplink/ike"
)

// admitConn wraps the IKE or NAT-T socket and asks the gateway's admission
// limiter about every well-formed first Main Mode message (responder cookie
// zero, RFC 2408 §3.1) before the IKE engine sees it, so a refused
// initiator costs no Diffie-Hellman work. uplink/tunnel has no admission
// hook, so the check sits below it, on the socket. Retransmissions of an
// admitted first message are not charged again.
//
// Only a message the IKE responder would act on is charged (a parseable
// Main Mode with an IPsec SA payload): junk with a victim's source address
// (issue 18, finding 5) is dropped and counted without spending the
// victim's tokens. Refusals and junk are logged, at most once a second.
type admitConn struct {
	net.PacketConn
	udp    *net.UDPConn
	natt   bool
	allow  func(src netip.Addr) bool
	refuse func(src netip.Addr)
	// first is told about every newly admitted first message.
	first func(src netip.Addr)
	// malformed is told about every first message dropped as junk.
	malformed func(src netip.Addr)
	log       *slog.Logger
	now       func() time.Time

	mu       sync.Mutex
	admitted map[[8]byte]struct{}
	logAt    time.Time
	muted    int // log lines suppressed since logAt
}

func newAdmitConn(pc net.PacketConn, natt bool, allow func(netip.Addr) bool, refuse, first func(netip.Addr)) *admitConn {
	c := &admitConn{PacketConn: pc, natt: natt, allow: allow, refuse: refuse, first: first, admitted: map[[8]byte]struct{}{},
		log: slog.New(slog.DiscardHandler), now: time.Now}
	c.udp, _ = pc.(*net.UDPConn)
	return c
}

// ReadFrom returns the next datagram that is not a refused or malformed
// first phase 1 message.
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
		if !c.Admit(b[:n], src) {
			continue
		}
		if a == nil {
			a = net.UDPAddrFromAddrPort(src)
		}
		return n, a, nil
	}
}

// check classifies one datagram and charges the limiter for a well-formed
// first Main Mode message; false means drop it.
func (c *admitConn) check(b []byte, src netip.Addr) bool {
	ic, kind := firstPhase1(b, c.natt)
	switch kind {
	case notFirst:
		return true
	case junkFirst:
		if c.malformed != nil {
			c.malformed(src)
		}
		c.warn("first Main Mode message malformed: dropped, source not charged", src)
		return false
	}
	c.mu.Lock()
	_, seen := c.admitted[ic]
	c.mu.Unlock()
	if seen {
		return true
	}
	if !c.allow(src) {
		c.refuse(src)
		c.warn("new Main Mode refused by pacing", src)
		return false
	}
	c.mu.Lock()
	if len(c.admitted) >= admittedMax {
		clear(c.admitted)
	}
	c.admitted[ic] = struct{}{}
	c.mu.Unlock()
	if c.first != nil {
		c.first(src)
	}
	return true
}

// warn logs at most one line a second, saying how many were suppressed.
func (c *admitConn) warn(msg string, src netip.Addr) {
	now := c.now()
	c.mu.Lock()
	if now.Sub(c.logAt) < time.Second {
		c.muted++
		c.mu.Unlock()
		return
	}
	muted := c.muted
	c.logAt, c.muted = now, 0
	c.mu.Unlock()
	c.log.Warn(msg, "peer", src, "suppressed", muted)
}

// firstKind is what firstPhase1 found.
type firstKind uint8

const (
	notFirst  firstKind = iota // not a first phase 1 message: pass it on uncharged
	firstMM                    // a well-formed first Main Mode message: charge it
	junkFirst                  // claims to open a Main Mode but would be dropped by the responder
)

// firstPhase1 classifies b: the first message of a Main Mode (RFC 2408
// §3.1: responder cookie still zero, RFC 2409 §5: HDR, SA) with its
// initiator cookie, or junk that claims to be one, or anything else. On the
// NAT-T port IKE follows a non-ESP marker; anything else there (ESP,
// keepalives) is not inspected. Aggressive Mode, which the responder never
// accepts, is passed on uncharged (the responder counts and drops it).
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
