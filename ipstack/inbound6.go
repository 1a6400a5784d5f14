package ipstack

// The IPv6 side of the NIC. The site's IPv6 prefix (a /64 the gateway
// routes to this bridge) is owned as a route exactly like the IPv4 one
// (AddPrefix, prefix.go): UDP to any of its addresses is parsed here
// (udp6.go) and handed to a virtual conn or the port's handler without
// gVisor; TCP (the MQTT relay's connections dialled from an endpoint's
// IPv6 address) and ICMPv6 go to gVisor, whose NIC runs the ipv6
// protocol beside ipv4 with spoofing and promiscuous mode on.

import (
	"encoding/binary"
	"errors"

	"gvisor.dev/gvisor/pkg/tcpip/header"
)

// injectInbound6 is InjectInbound for a packet with version nibble 6 and
// at least a fixed header.
func (st *Stack) injectInbound6(pkt []byte) error {
	if pl := int(binary.BigEndian.Uint16(pkt[4:6])); ipv6HeaderLen+pl > len(pkt) || (pl == 0 && pkt[6] != 59) {
		st.Stats.InboundDropped.Add(1)
		return ErrMalformed
	}
	if st.rt.routed.Load() && st.routeInbound6(pkt) {
		st.countIn(pkt)
		return nil
	}
	st.toNetstack(header.IPv6ProtocolNumber, pkt)
	return nil
}

// routeInbound6 is routeInbound for IPv6: it reports whether pkt was
// consumed (delivered or dropped and counted).
func (st *Stack) routeInbound6(pkt []byte) bool {
	dst := ipv6Dst(pkt)
	if st.assigned(dst) {
		return false
	}
	if !st.Routed(dst) {
		if dst.IsMulticast() || dst.IsLinkLocalUnicast() {
			return false // NDP, MLD: gVisor
		}
		st.Stats.Route.NotRouted.Add(1)
		return true
	}
	d, err := parseUDP6(pkt)
	if errors.Is(err, errNotUDP) {
		return false // TCP to a dialled connection, ICMPv6: gVisor
	}
	return st.routeUDP(pkt, dst, d, err)
}
