package dataplane

import (
	"encoding/binary"
	"net/netip"
	"sync"
	"time"

	"gvisor.dev/gvisor/pkg/tcpip/header"

	"github.com/fleetgate/fleetgate/gateway/ipv6"
)

// flowKey identifies a conversation as seen from the session side:
// session address:port -> central address:port.
type flowKey struct {
	proto         uint8
	local, remote netip.Addr
	lport, rport  uint16
}

// flows remembers conversations central hosts opened towards sessions, so
// the replies pass the session's policy (a central CoAP client polling a
// sensor must get its answer even when the site may not open connections
// to that client itself). Entries expire after flowIdle; the table is
// bounded and, when full, refuses new entries (replies are then judged by
// policy alone).
type flows struct {
	mu   sync.Mutex
	m    map[flowKey]time.Time // key -> expiry
	max  int
	idle time.Duration
	// last is the key noteKey last stored, at lastAt: a host stream notes
	// the same flow for every packet, and within flowRenew of lastAt its
	// entry is known to be there and is not rewritten (expiry then lags
	// by at most flowRenew).
	last   flowKey
	lastAt time.Time
}

const (
	flowIdle    = 2 * time.Minute
	flowMax     = 65536
	flowSweepAt = 4096 // sweep expired entries every so many inserts
	flowRenew   = time.Second
)

func newFlows() *flows { return &flows{m: map[flowKey]time.Time{}, max: flowMax, idle: flowIdle} }

func keyOf(h header.IPv4, fromHost bool) (flowKey, bool) {
	k := flowKey{proto: h.Protocol()}
	switch h.TransportProtocol() {
	case header.TCPProtocolNumber, header.UDPProtocolNumber:
		pl := h.Payload()
		if h.FragmentOffset() != 0 || len(pl) < 4 {
			return k, false
		}
		sp, dp := header.UDP(pl).SourcePort(), header.UDP(pl).DestinationPort() // TCP's at the same offsets
		if fromHost {
			k.local, k.remote, k.lport, k.rport = dst4(h), src4(h), dp, sp
		} else {
			k.local, k.remote, k.lport, k.rport = src4(h), dst4(h), sp, dp
		}
	case header.ICMPv4ProtocolNumber:
		pl := h.Payload()
		if h.FragmentOffset() != 0 || len(pl) < 8 {
			return k, false
		}
		// Echo request (8) from the host is answered by echo reply (0);
		// key on the identifier.
		id := binary.BigEndian.Uint16(pl[4:])
		if fromHost {
			if pl[0] != 8 {
				return k, false
			}
			k.local, k.remote, k.lport = dst4(h), src4(h), id
		} else {
			if pl[0] != 0 {
				return k, false
			}
			k.local, k.remote, k.lport = src4(h), dst4(h), id
		}
	default:
		return k, false
	}
	return k, true
}

// note records a host-initiated packet towards a session.
func (f *flows) note(h header.IPv4, now time.Time) {
	if k, ok := keyOf(h, true); ok {
		f.noteKey(k, now)
	}
}

// reply reports whether a packet from a session answers a recorded flow.
func (f *flows) reply(h header.IPv4, now time.Time) bool {
	k, ok := keyOf(h, false)
	return ok && f.replyKey(k, now)
}

// note6 and reply6 are note and reply for IPv6 (one table for both
// families: the bound holds for their sum).
func (f *flows) note6(h header.IPv6, in ipv6.Info, now time.Time) {
	if k, ok := keyOf6(h, in, true); ok {
		f.noteKey(k, now)
	}
}

func (f *flows) reply6(h header.IPv6, in ipv6.Info, now time.Time) bool {
	k, ok := keyOf6(h, in, false)
	return ok && f.replyKey(k, now)
}

// keyOf6 is keyOf for an IPv6 packet parsed by ipv6.Parse: TCP and UDP by
// ports, ICMPv6 echo (request 128 from the host, reply 129 from the
// session) by identifier.
func keyOf6(h header.IPv6, in ipv6.Info, fromHost bool) (flowKey, bool) {
	k := flowKey{proto: in.Proto}
	switch in.Proto {
	case ipv6.ProtoTCP, ipv6.ProtoUDP:
		if !in.HasPorts {
			return k, false
		}
		if fromHost {
			k.local, k.remote, k.lport, k.rport = ipv6.Dst(h), ipv6.Src(h), in.DstPort, in.SrcPort
		} else {
			k.local, k.remote, k.lport, k.rport = ipv6.Src(h), ipv6.Dst(h), in.SrcPort, in.DstPort
		}
	case ipv6.ProtoICMPv6:
		pl := h[in.L4:in.Len]
		if len(pl) < 8 {
			return k, false
		}
		id := binary.BigEndian.Uint16(pl[4:])
		if fromHost {
			if pl[0] != 128 {
				return k, false
			}
			k.local, k.remote, k.lport = ipv6.Dst(h), ipv6.Src(h), id
		} else {
			if pl[0] != 129 {
				return k, false
			}
			k.local, k.remote, k.lport = ipv6.Src(h), ipv6.Dst(h), id
		}
	default:
		return k, false
	}
	return k, true
}

func (f *flows) noteKey(k flowKey, now time.Time) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if k == f.last && !now.Before(f.lastAt) && now.Sub(f.lastAt) < flowRenew {
		return
	}
	if _, exists := f.m[k]; !exists {
		if len(f.m)%flowSweepAt == 0 {
			for key, exp := range f.m {
				if now.After(exp) {
					delete(f.m, key)
				}
			}
		}
		if len(f.m) >= f.max {
			return
		}
	}
	f.m[k] = now.Add(f.idle)
	f.last, f.lastAt = k, now
}

func (f *flows) replyKey(k flowKey, now time.Time) bool {
	f.mu.Lock()
	defer f.mu.Unlock()
	exp, found := f.m[k]
	if !found {
		return false
	}
	if now.After(exp) {
		delete(f.m, k)
		return false
	}
	f.m[k] = now.Add(f.idle)
	return true
}
