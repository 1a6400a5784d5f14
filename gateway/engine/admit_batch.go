package engine

import (
	"net"
	"net/netip"

	"github.com/fleetgate/fleetgate/uplink/esp"
)

var _ esp.FilteredUDPConn = (*admitConn)(nil)

// UDPConn and Admit make admitConn an esp.FilteredUDPConn: the ESP
// transport then reads the socket itself with recvmmsg and asks Admit about
// each datagram, instead of one ReadFrom (and one net.UDPAddr) per packet.
// Without a *net.UDPConn underneath, UDPConn returns nil and the transport
// uses ReadFrom.
func (c *admitConn) UDPConn() *net.UDPConn { return c.udp }

// Admit applies the same check as ReadFrom to a datagram read elsewhere.
func (c *admitConn) Admit(b []byte, from netip.AddrPort) bool {
	return c.check(b, from.Addr())
}
