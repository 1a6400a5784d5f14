package esp

import (
	"errors"
	"net"
	"net/netip"
)

// errAddrType means a PacketConn reported an address that is not a UDP
// address:port.
var errAddrType = errors.New("esp: datagram source is not a UDP address")

// FilteredUDPConn is a net.PacketConn that wraps a *net.UDPConn and drops
// some datagrams on the way in (a gateway's admission check on first IKE
// messages). The transport reads the UDP socket itself, in batches, and
// asks Admit about each datagram instead of calling ReadFrom; Close is
// still called on the wrapper.
type FilteredUDPConn interface {
	net.PacketConn
	// UDPConn returns the wrapped socket.
	UDPConn() *net.UDPConn
	// Admit reports whether datagram b from from is passed on; it must
	// not keep b.
	Admit(b []byte, from netip.AddrPort) bool
}

// sock is one of the transport's datagram sockets. A *net.UDPConn is used
// through its allocation-free AddrPort methods, on Linux with recvmmsg and
// sendmmsg (batch); any other net.PacketConn (an in-memory pipe in tests)
// through ReadFrom/WriteTo, as long as its addresses are *net.UDPAddr or
// print as "ip:port".
type sock struct {
	pc    net.PacketConn
	udp   *net.UDPConn
	admit func(b []byte, from netip.AddrPort) bool // FilteredUDPConn
	batch *batchConn                               // nil: one datagram per call
	out   *sender                                  // with batch: coalesces ESP writes
}

func newSock(pc net.PacketConn) *sock {
	s := &sock{pc: pc}
	if f, ok := pc.(FilteredUDPConn); ok && f.UDPConn() != nil {
		s.udp, s.admit = f.UDPConn(), f.Admit
	} else {
		s.udp, _ = pc.(*net.UDPConn)
	}
	return s
}

func (s *sock) readFrom(b []byte) (int, netip.AddrPort, error) {
	if s.udp != nil {
		n, ap, err := s.udp.ReadFromUDPAddrPort(b)
		return n, netip.AddrPortFrom(ap.Addr().Unmap(), ap.Port()), err
	}
	n, a, err := s.pc.ReadFrom(b)
	if err != nil {
		return n, netip.AddrPort{}, err
	}
	ap, ok := toAddrPort(a)
	if !ok {
		return n, netip.AddrPort{}, errAddrType
	}
	return n, ap, nil
}

func (s *sock) writeTo(b []byte, to netip.AddrPort) (int, error) {
	if s.udp != nil {
		return s.udp.WriteToUDPAddrPort(b, to)
	}
	return s.pc.WriteTo(b, net.UDPAddrFromAddrPort(to))
}

func (s *sock) addrPort() netip.AddrPort {
	ap, _ := toAddrPort(s.pc.LocalAddr())
	return ap
}

// toAddrPort converts a datagram address, unmapping IPv4-in-IPv6.
func toAddrPort(a net.Addr) (netip.AddrPort, bool) {
	var ap netip.AddrPort
	switch v := a.(type) {
	case *net.UDPAddr:
		ap = v.AddrPort()
	case nil:
		return ap, false
	default:
		var err error
		if ap, err = netip.ParseAddrPort(a.String()); err != nil {
			return ap, false
		}
	}
	return netip.AddrPortFrom(ap.Addr().Unmap(), ap.Port()), ap.IsValid()
}
