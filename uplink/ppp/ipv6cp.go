package ppp

import (
	"encoding/binary"
	"fmt"
	"io"
	"net/netip"
)

// IPV6CP (RFC 5072): the IPv6 Control Protocol negotiates only the
// Interface-Identifier (option 1, 8 bytes) of each end, from which both
// form their link-local addresses (fe80::/64 + identifier, §5); global
// addresses and prefixes come from elsewhere (here: the gateway's
// configuration routes the site's prefix to the session). IPv6-
// Compression-Protocol (option 2) is refused: we do no header compression.
//
// A client opens IPV6CP when Config.IPv6 is set; a server when the
// Assignment of the authenticated peer says IPv6, and Protocol-Rejects
// IPV6CP otherwise (as before). IPV6CP failing or being rejected leaves
// the link up for IPv4: IPCP is what brings a link up or down.

// IPV6CP options (RFC 5072 §4).
const (
	ipv6cpOptIfaceID byte = 1
	ipv6cpOptComp    byte = 2
)

// IfaceID is a 64-bit IPv6 interface identifier (RFC 4291 §2.5.1).
type IfaceID [8]byte

// IsZero reports whether id is all zeros (RFC 5072: "no identifier yet").
func (id IfaceID) IsZero() bool { return id == IfaceID{} }

// LinkLocal is the fe80::/64 address formed with id (RFC 5072 §5).
func (id IfaceID) LinkLocal() netip.Addr {
	var a [16]byte
	a[0], a[1] = 0xfe, 0x80
	copy(a[8:], id[:])
	return netip.AddrFrom16(a)
}

// In returns the address formed by prefix (its first 64 bits) and id.
func (id IfaceID) In(prefix netip.Prefix) netip.Addr {
	a := prefix.Masked().Addr().As16()
	copy(a[8:], id[:])
	return netip.AddrFrom16(a)
}

// String formats id as the four low groups of an IPv6 address
// ("211:22ff:fe33:4455"; "fe80::" + String is the link-local address).
func (id IfaceID) String() string {
	b := id[:]
	return fmt.Sprintf("%x:%x:%x:%x", binary.BigEndian.Uint16(b), binary.BigEndian.Uint16(b[2:]), binary.BigEndian.Uint16(b[4:]), binary.BigEndian.Uint16(b[6:]))
}

// ipv6cp is the IPV6CP option handler.
type ipv6cp struct {
	m       *machine
	enabled bool    // this end negotiates IPV6CP on this link
	local   IfaceID // our identifier (sent in every request)
	peer    IfaceID // the peer's, once acknowledged
	suggest IfaceID // server: what a peer with a zero/clashing identifier is told
	sendID  bool
	open    bool
	naks    int // Naks of our identifier received (bounded by the fsm's Max-Configure)
}

func (p *ipv6cp) init() {
	p.enabled = p.m.cfg.IPv6 && p.m.cfg.Role == Client
	p.local = p.m.cfg.IfaceID
	if p.local.IsZero() {
		p.local = p.m.randIfaceID()
	}
	p.sendID = true
}

// randIfaceID draws a random non-zero identifier with the universal/local
// bit cleared (RFC 5072 §4.1: a random identifier is not globally unique;
// RFC 4291 appendix A: u = 0 means local scope).
func (m *machine) randIfaceID() IfaceID {
	var id IfaceID
	if _, err := io.ReadFull(m.cfg.Rand, id[:]); err != nil {
		binary.BigEndian.PutUint64(id[:], uint64(m.randUint32())<<32|uint64(m.randUint32()))
	}
	id[0] &^= 0x02
	if id.IsZero() {
		id[7] = 1
	}
	return id
}

func optIfaceID(d []byte) (IfaceID, bool) {
	if len(d) != 8 {
		return IfaceID{}, false
	}
	return IfaceID(d), true
}

func (p *ipv6cp) reqOptions() []byte {
	if !p.sendID {
		return nil
	}
	return AppendOption(nil, ipv6cpOptIfaceID, p.local[:])
}

// recvReq judges the peer's Configure-Request (RFC 5072 §4.1): an
// identifier that is zero or equal to ours is Nak'ed with one for the peer
// to use (the server's suggestion for this peer, else a random one);
// anything else but a well-formed identifier is rejected.
func (p *ipv6cp) recvReq(opts []byte) (byte, []byte) {
	var nak, rej []byte
	var peer IfaceID
	err := ForEachOption(opts, func(o Option) error {
		raw := AppendOption(nil, o.Type, o.Data)
		if o.Type != ipv6cpOptIfaceID {
			rej = append(rej, raw...) // IPv6-Compression-Protocol, unknown
			return nil
		}
		id, ok := optIfaceID(o.Data)
		if !ok {
			rej = append(rej, raw...)
			return nil
		}
		if id.IsZero() || id == p.local {
			s := p.suggest
			if s.IsZero() || s == p.local {
				s = p.m.randIfaceID()
				for s == p.local {
					s = p.m.randIfaceID()
				}
			}
			nak = AppendOption(nak, ipv6cpOptIfaceID, s[:])
			return nil
		}
		peer = id
		return nil
	})
	if code, reply, refused := p.m.refuse(err, opts, rej, nak); refused {
		return code, reply
	}
	p.peer = peer // zero when the peer sent no identifier
	return CodeConfAck, opts
}

func (p *ipv6cp) recvAck(opts []byte) bool { return string(opts) == string(p.m.ipv6cpF.reqOpts) }

// recvNak takes the peer's suggestion for our identifier unless it is
// zero (RFC 5072 §4.1), or we are a server with a configured identifier:
// that one is kept (the gateway's link-local address stays stable) and
// re-requested; the peer, told to change its own clashing identifier in
// the same round, then acknowledges it. A peer that keeps Naking runs
// into Max-Configure.
func (p *ipv6cp) recvNak(opts []byte) error {
	return ForEachOption(opts, func(o Option) error {
		if o.Type != ipv6cpOptIfaceID {
			return nil
		}
		id, ok := optIfaceID(o.Data)
		if !ok || id.IsZero() || p.m.cfg.Role == Server && !p.m.cfg.IfaceID.IsZero() {
			return nil
		}
		p.naks++
		p.local, p.sendID = id, true
		return nil
	})
}

// recvRej: a peer that rejects the Interface-Identifier option leaves us
// with our identifier unannounced (RFC 5072 §4.1 allows that).
func (p *ipv6cp) recvRej(opts []byte) error {
	return ForEachOption(opts, func(o Option) error {
		if o.Type == ipv6cpOptIfaceID {
			p.sendID = false
		}
		return nil
	})
}

func (p *ipv6cp) up()      { p.open = true; p.m.ipv6cpUp() }
func (p *ipv6cp) down()    { p.open = false; p.m.ipv6cpDown() }
func (p *ipv6cp) started() {}

// finished: IPV6CP gave up (Max-Configure, rejected, terminated); the
// link stays up for IPv4.
func (p *ipv6cp) finished() {
	p.open = false
	p.m.ipv6cpDown()
}

func (p *ipv6cp) extCode(Packet) bool { return false }
