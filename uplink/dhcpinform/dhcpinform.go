// Package dhcpinform answers DHCPINFORM (RFC 2131 §3.4) sent by stock L2TP
// clients over their PPP link with a DHCPACK carrying the classless static
// routes (RFC 3442 option 121, and Microsoft's identical option 249), so
// split tunnelling is configured centrally: Windows sends a DHCPINFORM
// after IPCP and installs the routes it gets back.
//
// Everything here is a pure function over packets: the gateway's PPP IP
// path calls Respond for packets addressed to UDP port 67 and sends the
// returned packet back down the same session.
package dhcpinform

import (
	"encoding/binary"
	"errors"
	"net/netip"

	"gvisor.dev/gvisor/pkg/tcpip"
	"gvisor.dev/gvisor/pkg/tcpip/checksum"
	"gvisor.dev/gvisor/pkg/tcpip/header"
)

// Ports and constants (RFC 2131 §4.1, RFC 2132, RFC 3442).
const (
	ServerPort = 67
	ClientPort = 68

	bootpLen     = 236 // fixed BOOTP header before the magic cookie
	minReplySize = 300 // BOOTP minimum message size (RFC 951), some clients insist
	magicCookie  = 0x63825363

	opRequest = 1
	opReply   = 2

	optPad              = 0
	optSubnetMask       = 1
	optDNS              = 6
	optDomainName       = 15
	optMessageType      = 53
	optServerID         = 54
	optParamRequest     = 55
	optClasslessRoutes  = 121 // RFC 3442
	optMSClasslessRoute = 249 // Microsoft, same encoding as 121
	optEnd              = 255

	msgInform = 8
	msgAck    = 5
)

// Errors from parsing.
var (
	ErrNotDHCP     = errors.New("dhcpinform: not a DHCP request to port 67")
	ErrShort       = errors.New("dhcpinform: truncated BOOTP message")
	ErrMagic       = errors.New("dhcpinform: bad magic cookie")
	ErrOption      = errors.New("dhcpinform: option overruns message")
	ErrNotInform   = errors.New("dhcpinform: not a DHCPINFORM")
	ErrRouteFormat = errors.New("dhcpinform: malformed classless route option")
	ErrTooLarge    = errors.New("dhcpinform: reply options exceed 255 bytes per option")
)

// Inform is a parsed DHCPINFORM. Slices alias the input packet.
type Inform struct {
	Src, Dst     netip.Addr // IP header addresses
	XID          uint32
	Flags        uint16
	CIAddr       netip.Addr
	HType, HLen  uint8
	CHAddr       []byte // 16 bytes
	ParamRequest []byte // option 55, may be nil
}

// Route is one classless static route.
type Route struct {
	Prefix  netip.Prefix
	Gateway netip.Addr
}

// Reply is what the gateway answers.
type Reply struct {
	// ServerID is the gateway's PPP address (option 54 and IP source).
	ServerID netip.Addr
	// Routes become options 121 and 249.
	Routes []Route
	// DNS servers (option 6) and domain (option 15), optional.
	DNS    []netip.Addr
	Domain string
}

// bootp checks pkt is an unfragmented IPv4/UDP datagram from port sport
// to port dport carrying a BOOTP message with operation op and the DHCP
// magic cookie; it returns the IP header and the BOOTP message. notOurs is
// the error for a packet that is not such a datagram at all.
func bootp(pkt []byte, sport, dport uint16, op byte, notOurs error) (header.IPv4, []byte, error) {
	h := header.IPv4(pkt)
	if !validIPv4(pkt) {
		return nil, nil, notOurs
	}
	if h.TransportProtocol() != header.UDPProtocolNumber || h.More() || h.FragmentOffset() != 0 {
		return nil, nil, notOurs
	}
	udp := h.Payload()
	if len(udp) < 8 || binary.BigEndian.Uint16(udp[2:]) != dport || (sport != 0 && binary.BigEndian.Uint16(udp[0:]) != sport) {
		return nil, nil, notOurs
	}
	ulen := int(binary.BigEndian.Uint16(udp[4:]))
	if ulen < 8 || ulen > len(udp) {
		return nil, nil, ErrShort
	}
	m := udp[8:ulen]
	if len(m) < bootpLen+4 {
		return nil, nil, ErrShort
	}
	if m[0] != op {
		return nil, nil, notOurs
	}
	if binary.BigEndian.Uint32(m[bootpLen:]) != magicCookie {
		return nil, nil, ErrMagic
	}
	return h, m, nil
}

// Parse validates and parses an IPv4/UDP DHCPINFORM (any source port:
// relays and some stacks do not use 68).
func Parse(pkt []byte) (*Inform, error) {
	h, m, err := bootp(pkt, 0, ServerPort, opRequest, ErrNotDHCP)
	if err != nil {
		return nil, err
	}
	in := &Inform{
		Src: addr4(h.SourceAddressSlice()), Dst: addr4(h.DestinationAddressSlice()),
		HType: m[1], HLen: m[2],
		XID:    binary.BigEndian.Uint32(m[4:]),
		Flags:  binary.BigEndian.Uint16(m[10:]),
		CIAddr: netip.AddrFrom4([4]byte(m[12:16])),
		CHAddr: m[28:44],
	}
	msgType := -1
	err = walkOptions(m[bootpLen+4:], func(code byte, val []byte) error {
		switch code {
		case optMessageType:
			if len(val) != 1 {
				return ErrOption
			}
			msgType = int(val[0])
		case optParamRequest:
			in.ParamRequest = val
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	if msgType != msgInform {
		return nil, ErrNotInform
	}
	return in, nil
}

// walkOptions calls fn for each option, validating lengths first.
func walkOptions(b []byte, fn func(code byte, val []byte) error) error {
	for len(b) > 0 {
		code := b[0]
		if code == optPad {
			b = b[1:]
			continue
		}
		if code == optEnd {
			return nil
		}
		if len(b) < 2 {
			return ErrOption
		}
		n := int(b[1])
		if 2+n > len(b) {
			return ErrOption
		}
		if err := fn(code, b[2:2+n]); err != nil {
			return err
		}
		b = b[2+n:]
	}
	return nil // RFC 2131 wants option 255, but tolerate its absence
}

// AppendClasslessRoutes appends the RFC 3442 §3 encoding of routes:
// width, significant destination octets, router.
func AppendClasslessRoutes(b []byte, routes []Route) []byte {
	for _, r := range routes {
		bits := r.Prefix.Bits()
		d := r.Prefix.Masked().Addr().As4()
		g := r.Gateway.As4()
		b = append(b, byte(bits))
		b = append(b, d[:(bits+7)/8]...)
		b = append(b, g[:]...)
	}
	return b
}

// ParseClasslessRoutes decodes an option 121/249 value.
func ParseClasslessRoutes(b []byte) ([]Route, error) {
	var out []Route
	for len(b) > 0 {
		bits := int(b[0])
		if bits > 32 {
			return nil, ErrRouteFormat
		}
		n := (bits + 7) / 8
		if len(b) < 1+n+4 {
			return nil, ErrRouteFormat
		}
		var d [4]byte
		copy(d[:], b[1:1+n])
		p := netip.PrefixFrom(netip.AddrFrom4(d), bits)
		if p.Masked() != p {
			return nil, ErrRouteFormat // bits set beyond the width
		}
		out = append(out, Route{Prefix: p, Gateway: netip.AddrFrom4([4]byte(b[1+n : 5+n]))})
		b = b[5+n:]
	}
	return out, nil
}

// AppendAck appends a complete IPv4/UDP DHCPACK answering in to b.
func AppendAck(b []byte, in *Inform, r Reply) ([]byte, error) {
	dst := in.CIAddr
	if dst.IsUnspecified() || !dst.IsValid() {
		dst = in.Src
	}
	if dst.IsUnspecified() || !dst.IsValid() {
		dst = netip.AddrFrom4([4]byte{255, 255, 255, 255})
	}
	var opts []byte
	opts = append(opts, optMessageType, 1, msgAck)
	sid := r.ServerID.As4()
	opts = append(opts, optServerID, 4)
	opts = append(opts, sid[:]...)
	if len(r.Routes) > 0 {
		rt := AppendClasslessRoutes(nil, r.Routes)
		if len(rt) > 255 {
			return nil, ErrTooLarge
		}
		opts = append(opts, optClasslessRoutes, byte(len(rt)))
		opts = append(opts, rt...)
		opts = append(opts, optMSClasslessRoute, byte(len(rt)))
		opts = append(opts, rt...)
	}
	if len(r.DNS) > 0 {
		if len(r.DNS)*4 > 255 {
			return nil, ErrTooLarge
		}
		opts = append(opts, optDNS, byte(4*len(r.DNS)))
		for _, a := range r.DNS {
			a4 := a.As4()
			opts = append(opts, a4[:]...)
		}
	}
	if r.Domain != "" {
		if len(r.Domain) > 255 {
			return nil, ErrTooLarge
		}
		opts = append(opts, optDomainName, byte(len(r.Domain)))
		opts = append(opts, r.Domain...)
	}
	opts = append(opts, optEnd)
	msgLen := bootpLen + 4 + len(opts)
	if msgLen < minReplySize {
		msgLen = minReplySize
	}
	total := header.IPv4MinimumSize + 8 + msgLen
	start := len(b)
	b = append(b, make([]byte, total)...)
	pkt := b[start:]
	encodeIPv4(pkt, total, 64, r.ServerID, dst)
	udp := pkt[header.IPv4MinimumSize:]
	binary.BigEndian.PutUint16(udp[0:], ServerPort)
	binary.BigEndian.PutUint16(udp[2:], ClientPort)
	binary.BigEndian.PutUint16(udp[4:], uint16(8+msgLen))
	m := udp[8:]
	m[0], m[1], m[2] = opReply, in.HType, in.HLen
	binary.BigEndian.PutUint32(m[4:], in.XID)
	binary.BigEndian.PutUint16(m[10:], in.Flags)
	ci := in.CIAddr.As4()
	copy(m[12:16], ci[:])
	copy(m[28:44], in.CHAddr)
	binary.BigEndian.PutUint32(m[bootpLen:], magicCookie)
	copy(m[bootpLen+4:], opts)
	putUDPChecksum(udp, r.ServerID, dst)
	return b, nil
}

// Respond answers pkt if it is a DHCPINFORM; ok is false (and err nil) for
// anything that is not a DHCP request to port 67, so callers can pass every
// packet addressed to the gateway through it.
func Respond(pkt []byte, r Reply) (reply []byte, ok bool, err error) {
	in, err := Parse(pkt)
	if err != nil {
		if errors.Is(err, ErrNotDHCP) {
			return nil, false, nil
		}
		return nil, false, err
	}
	out, err := AppendAck(nil, in, r)
	if err != nil {
		return nil, false, err
	}
	return out, true, nil
}

// validIPv4 checks version, header length and total length against len(pkt)
// (gVisor's IsValid also requires the total length to equal len(pkt)
// exactly only for its own buffers; a link may pad, so only "fits" here).
func validIPv4(pkt []byte) bool {
	if len(pkt) < header.IPv4MinimumSize || header.IPVersion(pkt) != header.IPv4Version {
		return false
	}
	h := header.IPv4(pkt)
	ihl := int(h.HeaderLength())
	tl := int(h.TotalLength())
	return ihl >= header.IPv4MinimumSize && ihl <= len(pkt) && tl >= ihl && tl <= len(pkt)
}

// encodeIPv4 writes a 20-byte IPv4/UDP header with its checksum into pkt.
func encodeIPv4(pkt []byte, total int, ttl uint8, src, dst netip.Addr) {
	h := header.IPv4(pkt)
	h.Encode(&header.IPv4Fields{TotalLength: uint16(total), TTL: ttl, Protocol: uint8(header.UDPProtocolNumber),
		SrcAddr: tcpip.AddrFrom4(src.As4()), DstAddr: tcpip.AddrFrom4(dst.As4())})
	h.SetChecksum(^h.CalculateChecksum())
}

// putUDPChecksum stores the UDP checksum of udp (header + payload, its
// checksum field zero) over the pseudo-header; a computed 0 is sent as
// 0xffff (RFC 768).
func putUDPChecksum(udp []byte, src, dst netip.Addr) {
	xsum := header.PseudoHeaderChecksum(header.UDPProtocolNumber, tcpip.AddrFrom4(src.As4()), tcpip.AddrFrom4(dst.As4()), uint16(len(udp)))
	cs := ^checksum.Checksum(udp, xsum)
	if cs == 0 {
		cs = 0xffff
	}
	binary.BigEndian.PutUint16(udp[6:], cs)
}

func addr4(b []byte) netip.Addr { return netip.AddrFrom4([4]byte(b)) }
