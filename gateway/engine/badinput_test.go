package engine_test

import (
	"context"
	"encoding/binary"
	"errors"
	"math/rand/v2"
	"net"
	"net/netip"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"gvisor.dev/gvisor/pkg/tcpip/header"

	"github.com/fleetgate/fleetgate/gateway/engine"
	"github.com/fleetgate/fleetgate/gateway/server"
	"github.com/fleetgate/fleetgate/internal/pkttest"
	"github.com/fleetgate/fleetgate/uplink/ike"
	"github.com/fleetgate/fleetgate/uplink/l2tpipsec"
)

// send fires n datagrams made by mk from a socket bound to src.
func send(t *testing.T, src string, to netip.AddrPort, n int, mk func(i int) []byte) {
	t.Helper()
	c, err := net.ListenPacket("udp", src+":0")
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	for i := range n {
		if _, err := c.WriteTo(mk(i), net.UDPAddrFromAddrPort(to)); err != nil {
			t.Fatal(err)
		}
	}
}

// firstMainMode is a well-formed first Main Mode message (responder
// cookie zero, exchange 2, RFC 2409 §5: HDR, SA) with a fresh initiator
// cookie, offering AES-128/SHA-256/PSK/MODP-2048.
func firstMainMode(i int) []byte {
	attr := func(t, v uint16) ike.Attribute { return ike.Attribute{Type: t, Basic: true, Value: uint64(v)} }
	sa := ike.SAPayload{DOI: ike.DOIIPsec, Situation: ike.SituationIdentOnly, Proposals: []ike.Proposal{{
		Num: 1, Protocol: ike.ProtoISAKMP, Transforms: []ike.Transform{{Num: 1, ID: ike.TransformKeyIKE,
			Attrs: []ike.Attribute{attr(1, 7), attr(14, 128), attr(2, 4), attr(3, 1), attr(4, 14)}}},
	}}}
	var h ike.Header
	binary.BigEndian.PutUint64(h.ICookie[:], uint64(i+1)<<8|0x5a)
	h.Exchange = ike.ExchangeIdentityProtection
	return ike.AppendMessage(nil, h, []ike.Payload{{Type: ike.PayloadSA, Body: sa.Append(nil)}})
}

// junkFirstMainMode is 28 bytes that look like the header of a first Main
// Mode (responder cookie zero, exchange 2) and carry nothing: issue 18's
// finding 5.
func junkFirstMainMode(i int) []byte {
	b := make([]byte, 28)
	binary.BigEndian.PutUint64(b, uint64(i+1)<<8|0xa5)
	b[17], b[18] = 0x10, 2
	binary.BigEndian.PutUint32(b[24:], 28)
	return b
}

// TestBadInput: garbage on the IKE, NAT-T and raw L2TP ports is dropped
// and counted and a half-open Main Mode flood from one source is answered
// without charging anyone's pacing, with no panic, while an established session keeps working and a new client
// from another address still gets in.
func TestBadInput(t *testing.T) {
	cfg := parseConfig(t, "  - {name: pump2, ppp: {password: pw2}, policy: sensors}\n"+
		"pacing: {per_source_rate: 1, per_source_burst: 5, global_rate: 1000, global_burst: 1000}\n")
	raw := udpConn(t)
	g := startGateway(t, cfg, engine.Config{RawL2TPConn: raw})
	tn, got := dial(t, g.clientConfig("hall7", "pw7"))
	env := g.srv.Env()
	waitFor(t, "hall7 registered", func() bool { return env.Sessions.Len() == 1 })
	ts := g.eng.Tunnel()
	st := ts.Stats()
	rng := rand.New(rand.NewPCG(1, 2))
	garbage := func(int) []byte {
		b := make([]byte, 1+rng.IntN(600))
		for i := range b {
			b[i] = byte(rng.Uint32())
		}
		return b
	}
	natMarker := func(i int) []byte { return append([]byte{0, 0, 0, 0}, garbage(i)...) }
	fakeESP := func(i int) []byte { b := garbage(i); return append([]byte{0xde, 0xad, 0xbe, 0xef, 0, 0, 0, 1}, b...) }
	l2tpCtl := func(i int) []byte { b := garbage(i); b[0], b[1] = 0xc8, 0x02; return b }
	send(t, "127.0.0.3", ts.IKEAddr(), 500, garbage)
	send(t, "127.0.0.3", ts.NATTAddr(), 300, natMarker)
	send(t, "127.0.0.3", ts.NATTAddr(), 300, fakeESP)
	send(t, "127.0.0.3", g.eng.RawL2TPAddr(), 300, garbage)
	send(t, "127.0.0.3", g.eng.RawL2TPAddr(), 300, l2tpCtl)
	// Half-open flood: 200 first Main Mode messages from one source.
	send(t, "127.0.0.2", ts.IKEAddr(), 200, firstMainMode)

	waitFor(t, "garbage counted", func() bool {
		return st.IKE.Malformed.Load() > 0 && st.Transport.UnknownSPI.Load()+st.Transport.Malformed.Load() > 0 &&
			g.eng.RawL2TPStats().MalformedDropped.Load() > 0
	})
	// Each first message is answered from the half-open table: no DH, and
	// nobody's pacing is charged until a third message proves the address.
	waitFor(t, "flood answered", func() bool { return st.IKE.Received.Load() >= 200 })
	t.Logf("ike malformed %d, unknown SPI %d, transport malformed %d, raw l2tp malformed %d, admission refused %d, IKE datagrams received %d",
		st.IKE.Malformed.Load(), st.Transport.UnknownSPI.Load(), st.Transport.Malformed.Load(),
		g.eng.RawL2TPStats().MalformedDropped.Load(), g.eng.Stats().AdmissionRefused.Load(), st.IKE.Received.Load())
	if n := g.eng.Stats().AdmissionRefused.Load(); n != 0 {
		t.Fatalf("admission refused %d, want 0: first messages are not charged", n)
	}
	if n := g.eng.Stats().AdmissionAdmitted.Load(); n != 1 {
		t.Fatalf("admission admitted %d Main Modes, want 1 (hall7's): first messages reached pacing", n)
	}

	// The established session is unaffected.
	me := tn.LocalAddr()
	if err := tn.WritePacket(pkttest.ICMPEcho(me, central, 9, 9, "pingpong")); err != nil {
		t.Fatal(err)
	}
	await(t, got, "ICMP echo reply after the garbage", func(h header.IPv4) bool {
		return h.TransportProtocol() == header.ICMPv4ProtocolNumber && pkttest.Src(h) == central
	})
	// A new client from another source address still gets in.
	cc := g.clientConfig("pump2", "pw2")
	cc.LocalIKE, cc.LocalNATT = "127.0.0.4:0", "127.0.0.4:0"
	dial(t, cc)
	waitFor(t, "pump2 registered", func() bool { return env.Sessions.Len() == 2 })
	if m := grepLines(g.scrape(t), `phase="admission",reason="paced"`); m != "" {
		t.Fatalf("admission refusals in the metrics: %s", m)
	}
}

// cutConn is a client socket that can be cut: the peer then vanishes
// without Delete or StopCCN.
type cutConn struct {
	net.PacketConn
	cut atomic.Bool
}

func (c *cutConn) WriteTo(b []byte, a net.Addr) (int, error) {
	if c.cut.Load() {
		return len(b), nil
	}
	return c.PacketConn.WriteTo(b, a)
}

func (c *cutConn) ReadFrom(b []byte) (int, net.Addr, error) {
	for {
		n, a, err := c.PacketConn.ReadFrom(b)
		if err != nil || !c.cut.Load() {
			return n, a, err
		}
	}
}

// TestVanishedPeer: a client that disappears without Delete is found dead
// by DPD or by LCP echo (short timers), unregistered and counted under the
// right metric, while another session stays up.
func TestVanishedPeer(t *testing.T) {
	// The short timers come from the YAML (dpd, lcp_echo), as an operator
	// would set them; only IKE retransmission is tuned in the engine.
	tests := []struct {
		name   string
		yaml   string
		ecfg   engine.Config
		metric string
		check  func(*gateway) uint64
	}{
		{"dpd", "dpd: {interval: 500ms, timeout: 2s}\n", engine.Config{IKE: l2tpipsec.IKEOptions{Retransmit: 300 * time.Millisecond, Retries: 2}},
			`fleetgate_dpd_failures_total{identity="hall7"} 1`, func(g *gateway) uint64 { return g.eng.Tunnel().Stats().IKE.DeadPeers.Load() }},
		{"lcp echo", "lcp_echo: {interval: 300ms, failures: 3}\n", engine.Config{},
			`fleetgate_lcp_echo_failures_total{identity="hall7"} 1`, func(g *gateway) uint64 { return g.eng.Tunnel().Stats().PPP.EchoTimeouts.Load() }},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cfg := parseConfig(t, "  - {name: pump2, ppp: {password: pw2}, policy: sensors}\n"+tt.yaml)
			g := startGateway(t, cfg, tt.ecfg)
			env := g.srv.Env()
			ike, natt := &cutConn{PacketConn: udpConn(t)}, &cutConn{PacketConn: udpConn(t)}
			cc := g.clientConfig("hall7", "pw7")
			cc.IKEConn, cc.NATTConn = ike, natt
			cc.DPDInterval = -1
			cc.KeepaliveInterval = -1
			dialNoClose(t, cc)
			// The vanished client is not closed gracefully (its Close would wait
			// for a gateway that forgot it): its sockets go, its timers end it.
			t.Cleanup(func() { ike.PacketConn.Close(); natt.PacketConn.Close() })
			stay, stayGot := dial(t, g.clientConfig("pump2", "pw2"))
			waitFor(t, "both registered", func() bool { return env.Sessions.Len() == 2 })

			cutAt := time.Now()
			ike.cut.Store(true)
			natt.cut.Store(true)
			waitFor(t, "dead peer unregistered", func() bool { return env.Sessions.Len() == 1 && env.Sessions.ByIdentity("hall7") == nil })
			t.Logf("dead peer unregistered after %v", time.Since(cutAt))
			if n := tt.check(g); n != 1 {
				t.Fatalf("detector count: got %d, want 1", n)
			}
			if expo := g.scrape(t); !strings.Contains(expo, tt.metric) {
				t.Fatalf("metrics lack %s:\n%s", tt.metric, grepLines(expo, "failures"))
			}
			if err := stay.WritePacket(pkttest.ICMPEcho(stay.LocalAddr(), central, 3, 3, "pingpong")); err != nil {
				t.Fatal(err)
			}
			await(t, stayGot, "ICMP echo reply on the surviving session", func(h header.IPv4) bool { return h.TransportProtocol() == header.ICMPv4ProtocolNumber })
		})
	}
}

func grepLines(s, sub string) string {
	var out []string
	for _, l := range strings.Split(s, "\n") {
		if strings.Contains(l, sub) {
			out = append(out, l)
		}
	}
	return strings.Join(out, "\n")
}

// TestConfigErrors: what the engine cannot run with is refused with a
// clear error instead of a half-started daemon.
func TestConfigErrors(t *testing.T) {
	busy := udpConn(t)
	t.Cleanup(func() { busy.Close() })
	port := netip.MustParseAddrPort(busy.LocalAddr().String()).Port()
	tests := []struct {
		name    string
		yaml    string
		want    error
		wantMsg string
	}{
		{"IKE port in use", "listen: {address: 127.0.0.1, ike_port: " + itoa(port) + ", natt_port: 14599}\n", engine.ErrListen, "IKE 127.0.0.1:" + itoa(port)},
		{"missing gateway certificate", "pki: {cert: /nonexistent/gw.pem, key: /nonexistent/gw.key}\nlisten: {address: 127.0.0.1, ike_port: 0, natt_port: 0}\n", engine.ErrConfig, "gateway certificate"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cfg := parseConfig(t, tt.yaml)
			eng := engine.New(engine.Config{})
			srv, err := server.New(cfg, server.Options{Engine: eng})
			if err != nil {
				t.Fatal(err)
			}
			err = eng.Run(t.Context(), srv.Env())
			if !errors.Is(err, tt.want) || !strings.Contains(err.Error(), tt.wantMsg) {
				t.Fatalf("got %v, want %v mentioning %q", err, tt.want, tt.wantMsg)
			}
		})
	}
}

func itoa(n uint16) string { return strconv.Itoa(int(n)) }

// TestRawL2TPFromConfig: listen.raw_l2tp turns the raw L2TP listener on at
// the configured address and port; it is off by default.
func TestRawL2TPFromConfig(t *testing.T) {
	g := startGateway(t, parseConfig(t, ""), engine.Config{})
	if a := g.eng.RawL2TPAddr(); a.IsValid() {
		t.Fatalf("raw L2TP listener on %v by default, want off", a)
	}
	c := udpConn(t)
	port := netip.MustParseAddrPort(c.LocalAddr().String()).Port()
	c.Close()
	g2 := startGateway(t, parseConfig(t, "listen: {address: 127.0.0.1, l2tp_port: "+itoa(port)+", raw_l2tp: true}\n"), engine.Config{})
	if got, want := g2.eng.RawL2TPAddr(), netip.AddrPortFrom(netip.MustParseAddr("127.0.0.1"), port); got != want {
		t.Fatalf("raw L2TP listener on %v, want %v", got, want)
	}
}

// TestSetupFailureMetrics: a wrong PSK and a wrong PPP password fail the
// set-up in the right phase, and the gateway's metrics say so.
func TestSetupFailureMetrics(t *testing.T) {
	g := startGateway(t, parseConfig(t, ""), engine.Config{})
	for _, c := range []struct {
		psk, pw string
		phase   l2tpipsec.Phase
	}{{"wrong-psk", "pw7", l2tpipsec.PhaseIKE}, {testPSK, "wrong", l2tpipsec.PhasePPPAuth}} {
		cc := g.clientConfig("hall7", c.pw)
		cc.PSK = []byte(c.psk)
		cc.Retries = 1
		ctx, cancel := context.WithTimeout(t.Context(), 20*time.Second)
		tn, err := l2tpipsec.Dial(ctx, cc)
		cancel()
		if err == nil {
			tn.Close()
			t.Fatalf("dial with psk %q password %q succeeded", c.psk, c.pw)
		}
		if p := l2tpipsec.PhaseOf(err); p != c.phase {
			t.Errorf("client failed in phase %v (%v), want %v", p, err, c.phase)
		}
	}
	for _, want := range []string{`phase="ike_main",reason="auth_failed"`, `phase="ppp_auth",reason="bad_credentials"`} {
		waitFor(t, want, func() bool {
			return strings.Contains(g.scrape(t), want)
		})
	}
}
