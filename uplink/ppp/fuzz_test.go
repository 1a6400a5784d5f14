package ppp

import (
	"bytes"
	"testing"
	"time"
)

func FuzzParseFrame(f *testing.F) {
	f.Add(h(f, "ff03 c021 0101 000e 0104 0578 0506 03ca 64c0"))
	f.Add(h(f, "c021 0901 0008 0000 0000"))
	f.Add(h(f, "21 4500 0014"))
	f.Add(h(f, "ff03 0021 4500"))
	f.Fuzz(func(t *testing.T, b []byte) {
		proto, info, err := ParseFrame(b)
		if err != nil {
			return
		}
		if proto&1 == 0 || len(info) > len(b) {
			t.Fatalf("proto %#x info %d of %d", proto, len(info), len(b))
		}
		p, err := ParsePacket(info)
		if err != nil {
			return
		}
		out := AppendPacket(nil, proto, p)
		p2, err := ParsePacket(out[4:])
		if err != nil || p2.Code != p.Code || p2.ID != p.ID || !bytes.Equal(p2.Data, p.Data) {
			t.Fatalf("packet round trip: %v", err)
		}
	})
}

// FuzzOptions feeds arbitrary Configure-Request options to the LCP and
// IPCP handlers of both roles: replies must re-parse, and an Ack must echo
// the request exactly (RFC 1661 §5.2).
func FuzzOptions(f *testing.F) {
	f.Add(h(f, "0104 0578 0506 03ca 64c0"))
	f.Add(h(f, "0305 c223 81 0304 c023 0304 c227"))
	f.Add(h(f, "0306 0000 0000 8106 0000 0000 8306 0000 0000"))
	f.Add(h(f, "0206 0000 0000 0702 0802 0400"))
	f.Fuzz(func(t *testing.T, opts []byte) {
		for _, role := range []Role{Client, Server} {
			cfg := Config{Role: role}
			cfg.setDefaults()
			m := newMachine(&cfg, func([]byte) {}, time.Time{})
			m.ipcpH.assign = Assignment{Addr: addr("10.0.0.2")}
			for _, hd := range []optionHandler{m.lcpH, m.ipcpH} {
				code, reply := hd.recvReq(opts)
				if _, err := ParseOptions(reply); err != nil && code != CodeConfRej {
					t.Fatalf("code %d reply %x does not parse: %v", code, reply, err)
				}
				if code == CodeConfAck && !bytes.Equal(reply, opts) {
					t.Fatalf("Ack %x does not echo %x", reply, opts)
				}
				hd.recvNak(opts)
				hd.recvRej(opts)
				if _, err := ParseOptions(hd.reqOptions()); err != nil {
					t.Fatalf("own request does not parse: %v", err)
				}
			}
		}
	})
}

// FuzzAuth feeds arbitrary PAP and CHAP packets to both roles in the
// authentication phase.
func FuzzAuth(f *testing.F) {
	f.Add(uint16(ProtoCHAP), h(f, "0101 0015 10 000102030405060708090a0b0c0d0e0f 6777"))
	f.Add(uint16(ProtoCHAP), h(f, "0201 0016 31"))
	f.Add(uint16(ProtoCHAP), h(f, "0301 002e 533d 3430 3741"))
	f.Add(uint16(ProtoPAP), h(f, "0101 000c 0275 7302 7077"))
	f.Add(uint16(ProtoPAP), h(f, "0201 0004"))
	f.Fuzz(func(t *testing.T, proto uint16, pkt []byte) {
		for _, role := range []Role{Client, Server} {
			for _, meth := range []AuthMethod{AuthPAP, AuthCHAPMD5, AuthMSCHAPv2} {
				cfg := Config{Role: role, Username: "u", Password: "p", Methods: []AuthMethod{meth},
					Authenticator: LocalUsers{"u": "p"}, AssignAddress: assign}
				cfg.setDefaults()
				m := newMachine(&cfg, func([]byte) {}, time.Time{})
				m.lcpF.state = StateOpened
				m.lcpH.method = meth
				m.phase = phaseAuth
				m.challenge = make([]byte, 16)
				m.Input(time.Time{}, AppendPacket(nil, proto, Packet{}))
				if len(pkt) >= 4 {
					m.Input(time.Time{}, append([]byte{0xff, 0x03, byte(proto >> 8), byte(proto)}, pkt...))
				}
			}
		}
	})
}

// FuzzIPV6CP feeds arbitrary IPV6CP options to the handler of both roles
// (replies re-parse, an Ack echoes the request, our own request always
// carries a non-zero 8-byte identifier or nothing) and arbitrary IPV6CP
// and IPv6 frames to machines in the network phase, with IPV6CP offered
// and not offered: never a panic, and not offered means Protocol-Reject.
func FuzzIPV6CP(f *testing.F) {
	f.Add(h(f, "010a 0211 22ff fe33 4455"))
	f.Add(h(f, "010a 0000 0000 0000 0000"))
	f.Add(h(f, "0204 004f 010a 0000 0000 0000 0001"))
	f.Add(h(f, "0106 0000 0001"))
	f.Add(h(f, "0301 000e 010a 0000 0000 0000 0002"))
	f.Fuzz(func(t *testing.T, opts []byte) {
		for _, role := range []Role{Client, Server} {
			for _, offered := range []bool{true, false} {
				cfg := Config{Role: role, IPv6: offered, Authenticator: LocalUsers{"u": "p"}, AssignAddress: assign}
				cfg.setDefaults()
				var sent [][]byte
				m := newMachine(&cfg, func(b []byte) { sent = append(sent, b) }, time.Time{})
				m.ipv6cpH.enabled = offered
				hd := m.ipv6cpH
				code, reply := hd.recvReq(opts)
				if _, err := ParseOptions(reply); err != nil && code != CodeConfRej {
					t.Fatalf("code %d reply %x does not parse: %v", code, reply, err)
				}
				if code == CodeConfAck && !bytes.Equal(reply, opts) {
					t.Fatalf("Ack %x does not echo %x", reply, opts)
				}
				hd.recvNak(opts)
				hd.recvRej(opts)
				if own := hd.reqOptions(); len(own) != 0 && (len(own) != 10 || own[0] != ipv6cpOptIfaceID || IfaceID(own[2:]).IsZero()) {
					t.Fatalf("own request %x", own)
				}
				// Whole frames: as a Configure-Request body, and raw.
				m.lcpF.state = StateOpened
				m.lcpH.peerMRU = DefaultMRU
				m.phase = phaseNetwork
				if offered {
					m.ipv6cpF.Open()
					m.ipv6cpF.Up()
				}
				sent = nil
				m.Input(time.Time{}, AppendPacket(nil, ProtoIPV6CP, Packet{Code: CodeConfReq, ID: 1, Data: opts}))
				if !offered && m.stats.ProtocolRejectSent.Load() != 1 {
					t.Fatalf("IPV6CP not offered: %d Protocol-Rejects", m.stats.ProtocolRejectSent.Load())
				}
				m.Input(time.Time{}, append([]byte{0xff, 0x03, 0x80, 0x57}, opts...))
				m.Input(time.Time{}, append([]byte{0xff, 0x03, 0x00, 0x57}, opts...))
				for _, fr := range sent {
					if _, _, err := ParseFrame(fr); err != nil {
						t.Fatalf("sent frame %x does not parse: %v", fr, err)
					}
				}
			}
		}
	})
}
