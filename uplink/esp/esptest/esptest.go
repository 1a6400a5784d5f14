// Package esptest helps run esp.Transport without sockets: it dresses an
// in-memory datagram pipe (stacktest.Pipe) up as a UDP socket, so that two
// transports (and the IKE, L2TP and PPP stacks above them) can talk over an
// impaired pipe driven by a fake clock.
package esptest

import (
	"net"
	"net/netip"
)

// Conn is one end of an in-memory pipe presented as a UDP socket bound to
// Local whose only peer is Remote: ReadFrom reports Remote, LocalAddr
// reports Local, and WriteTo ignores its address (the pipe has one peer).
type Conn struct {
	net.PacketConn
	local, remote *net.UDPAddr
}

// Wrap presents pc as a UDP socket at local talking to remote.
func Wrap(pc net.PacketConn, local, remote netip.AddrPort) *Conn {
	return &Conn{PacketConn: pc, local: net.UDPAddrFromAddrPort(local), remote: net.UDPAddrFromAddrPort(remote)}
}

// ReadFrom reads a datagram and reports it as coming from the remote end.
func (c *Conn) ReadFrom(b []byte) (int, net.Addr, error) {
	n, _, err := c.PacketConn.ReadFrom(b)
	if err != nil {
		return n, nil, err
	}
	return n, c.remote, nil
}

// LocalAddr returns the UDP address this end pretends to be bound to.
func (c *Conn) LocalAddr() net.Addr { return c.local }
