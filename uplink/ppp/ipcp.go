package ppp

import "net/netip"

// ipcp is the IPCP option handler (RFC 1332, RFC 1877).
type ipcp struct {
	m *machine
	// our request
	local    netip.Addr
	sendAddr bool
	dns      [2]netip.Addr
	sendDNS  [2]bool
	// what the peer ends up with
	peer netip.Addr
	// server: the assignment to enforce
	assign Assignment
}

var zero4 = netip.AddrFrom4([4]byte{})

func addrOpt(b []byte, t byte, a netip.Addr) []byte {
	if !a.Is4() {
		a = zero4
	}
	v := a.As4()
	return AppendOption(b, t, v[:])
}

func optAddr(d []byte) (netip.Addr, bool) {
	if len(d) != 4 {
		return netip.Addr{}, false
	}
	return netip.AddrFrom4([4]byte(d)), true
}

func (p *ipcp) init() {
	p.local = p.m.cfg.LocalAddr
	if p.m.cfg.Role == Client {
		p.sendAddr = true
		if !p.local.Is4() {
			p.local = zero4
		}
		p.sendDNS = [2]bool{!p.m.cfg.NoDNS, !p.m.cfg.NoDNS}
		p.dns = [2]netip.Addr{zero4, zero4}
	} else {
		p.sendAddr = p.local.Is4() && !p.local.IsUnspecified()
	}
}

func (p *ipcp) reqOptions() []byte {
	var b []byte
	if p.sendAddr {
		b = addrOpt(b, ipcpOptAddr, p.local)
	}
	if p.sendDNS[0] {
		b = addrOpt(b, ipcpOptDNS1, p.dns[0])
	}
	if p.sendDNS[1] {
		b = addrOpt(b, ipcpOptDNS2, p.dns[1])
	}
	return b
}

func (p *ipcp) recvReq(opts []byte) (byte, []byte) {
	var nak, rej []byte
	server := p.m.cfg.Role == Server
	var peer netip.Addr
	err := ForEachOption(opts, func(o Option) error {
		raw := AppendOption(nil, o.Type, o.Data)
		a, ok := optAddr(o.Data)
		if !ok && (o.Type == ipcpOptAddr || o.Type >= ipcpOptDNS1 && o.Type <= ipcpOptNBNS2) {
			rej = append(rej, raw...)
			return nil
		}
		want := func(w netip.Addr) {
			if !w.IsValid() || w.IsUnspecified() {
				rej = append(rej, raw...)
			} else if a != w {
				nak = addrOpt(nak, o.Type, w)
			}
		}
		switch o.Type {
		case ipcpOptAddr:
			if server {
				want(p.assign.Addr)
			} else if a.IsUnspecified() {
				rej = append(rej, raw...) // we cannot tell the server its address
			}
			peer = a
		case ipcpOptDNS1, ipcpOptDNS2, ipcpOptNBNS1, ipcpOptNBNS2:
			if !server {
				rej = append(rej, raw...)
				return nil
			}
			switch o.Type {
			case ipcpOptDNS1:
				want(p.assign.DNS[0])
			case ipcpOptDNS2:
				want(p.assign.DNS[1])
			case ipcpOptNBNS1:
				want(p.assign.NBNS[0])
			case ipcpOptNBNS2:
				want(p.assign.NBNS[1])
			}
		default:
			// IP-Addresses (deprecated), IP-Compression-Protocol, unknown.
			rej = append(rej, raw...)
		}
		return nil
	})
	if err == nil && server && !peer.IsValid() && len(rej) == 0 && p.assign.Addr.IsValid() {
		// A client that asks for no address still gets one (RFC 1332 §3.3
		// allows the Nak of an option the peer did not send).
		nak = addrOpt(nak, ipcpOptAddr, p.assign.Addr)
	}
	if code, reply, refused := p.m.refuse(err, opts, rej, nak); refused {
		return code, reply
	}
	if peer.IsValid() {
		p.peer = peer
	} else if server {
		p.peer = p.assign.Addr
	}
	return CodeConfAck, opts
}

func (p *ipcp) recvAck(opts []byte) bool { return string(opts) == string(p.m.ipcpF.reqOpts) }

func (p *ipcp) recvNak(opts []byte) error {
	return ForEachOption(opts, func(o Option) error {
		a, ok := optAddr(o.Data)
		if !ok {
			return nil
		}
		switch o.Type {
		case ipcpOptAddr:
			p.local = a
			p.sendAddr = true
		case ipcpOptDNS1:
			p.dns[0], p.sendDNS[0] = a, true
		case ipcpOptDNS2:
			p.dns[1], p.sendDNS[1] = a, true
		}
		return nil
	})
}

func (p *ipcp) recvRej(opts []byte) error {
	return ForEachOption(opts, func(o Option) error {
		switch o.Type {
		case ipcpOptAddr:
			if p.m.cfg.Role == Client {
				return ErrNoAddress
			}
			p.sendAddr = false
		case ipcpOptDNS1:
			p.sendDNS[0], p.dns[0] = false, netip.Addr{}
		case ipcpOptDNS2:
			p.sendDNS[1], p.dns[1] = false, netip.Addr{}
		}
		return nil
	})
}

func (p *ipcp) up()       { p.m.ipcpUp() }
func (p *ipcp) down()     { p.m.ipcpDown() }
func (p *ipcp) started()  {}
func (p *ipcp) finished() { p.m.ipcpFinished() }

func (p *ipcp) extCode(Packet) bool { return false }
