package dhcpinform

import (
	"encoding/binary"
	"errors"
	"net/netip"

	"gvisor.dev/gvisor/pkg/tcpip/header"
)

// The client side, used by our own edge uplink (package uplink) to ask the
// gateway for its pushed routes exactly as a Windows client does: a
// DHCPINFORM from the PPP address to 255.255.255.255:67 after IPCP, and the
// classless static routes out of the DHCPACK.

// More parse errors.
var (
	ErrNotReply = errors.New("dhcpinform: not a DHCP reply to port 68")
	ErrNotAck   = errors.New("dhcpinform: not a DHCPACK")
)

// Ack is a parsed DHCPACK. Routes come from option 121, or from option 249
// when 121 is absent (RFC 3442 §3: a client that gets 121 ignores the
// router option; Microsoft's 249 has the same encoding).
type Ack struct {
	Src, Dst netip.Addr // IP header addresses
	XID      uint32
	ServerID netip.Addr // option 54, invalid if absent
	Routes   []Route
	// HaveRoutes tells an ACK without route options (the gateway pushes
	// nothing) from one with an empty list.
	HaveRoutes bool
	DNS        []netip.Addr
	Domain     string
}

// clientParams is what we ask for in option 55: subnet mask, router, DNS,
// domain, classless routes (121 and Microsoft's 249), as Windows does.
var clientParams = []byte{optSubnetMask, 3, optDNS, optDomainName, optClasslessRoutes, optMSClasslessRoute}

// AppendInform appends a complete IPv4/UDP DHCPINFORM from ciaddr (the
// PPP address) to the limited broadcast address, port 68 → 67, with
// transaction id xid. chaddr may be nil (PPP has no hardware address: htype
// 0 would be refused by some servers, so we send htype 1 with a zero MAC,
// like RAS does with its virtual adapter).
func AppendInform(b []byte, ciaddr netip.Addr, xid uint32, chaddr []byte) []byte {
	var opts []byte
	opts = append(opts, optMessageType, 1, msgInform)
	opts = append(opts, optParamRequest, byte(len(clientParams)))
	opts = append(opts, clientParams...)
	opts = append(opts, optEnd)
	msgLen := bootpLen + 4 + len(opts)
	if msgLen < minReplySize {
		msgLen = minReplySize
	}
	dst := netip.AddrFrom4([4]byte{255, 255, 255, 255})
	total := header.IPv4MinimumSize + 8 + msgLen
	start := len(b)
	b = append(b, make([]byte, total)...)
	pkt := b[start:]
	encodeIPv4(pkt, total, 128, ciaddr, dst)
	udp := pkt[header.IPv4MinimumSize:]
	binary.BigEndian.PutUint16(udp[0:], ClientPort)
	binary.BigEndian.PutUint16(udp[2:], ServerPort)
	binary.BigEndian.PutUint16(udp[4:], uint16(8+msgLen))
	m := udp[8:]
	m[0], m[1], m[2] = opRequest, 1, 6 // Ethernet, 6-byte address
	binary.BigEndian.PutUint32(m[4:], xid)
	ci := ciaddr.As4()
	copy(m[12:16], ci[:])
	copy(m[28:34], chaddr)
	binary.BigEndian.PutUint32(m[bootpLen:], magicCookie)
	copy(m[bootpLen+4:], opts)
	putUDPChecksum(udp, ciaddr, dst)
	return b
}

// IsReply reports, cheaply, whether pkt is an unfragmented IPv4/UDP
// datagram from port 67 to port 68: the packets a client hands to
// ParseAck rather than to its IP stack.
func IsReply(pkt []byte) bool {
	h := header.IPv4(pkt)
	if len(pkt) < header.IPv4MinimumSize+8 || pkt[0]>>4 != 4 || h.TransportProtocol() != header.UDPProtocolNumber {
		return false
	}
	ihl := int(pkt[0]&0x0f) * 4
	if ihl < header.IPv4MinimumSize || len(pkt) < ihl+8 || h.More() || h.FragmentOffset() != 0 {
		return false
	}
	udp := pkt[ihl:]
	return binary.BigEndian.Uint16(udp[0:]) == ServerPort && binary.BigEndian.Uint16(udp[2:]) == ClientPort
}

// ParseAck validates and parses an IPv4/UDP DHCPACK. Slices in the result
// are copies: nothing aliases pkt.
func ParseAck(pkt []byte) (*Ack, error) {
	h, m, err := bootp(pkt, ServerPort, ClientPort, opReply, ErrNotReply)
	if err != nil {
		return nil, err
	}
	a := &Ack{Src: addr4(h.SourceAddressSlice()), Dst: addr4(h.DestinationAddressSlice()), XID: binary.BigEndian.Uint32(m[4:])}
	msgType := -1
	var r121, r249 []byte
	var have121, have249 bool
	err = walkOptions(m[bootpLen+4:], func(code byte, val []byte) error {
		switch code {
		case optMessageType:
			if len(val) != 1 {
				return ErrOption
			}
			msgType = int(val[0])
		case optServerID:
			if len(val) != 4 {
				return ErrOption
			}
			a.ServerID = netip.AddrFrom4([4]byte(val))
		case optClasslessRoutes:
			r121, have121 = val, true
		case optMSClasslessRoute:
			r249, have249 = val, true
		case optDNS:
			if len(val)%4 != 0 {
				return ErrOption
			}
			for i := 0; i+4 <= len(val); i += 4 {
				a.DNS = append(a.DNS, netip.AddrFrom4([4]byte(val[i:i+4])))
			}
		case optDomainName:
			a.Domain = string(val)
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	if msgType != msgAck {
		return nil, ErrNotAck
	}
	switch {
	case have121:
		a.Routes, err = ParseClasslessRoutes(r121)
		a.HaveRoutes = true
	case have249:
		a.Routes, err = ParseClasslessRoutes(r249)
		a.HaveRoutes = true
	}
	if err != nil {
		return nil, err
	}
	return a, nil
}
