package esp

import (
	"errors"
	"net"
	"net/netip"
)

// errAddrType means a PacketConn reported an address that is not a UDP
// address:port.
var errAddrType = errors.New("esp: datagram source is not a UDP address")

// sock is one of the transport's datagram sockets. A *net.UDPConn is used
// through its allocation-free AddrPort methods; any other net.PacketConn
// (an in-memory pipe in tests) through ReadFrom/WriteTo, as long as its
// addresses are *net.UDPAddr or print as "ip:port".
type sock struct {
	pc  net.PacketConn
	udp *net.UDPConn
}

func newSock(pc net.PacketConn) *sock {
	s := &sock{pc: pc}
	s.udp, _ = pc.(*net.UDPConn)
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
