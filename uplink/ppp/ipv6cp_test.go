package ppp

import (
	"bytes"
	"context"
	"net/netip"
	"testing"
	"time"
)

func assign6(id IfaceID) AddressFunc {
	return func(ctx context.Context, u string) (Assignment, error) {
		a, err := assign(ctx, u)
		a.IPv6, a.IfaceID = true, id
		return a, err
	}
}

// TestIPV6CPOpens: a client with IPv6 and a server whose assignment says
// IPv6 open IPV6CP beside IPCP; each side ends up with its own identifier
// and the peer's (RFC 5072 §4.1), the random ones with the u/l bit clear.
func TestIPV6CPOpens(t *testing.T) {
	p := newMPair(t, Config{IPv6: true}, Config{AssignAddress: assign6(IfaceID{})})
	p.start()
	for i := 0; i < 5 && !(p.cli.info.IPv6 && p.srv.info.IPv6); i++ {
		p.advance(time.Second)
	}
	ci, si := p.cli.info, p.srv.info
	if p.upC != 1 || !ci.IPv6 || !si.IPv6 {
		t.Fatalf("IPCP up %d, IPV6CP client %v server %v (%v/%v)", p.upC, ci.IPv6, si.IPv6, p.cli.ipv6cpF.state, p.srv.ipv6cpF.state)
	}
	if ci.LocalID != si.PeerID || si.LocalID != ci.PeerID || ci.LocalID == si.LocalID || ci.LocalID.IsZero() || si.LocalID.IsZero() {
		t.Fatalf("identifiers: client %v/%v server %v/%v", ci.LocalID, ci.PeerID, si.LocalID, si.PeerID)
	}
	if ci.LocalID[0]&0x02 != 0 || si.LocalID[0]&0x02 != 0 {
		t.Fatalf("random identifiers with the u/l bit set: %v %v", ci.LocalID, si.LocalID)
	}
	if p.cs.IPV6CPUp.Load() != 1 || p.ss.IPV6CPUp.Load() != 1 || p.ss.ProtocolRejectSent.Load() != 0 {
		t.Fatalf("counters: up %d/%d, protocol rejects %d", p.cs.IPV6CPUp.Load(), p.ss.IPV6CPUp.Load(), p.ss.ProtocolRejectSent.Load())
	}
	if ll := ci.LocalID.LinkLocal(); !ll.IsLinkLocalUnicast() {
		t.Fatalf("link-local %v", ll)
	}
	t.Logf("client fe80::%v, gateway fe80::%v", ci.LocalID, si.LocalID)
}

// TestIPV6CPNakZeroAndClash: a client proposing identifier zero is told
// the server's suggestion for it; one proposing the server's own
// identifier is Nak'ed with another; both adopt what they were told.
func TestIPV6CPNakZeroAndClash(t *testing.T) {
	srvID := IfaceID{0, 0, 0, 0, 0, 0, 0, 1}
	want := IfaceID{0, 0, 0, 0, 0x0a, 0x0a, 0x08, 0x11}
	for name, cliID := range map[string]IfaceID{"zero": {}, "clash": srvID} {
		t.Run(name, func(t *testing.T) {
			p := newMPair(t, Config{IPv6: true}, Config{IPv6: true, IfaceID: srvID, AssignAddress: assign6(want)})
			p.cli.ipv6cpH.local = cliID // as if configured so (zero: "suggest one")
			p.start()
			for i := 0; i < 5 && !(p.cli.info.IPv6 && p.srv.info.IPv6); i++ {
				p.advance(time.Second)
			}
			if !p.cli.info.IPv6 || p.cli.info.LocalID != want || p.srv.info.PeerID != want || p.srv.info.LocalID != srvID {
				t.Fatalf("client %+v server %+v", p.cli.info, p.srv.info)
			}
		})
	}
}

// TestIPV6CPNotOffered: a server whose assignment has no IPv6
// Protocol-Rejects the client's IPV6CP (and any IPv6 packet); the client
// counts the rejection, stops asking and keeps the link up for IPv4.
func TestIPV6CPNotOffered(t *testing.T) {
	p := newMPair(t, Config{IPv6: true}, Config{})
	p.start()
	for i := 0; i < 3; i++ {
		p.advance(time.Second)
	}
	if p.upC != 1 || len(p.downC) != 0 || p.cli.info.IPv6 {
		t.Fatalf("IPCP up %d down %v IPv6 %v", p.upC, p.downC, p.cli.info.IPv6)
	}
	if p.ss.ProtocolRejectSent.Load() != 1 || p.cs.IPV6CPRejected.Load() != 1 {
		t.Fatalf("protocol rejects sent %d, IPV6CP rejections seen %d", p.ss.ProtocolRejectSent.Load(), p.cs.IPV6CPRejected.Load())
	}
	// No more IPV6CP requests after the rejection (restart timer stopped).
	for i := 0; i < 40; i++ {
		p.advance(DefaultRestart)
	}
	if p.ss.ProtocolRejectSent.Load() != 1 || len(p.downC) != 0 {
		t.Fatalf("after 2 min: %d protocol rejects, down %v", p.ss.ProtocolRejectSent.Load(), p.downC)
	}
}

// TestIPV6CPCodec: the Interface-Identifier option, its helpers and the
// handler's answers to malformed and unknown options.
func TestIPV6CPCodec(t *testing.T) {
	id := IfaceID{0x02, 0x11, 0x22, 0xff, 0xfe, 0x33, 0x44, 0x55}
	if got := id.In(netip.MustParsePrefix("2001:db8:8::/64")); got != netip.MustParseAddr("2001:db8:8:0:211:22ff:fe33:4455") {
		t.Fatalf("In: %v", got)
	}
	if got := id.String(); got != "211:22ff:fe33:4455" {
		t.Fatalf("String: %q", got)
	}
	cfg := Config{Role: Server}
	cfg.setDefaults()
	m := newMachine(&cfg, func([]byte) {}, time.Time{})
	h := m.ipv6cpH
	for _, tt := range []struct {
		name string
		opts []byte
		code byte
		want []byte
	}{
		{"good", []byte{1, 10, 2, 0x11, 0x22, 0xff, 0xfe, 0x33, 0x44, 0x55}, CodeConfAck, nil},
		{"short", []byte{1, 6, 0, 0, 0, 1}, CodeConfRej, []byte{1, 6, 0, 0, 0, 1}},
		{"compression", []byte{2, 4, 0x00, 0x4f}, CodeConfRej, []byte{2, 4, 0x00, 0x4f}},
		{"truncated", []byte{1, 10, 0}, CodeConfRej, []byte{1, 10, 0}},
		{"none", nil, CodeConfAck, nil},
	} {
		code, reply := h.recvReq(tt.opts)
		if code != tt.code {
			t.Errorf("%s: code %d, want %d", tt.name, code, tt.code)
		}
		if tt.code == CodeConfAck && !bytes.Equal(reply, tt.opts) || tt.want != nil && !bytes.Equal(reply, tt.want) {
			t.Errorf("%s: reply %x", tt.name, reply)
		}
	}
	if m.stats.MalformedDropped.Load() != 1 {
		t.Errorf("malformed counted %d, want 1 (the truncated option)", m.stats.MalformedDropped.Load())
	}
}
