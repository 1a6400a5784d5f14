package ppp

import (
	"encoding/binary"
	"errors"
	"io"
	"slices"
)

// lcp is the LCP option handler (RFC 1661 §6), plugged into the automaton.
type lcp struct {
	m *machine
	// our request
	mru        int
	sendMRU    bool
	magic      uint32
	sendMagic  bool
	authIdx    int        // server: index into cfg.Methods of the method we ask for
	tried      []bool     // server: methods the peer refused
	method     AuthMethod // negotiated (server: ours; client: the peer's request)
	peerMRU    int
	peerMagic  uint32
	clientNaks int
	// refusedAuth: client: the peer asked for a method not in
	// cfg.Methods (counted and logged once per link).
	refusedAuth bool
}

func (l *lcp) init() {
	l.mru = l.m.cfg.MRU
	l.sendMRU = l.mru != defaultPeerMRU
	l.magic = l.m.randUint32()
	l.sendMagic = true
	l.peerMRU = defaultPeerMRU
	l.tried = make([]bool, len(l.m.cfg.Methods))
}

func (l *lcp) reqOptions() []byte {
	var b []byte
	if l.sendMRU {
		b = AppendOption(b, lcpOptMRU, binary.BigEndian.AppendUint16(nil, uint16(l.mru)))
	}
	if l.m.cfg.Role == Server && l.authIdx < len(l.m.cfg.Methods) {
		b = AppendOption(b, lcpOptAuth, l.m.cfg.Methods[l.authIdx].authOption())
	}
	if l.sendMagic {
		b = AppendOption(b, lcpOptMagic, binary.BigEndian.AppendUint32(nil, l.magic))
	}
	return b
}

// recvReq judges the peer's options: Reject wins over Nak wins over Ack
// (RFC 1661 §5.3, §5.4).
func (l *lcp) recvReq(opts []byte) (byte, []byte) {
	var ack, nak, rej []byte
	method := AuthNone
	peerMRU := defaultPeerMRU
	err := ForEachOption(opts, func(o Option) error {
		raw := AppendOption(nil, o.Type, o.Data)
		switch o.Type {
		case lcpOptMRU:
			if len(o.Data) != 2 {
				rej = append(rej, raw...)
				return nil
			}
			v := int(binary.BigEndian.Uint16(o.Data))
			if v < minMRU {
				nak = AppendOption(nak, lcpOptMRU, binary.BigEndian.AppendUint16(nil, minMRU))
				return nil
			}
			peerMRU = v
		case lcpOptACCM:
			// Meaningless on synchronous L2TP framing, harmless to accept.
			if len(o.Data) != 4 {
				rej = append(rej, raw...)
				return nil
			}
		case lcpOptAuth:
			if l.m.cfg.Role == Server {
				rej = append(rej, raw...) // we do not authenticate to our clients
				return nil
			}
			mm, ok := parseAuthOption(o.Data)
			if ok && slices.Contains(l.m.cfg.Methods, mm) {
				method = mm
				return nil
			}
			l.clientNaks++
			if !l.refusedAuth {
				// Once per link: the Nak names the method we allow, no
				// credentials leave until the peer agrees to it.
				l.refusedAuth = true
				l.m.stats.AuthMethodRefused.Add(1)
				l.m.log.Warn("peer asked for an authentication method we do not allow; refused, no credentials sent",
					"asked", describeAuthOption(o.Data), "allowed", l.m.cfg.Methods)
			}
			nak = AppendOption(nak, lcpOptAuth, l.m.cfg.Methods[0].authOption())
			return nil
		case lcpOptMagic:
			if len(o.Data) != 4 {
				rej = append(rej, raw...)
				return nil
			}
			v := binary.BigEndian.Uint32(o.Data)
			if l.sendMagic && v == l.magic && v != 0 {
				// Loop suspected (§6.4): Nak with another number, and pick
				// a new one ourselves.
				l.m.stats.LoopbackDetected.Add(1)
				l.magic = l.m.randUint32()
				nak = AppendOption(nak, lcpOptMagic, binary.BigEndian.AppendUint32(nil, l.m.randUint32()))
				return nil
			}
			l.peerMagic = v
		default:
			// Quality, PFC, ACFC and anything unknown: not for L2TP.
			rej = append(rej, raw...)
			return nil
		}
		ack = append(ack, raw...)
		return nil
	})
	if code, reply, refused := l.m.refuse(err, opts, rej, nak); refused {
		return code, reply
	}
	if l.m.cfg.Role == Client {
		l.method = method
	}
	l.peerMRU = peerMRU
	return CodeConfAck, opts
}

func (l *lcp) recvAck(opts []byte) bool {
	return string(opts) == string(l.m.lcpF.reqOpts)
}

func (l *lcp) recvNak(opts []byte) error {
	return ForEachOption(opts, func(o Option) error {
		switch o.Type {
		case lcpOptMRU:
			if len(o.Data) == 2 {
				if v := int(binary.BigEndian.Uint16(o.Data)); v >= minMRU && v <= l.m.cfg.MRU {
					l.mru = v
				}
			}
		case lcpOptMagic:
			l.magic = l.m.randUint32()
		case lcpOptAuth:
			if l.m.cfg.Role != Server {
				return nil
			}
			l.tried[l.authIdx] = true
			// Take the peer's suggestion if we offer it; otherwise our next
			// untried method (peers such as SoftEther may ignore our order).
			if mm, ok := parseAuthOption(o.Data); ok {
				if i := slices.Index(l.m.cfg.Methods, mm); i >= 0 && !l.tried[i] {
					l.authIdx = i
					return nil
				}
			}
			for i := range l.m.cfg.Methods {
				if !l.tried[i] {
					l.authIdx = i
					return nil
				}
			}
			return ErrAuthRejected
		}
		return nil
	})
}

func (l *lcp) recvRej(opts []byte) error {
	return ForEachOption(opts, func(o Option) error {
		switch o.Type {
		case lcpOptMRU:
			l.sendMRU = false
			l.mru = defaultPeerMRU
		case lcpOptMagic:
			l.sendMagic = false
		case lcpOptAuth:
			if l.m.cfg.Role == Server {
				return ErrAuthRejected
			}
		}
		return nil
	})
}

func (l *lcp) up() {
	if l.m.cfg.Role == Server {
		l.method = l.m.cfg.Methods[l.authIdx]
	}
	l.m.lcpUp()
}

func (l *lcp) down()    { l.m.lcpDown() }
func (l *lcp) started() {}
func (l *lcp) finished() {
	l.m.lcpFinished()
}

// extCode handles the LCP-only codes (RFC 1661 §5.7-§5.9).
func (l *lcp) extCode(p Packet) bool {
	switch p.Code {
	case CodeProtoRej:
		if len(p.Data) >= 2 {
			proto := binary.BigEndian.Uint16(p.Data)
			switch proto {
			case ProtoIPCP:
				l.m.fail(errors.New("ppp: peer rejected IPCP"))
			case ProtoIPV6CP:
				l.m.ipv6cpRejected()
			}
		}
		return true
	case CodeEchoReq:
		if l.m.lcpF.state == StateOpened {
			d := binary.BigEndian.AppendUint32(nil, l.ourMagic())
			if len(p.Data) > 4 {
				d = append(d, p.Data[4:]...)
			}
			l.m.sendPacket(ProtoLCP, Packet{Code: CodeEchoReply, ID: p.ID, Data: d})
		}
		return true
	case CodeEchoReply:
		l.m.echoOutstanding = 0
		if l.m.probing { // answered: back to the idle keepalive
			l.m.probing = false
			l.m.echoAt = l.m.now.Add(l.m.cfg.EchoInterval)
		}
		return true
	case CodeDiscard, CodeIdent, CodeTimeRem:
		return true
	}
	return false
}

func (l *lcp) ourMagic() uint32 {
	if l.sendMagic {
		return l.magic
	}
	return 0
}

func (m *machine) randUint32() uint32 {
	var b [4]byte
	if _, err := io.ReadFull(m.cfg.Rand, b[:]); err != nil {
		return 0x5a5a5a5a
	}
	v := binary.BigEndian.Uint32(b[:])
	if v == 0 {
		v = 1
	}
	return v
}
