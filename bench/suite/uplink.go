package suite

import (
	"context"
	"encoding/binary"
	"fmt"
	"net"
	"net/netip"
	"slices"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/fleetgate/fleetgate/gateway/config"
	"github.com/fleetgate/fleetgate/gateway/dataplane"
	"github.com/fleetgate/fleetgate/gateway/engine"
	"github.com/fleetgate/fleetgate/gateway/server"
	"github.com/fleetgate/fleetgate/internal/netns"
	"github.com/fleetgate/fleetgate/internal/realpeer"
	"github.com/fleetgate/fleetgate/internal/testenv"
	"github.com/fleetgate/fleetgate/uplink/esp"
	"github.com/fleetgate/fleetgate/uplink/ike"
	"github.com/fleetgate/fleetgate/uplink/l2tpipsec"
	"gvisor.dev/gvisor/pkg/tcpip"
	"gvisor.dev/gvisor/pkg/tcpip/checksum"
	"gvisor.dev/gvisor/pkg/tcpip/header"
)

// benchPSK is the PSK of both servers (SoftEther: at most 9 characters).
const benchPSK = "fgbench26"

// central is the address of the UDP sink in our gateway's userspace stack.
var central = netip.MustParseAddr("10.20.0.10")

const gwYAML = `
psk: {shared: %s}
pool: {prefix: 10.10.0.0/16}
metrics: {listen: "off"}
dataplane: {mode: userspace, addresses: [10.20.0.10/32]}
pacing: {per_source_rate: 100000, per_source_burst: 100000, global_rate: 100000, global_burst: 100000}
# Every client dials from one loopback address: lift the per-source SA cap
# (512 by default) as pacing is lifted, or sessions past 512 are refused.
limits: {ike_sas_per_source: 65536}
policy: {default: allow}
proposals:
  ike: [aes128-sha1-modp2048, aes128-sha256-ecp256, aes256-sha256-modp2048]
  esp: [aes128gcm16, aes128-sha1]
identities:
%s`

// sink counts UDP datagrams and signals each one (for the sender's window).
type sink struct {
	n     atomic.Uint64
	bytes atomic.Uint64
	sig   chan struct{}
}

func newSink() *sink { return &sink{sig: make(chan struct{}, 1)} }

func (s *sink) serve(c net.PacketConn) {
	buf := make([]byte, 65536)
	// The address-free read of *net.UDPConn and ipstack's sockets, where
	// the conn has one (a service that needs no net.Addr uses it).
	read := func() (int, error) { n, _, err := c.ReadFrom(buf); return n, err }
	if ac, ok := c.(interface {
		ReadFromUDPAddrPort([]byte) (int, netip.AddrPort, error)
	}); ok {
		read = func() (int, error) { n, _, err := ac.ReadFromUDPAddrPort(buf); return n, err }
	}
	for {
		n, err := read()
		if err != nil {
			return
		}
		s.count(n)
	}
}

// ourGateway is gateway/server + gateway/engine with the userspace data
// plane; its UDP sink listens on central:9 inside the netstack.
type ourGateway struct {
	srv  *server.Server
	eng  *engine.Engine
	sink *sink
}

// startOurGateway starts our gateway with identities s0..s(n-1) (password
// "pw"), its sockets bound in h (nil: loopback of this namespace).
func startOurGateway(t testing.TB, h *netns.Host, n int) *ourGateway {
	addr := netip.MustParseAddr("127.0.0.1")
	if h != nil {
		addr = h.Addr
	}
	return startOurGatewayAt(t, h, addr, n)
}

// startOurGatewayAt is startOurGateway with its sockets on addr (in h;
// nil: this process's namespace).
func startOurGatewayAt(t testing.TB, h *netns.Host, addr netip.Addr, n int) *ourGateway {
	us, err := dataplane.NewUserspace(dataplane.UserspaceConfig{Addrs: []netip.Prefix{netip.PrefixFrom(central, 32)}, Queue: 4096})
	if err != nil {
		t.Fatal(err)
	}
	g := startGatewayWith(t, h, addr, n, "10.10.0.0/16", us)
	pc, err := us.Stack().ListenUDP(netip.AddrPortFrom(central, 9))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = pc.Close() })
	go g.sink.serve(pc)
	return g
}

// startGatewayWith starts our gateway with identities s0..s(n-1), VPN
// pool pool and data plane host, its sockets on addr (in h; nil: this
// process's namespace).
func startGatewayWith(t testing.TB, h *netns.Host, addr netip.Addr, n int, pool string, host dataplane.Host) *ourGateway {
	ids := ""
	for i := range n {
		ids += fmt.Sprintf("  - {name: s%d, ppp: {password: pw}}\n", i)
	}
	yml := strings.Replace(fmt.Sprintf(gwYAML, benchPSK, ids), "10.10.0.0/16", pool, 1)
	cfg, err := config.Parse("bench.yaml", []byte(yml))
	if err != nil {
		t.Fatal(err)
	}
	listen := func() net.PacketConn {
		var c net.PacketConn
		var err error
		if h == nil {
			c, err = net.ListenPacket("udp4", netip.AddrPortFrom(addr, 0).String())
		} else {
			c, err = h.ListenPacket("udp4", netip.AddrPortFrom(addr, 0).String())
		}
		if err != nil {
			t.Fatal(err)
		}
		return c
	}
	eng := engine.New(engine.Config{IKEConn: listen(), NATTConn: listen(), RatePerSource: 100000, BurstPerSource: 100000, MaxHalfOpen: 20000, Logger: quietLog})
	g := runGateway(t, cfg, eng, host)
	g.sink = newSink()
	return g
}

// runGateway runs gateway/server over eng with host until the test ends
// and waits until the engine is ready.
func runGateway(t testing.TB, cfg *config.Config, eng *engine.Engine, host dataplane.Host) *ourGateway {
	srv, err := server.New(cfg, server.Options{Engine: eng, Host: host, Logger: quietLog})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- srv.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		select {
		case <-done:
		case <-time.After(20 * time.Second):
		}
	})
	select {
	case <-eng.Ready():
	case err := <-done:
		t.Fatalf("gateway stopped: %v", err)
	case <-time.After(10 * time.Second):
		t.Fatal("gateway not ready after 10s")
	}
	return &ourGateway{srv: srv, eng: eng}
}

// clientConfig dials g as identity i from h (nil: loopback).
func (g *ourGateway) clientConfig(t testing.TB, h *netns.Host, i int, ikeProp, espProp string) l2tpipsec.ClientConfig {
	ts := g.eng.Tunnel()
	return clientConfigTo(t, h, ts.IKEAddr(), ts.NATTAddr().Port(), i, ikeProp, espProp)
}

// clientConfigTo dials our gateway at ikeAddr (NAT-T port natt) as
// identity i from h (nil: loopback).
func clientConfigTo(t testing.TB, h *netns.Host, ikeAddr netip.AddrPort, natt uint16, i int, ikeProp, espProp string) l2tpipsec.ClientConfig {
	cc := l2tpipsec.ClientConfig{
		Gateway: ikeAddr.String(), NATTPort: natt,
		PSK:      []byte(benchPSK),
		LocalID:  &ike.Identification{Type: ike.IDFQDN, Data: fmt.Appendf(nil, "s%d.sites.example", i)},
		Username: fmt.Sprintf("s%d", i), Password: "pw",
		IKEOptions: l2tpipsec.IKEOptions{IKEProposals: ikeProp, ESPProposals: espProp, DPDInterval: -1, KeepaliveInterval: -1},
	}
	if h == nil {
		cc.LocalIKE, cc.LocalNATT = "127.0.0.1:0", "127.0.0.1:0"
	} else {
		cc.IKEConn, cc.NATTConn = listenIn(t, h), listenIn(t, h)
	}
	return cc
}

func listenIn(t testing.TB, h *netns.Host) net.PacketConn {
	c, err := h.ListenPacket("udp4", netip.AddrPortFrom(h.Addr, 0).String())
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func dialTunnel(cc l2tpipsec.ClientConfig) (*l2tpipsec.Tunnel, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	tn, err := l2tpipsec.Dial(ctx, cc)
	if err != nil {
		return nil, fmt.Errorf("dial: %w (phase %v)", err, l2tpipsec.PhaseOf(err))
	}
	return tn, nil
}

// udpPacket builds an IPv4/UDP packet of total size n (UDP checksum 0).
func udpPacket(src, dst netip.Addr, dport uint16, n int) []byte {
	b := make([]byte, n)
	b[0], b[8], b[9] = 0x45, 64, 17
	binary.BigEndian.PutUint16(b[2:], uint16(n))
	s, d := src.As4(), dst.As4()
	copy(b[12:], s[:])
	copy(b[16:], d[:])
	binary.BigEndian.PutUint16(b[20:], 40000)
	binary.BigEndian.PutUint16(b[22:], dport)
	binary.BigEndian.PutUint16(b[24:], uint16(n-20))
	ip := header.IPv4(b)
	ip.SetChecksum(^ip.CalculateChecksum())
	putUDPChecksum(src, dst, b[20:])
	return b
}

// putUDPChecksum fills in u's UDP checksum (gVisor's sums), as the kernel
// or lwIP sends it: GRO (the kernel's and the vnet TUN's) coalesces only
// datagrams whose checksum it can verify, and wireguard's TUN GRO takes 0
// ("no checksum") as invalid.
func putUDPChecksum(src, dst netip.Addr, u []byte) {
	uh := header.UDP(u)
	uh.SetChecksum(0)
	x := header.PseudoHeaderChecksum(header.UDPProtocolNumber, tcpip.AddrFromSlice(src.AsSlice()), tcpip.AddrFromSlice(dst.AsSlice()), uint16(len(u)))
	ck := ^checksum.Checksum(u, x)
	if ck == 0 {
		ck = 0xffff
	}
	uh.SetChecksum(ck)
}

// window is the sender's in-flight limit; a stalled window is written off
// after stall (lost packets).
const (
	window = 256
	stall  = 20 * time.Millisecond
)

// load sends pkt with write for d, at most window packets ahead of what
// the sink counted, and returns one sample (packets delivered to the sink).
func load(d time.Duration, size int, s *sink, write func() error, extraCPU func() time.Duration) (Sample, error) {
	return loadN(d, size, s, 1, write, extraCPU)
}

// loadN is load where each write sends per packets at once (a GSO burst);
// the window is at least four bursts.
func loadN(d time.Duration, size int, s *sink, per int, write func() error, extraCPU func() time.Duration) (Sample, error) {
	win := uint64(max(window, 4*per))
	startN := s.n.Load()
	var sent, writtenOff uint64
	cpu0, x0 := cpuTime(), extraCPU()
	t0 := time.Now()
	for time.Since(t0) < d {
		if sent-(s.n.Load()-startN)-writtenOff >= win {
			select {
			case <-s.sig:
			case <-time.After(stall):
				writtenOff = sent - (s.n.Load() - startN)
			}
			continue
		}
		if err := write(); err != nil {
			return Sample{}, err
		}
		sent += uint64(per)
	}
	// Let the tail drain (at most one stall).
	deadline := time.Now().Add(stall * 5)
	for s.n.Load()-startN < sent && time.Now().Before(deadline) {
		select {
		case <-s.sig:
		case <-time.After(stall):
		}
	}
	el := time.Since(t0)
	got := s.n.Load() - startN
	cpu := cpuTime() - cpu0 + extraCPU() - x0
	if got == 0 {
		return Sample{}, fmt.Errorf("nothing arrived (%d sent)", sent)
	}
	return Sample{
		Rate:     float64(got) / el.Seconds(),
		Mbps:     float64(got) * float64(size) * 8 / el.Seconds() / 1e6,
		CPUPerOp: cpu / time.Duration(got),
		Loss:     1 - float64(got)/float64(sent),
	}, nil
}

// l2tpPPPLen is what our client puts between the inner UDP header and the
// IP packet: an L2TP data header (flags, tunnel, session) and PPP
// (address, control, protocol).
const l2tpPPPLen = 6 + 4

// ceiling is the ESP ceiling of one suite: the product's own ESP layer
// (two esp.Transports: the same socket options, recvmmsg, the sender
// goroutine's sendmmsg with UDP GSO, the same batch size, SA seal and
// open with the suite's cipher) carrying a payload of the size the
// product's ESP carries for a size-byte IP packet, from txh to rxh, and
// nothing above it: no L2TP, PPP, IP stack or tunnel. The product with
// that suite does all of this and more, so it cannot be faster: a ratio
// above 1.0 is a bench bug (Report.ceilingRatio).
func ceiling(t testing.TB, size int, suite esp.Suite, rxh, txh *netns.Host) func(d time.Duration) (Sample, error) {
	listen := func(h *netns.Host) net.PacketConn {
		if h == nil {
			c, err := net.ListenPacket("udp4", "127.0.0.1:0")
			if err != nil {
				t.Fatal(err)
			}
			return c
		}
		return listenIn(t, h)
	}
	noIKE := esp.IKEHandlerFunc(func([]byte, netip.AddrPort, netip.AddrPort, bool) {})
	rx, err := esp.NewTransport(esp.TransportConfig{NATTConn: listen(rxh), IKE: noIKE, KeepaliveInterval: -1})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = rx.Close() })
	tx, err := esp.NewTransport(esp.TransportConfig{NATTConn: listen(txh), IKE: noIKE, KeepaliveInterval: -1})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = tx.Close() })
	key := make([]byte, suite.KeymatLen())
	for i := range key {
		key[i] = byte(i + 1)
	}
	peer := espLink(t, tx, rx, suite, key, 0x1000a, 0x1000b)
	s := newSink()
	// Received as the product's tunnels receive L2TP: on the ESP reader
	// goroutine (esp.Transport.SetL2TPHandler), counted there.
	rx.SetL2TPHandler(func(b []byte, _ *esp.Addr) { s.count(len(b)) })
	payload := make([]byte, size+l2tpPPPLen)
	to := peer.Addr(esp.L2TPPort)
	conn := tx.L2TP()
	return func(d time.Duration) (Sample, error) {
		return load(d, size, s, func() error {
			_, err := conn.WriteTo(payload, to)
			return err
		}, zeroCPU)
	}
}

func zeroCPU() time.Duration { return 0 }

// boundName is the forwarding side without the central service's socket.
const boundName = "ours aes128gcm16, central service on the router's goroutine (no socket hand-off)"

// countingHost is a dataplane.Host that counts what the router hands it,
// on the router's goroutine, into a sink.
type countingHost struct {
	s    *sink
	done chan struct{}
	once sync.Once
}

func newCountingHost(s *sink) *countingHost { return &countingHost{s: s, done: make(chan struct{})} }

func (h *countingHost) WritePacket(pkt []byte) error { h.s.count(len(pkt)); return nil }

func (h *countingHost) ReadPacket([]byte) (int, error) { <-h.done; return 0, net.ErrClosed }

func (h *countingHost) MTU() int { return 1500 }

func (h *countingHost) Close() error { h.once.Do(func() { close(h.done) }); return nil }

// ceilingName names the ESP ceiling side of a suite.
func ceilingName(esp string) string { return "ESP ceiling " + esp + " (batched UDP + ESP only)" }

// forwardingSuites are the ESP suites forwarding measures, each against
// its own ceiling.
var forwardingSuites = []struct {
	name  string
	suite esp.Suite
}{
	{"aes128-sha1", esp.Suite{Cipher: esp.CipherAESCBC, KeyBits: 128, Integ: esp.IntegHMACSHA1_96}},
	{"aes128gcm16", esp.Suite{Cipher: esp.CipherAESGCM16, KeyBits: 128}},
}

// benchForwarding is measurement 1: our client through our gateway
// (aes128-sha1 and aes128gcm16) and through SoftEther (aes128-sha1), the
// raw ceiling, all over the same veth pair (edge "a" → gateway "b").
func benchForwarding(o *Options, rep *Report) {
	// 1398 bytes is the largest inner IPv4 packet aes128-sha1 carries in
	// one 1500-byte outer packet (IPv4, NAT-T): the gateway's LCP MRU for
	// that suite (dataplane.EffectiveMTU), so every suite and SoftEther
	// forward the same packets unfragmented. It was 1400 until the MRU
	// followed the suite, which then refused them.
	sizes := []int{1398, 200}
	type side struct {
		name string
		run  map[int]func(time.Duration) (Sample, error)
	}
	_, msg, err := runScoped("forwarding", func(t testing.TB) {
		var sides []*side
		var edge, gwh *netns.Host
		rootOK := true
		if reason := skipReason(func(t testing.TB) { testenv.RequireRoot(t) }); reason != "" {
			rootOK = false
			rep.note("forwarding: veth namespaces and SoftEther skipped: %s; ours runs on loopback", reason)
		} else {
			topo := netns.Pair(t)
			edge, gwh = topo.Host("a"), topo.Host("b")
		}
		// The ceilings cross the same path as the sessions (the veth
		// pair when root, else loopback), one per suite.
		for _, cs := range forwardingSuites {
			c := &side{name: ceilingName(cs.name), run: map[int]func(time.Duration) (Sample, error){}}
			for _, sz := range sizes {
				c.run[sz] = ceiling(t, sz, cs.suite, gwh, edge)
			}
			sides = append(sides, c)
		}
		g := startOurGateway(t, gwh, 4)
		for i, cs := range forwardingSuites {
			esp := cs.name
			tn, err := dialTunnel(g.clientConfig(t, edge, i, "aes128-sha1-modp2048", esp))
			if err != nil {
				t.Fatalf("ours %s: %v", esp, err)
			}
			t.Cleanup(func() { _ = tn.Close() })
			sd := &side{name: "ours " + esp, run: map[int]func(time.Duration) (Sample, error){}}
			for _, sz := range sizes {
				pkt := udpPacket(tn.LocalAddr(), central, 9, sz)
				sd.run[sz] = func(d time.Duration) (Sample, error) {
					return load(d, sz, g.sink, func() error { return tn.WritePacket(pkt) }, zeroCPU)
				}
			}
			sides = append(sides, sd)
		}
		// The bound: our gateway whose host side counts each packet on the
		// router's goroutine, as the ceiling counts on ESP's: ours minus the
		// hand-off to a central service's socket (ipstack's parse and queue,
		// the reader's goroutine and copy). Not a goal; it says how much of
		// the gap to the ceiling that hand-off is.
		{
			addr := netip.MustParseAddr("127.0.0.1")
			if gwh != nil {
				addr = gwh.Addr
			}
			bs := newSink()
			bg := startGatewayWith(t, gwh, addr, 1, "10.10.0.0/16", newCountingHost(bs))
			bg.sink = bs
			tn, err := dialTunnel(bg.clientConfig(t, edge, 0, "aes128-sha1-modp2048", "aes128gcm16"))
			if err != nil {
				t.Fatalf("%s: %v", boundName, err)
			}
			t.Cleanup(func() { _ = tn.Close() })
			sd := &side{name: boundName, run: map[int]func(time.Duration) (Sample, error){}}
			for _, sz := range sizes {
				pkt := udpPacket(tn.LocalAddr(), central, 9, sz)
				sd.run[sz] = func(d time.Duration) (Sample, error) {
					return load(d, sz, bs, func() error { return tn.WritePacket(pkt) }, zeroCPU)
				}
			}
			sides = append(sides, sd)
		}
		if rootOK {
			if sd := softetherForwarding(t, rep, edge, gwh, sizes); sd != nil {
				sides = append(sides, &side{name: "SoftEther aes128-sha1", run: sd})
			}
		}
		for _, sz := range sizes {
			group := fmt.Sprintf("Uplink forwarding, %d-byte IP packets", sz)
			names := make([]string, len(sides))
			runs := make([]func() (Sample, error), len(sides))
			for i, sd := range sides {
				names[i] = sd.name
				f := sd.run[sz]
				runs[i] = func() (Sample, error) { return f(o.Dur) }
			}
			rows := alternate(o.Reps, names, runs)
			for _, cs := range forwardingSuites {
				recheckCeiling(rows, runs, "ours "+cs.name, ceilingName(cs.name))
			}
			rep.add(group, "pkts/s", rows)
			rep.ratio(group, "ours aes128-sha1 / SoftEther aes128-sha1", rows, "ours aes128-sha1", "SoftEther aes128-sha1", 2)
			for _, cs := range forwardingSuites {
				a, b := "ours "+cs.name, ceilingName(cs.name)
				rep.ceilingRatio(group, a+" / its ESP ceiling", rows, a, b, 0.8)
				if rt := computeRatio("", rows, a, b, 0.8, true); !rt.absent && rt.value < rt.goal {
					extraOverCeiling(rep, sz, a, b, names, runs)
				}
			}
			recheckCeiling(rows, runs, boundName, ceilingName("aes128gcm16"))
			rep.ceilingRatio(group, "bound: "+boundName+" / its ESP ceiling", rows, boundName, ceilingName("aes128gcm16"), 0)
			cpuNote(rep, sz, rows, "ours aes128gcm16", ceilingName("aes128gcm16"))
			cpuNote(rep, sz, rows, "ours aes128-sha1", "SoftEther aes128-sha1")
		}
	})
	if err != nil {
		rep.note("forwarding failed: %v", err)
	} else if msg != "" {
		rep.note("forwarding: %s", msg)
	}
}

// extraOverCeiling notes, for a side that missed its goal against its
// ceiling, where its CPU per packet goes beyond the ceiling's (one more
// sample of each under the CPU profiler, by area): the next bottleneck
// by name.
func extraOverCeiling(rep *Report, size int, a, b string, names []string, runs []func() (Sample, error)) {
	costs := map[string]map[string]time.Duration{}
	for _, n := range []string{b, a} {
		i := slices.Index(names, n)
		if i < 0 {
			return
		}
		c, err := areaCosts(runs[i])
		if err != nil {
			rep.note("%d B, %s: no profile: %v", size, n, err)
			return
		}
		costs[n] = c
	}
	rep.note("%d B, %s missed its goal against %s; profiled, one more sample each: %s", size, a, b, describeExtra(costs[a], costs[b]))
}

// cpuNote adds two load-resistant views of a/b to the notes: CPU per
// packet (b's over a's: how many of a's packets b's CPU would forward) and
// the median of the per-round rate ratios (a and b ran in the same round,
// close in time). On a shared machine the ratio of median rates moves with
// whatever else runs; these move less.
func cpuNote(rep *Report, size int, rows []Row, a, b string) {
	ra, rb := pairRows(rows, a, b)
	if ra == nil || rb == nil || ra.Median.CPUPerOp == 0 || len(ra.Samples) != len(rb.Samples) {
		return
	}
	var per []float64
	for i := range ra.Samples {
		if rb.Samples[i].Rate > 0 {
			per = append(per, ra.Samples[i].Rate/rb.Samples[i].Rate)
		}
	}
	sort.Float64s(per)
	med := 0.0
	if len(per) > 0 {
		med = per[len(per)/2]
	}
	rep.note("%d B, %s vs %s: CPU/packet %v vs %v (efficiency %.2f); same-round rate ratios %.2f (median %.2f)",
		size, a, b, ra.Median.CPUPerOp, rb.Median.CPUPerOp,
		float64(rb.Median.CPUPerOp)/float64(ra.Median.CPUPerOp), per, med)
}

// softetherForwarding starts SoftEther in gwh, dials it from edge and
// returns the load functions; a UDP sink in edge is reached through
// SecureNAT (SoftEther's user-mode NAT sends from gwh to edge.Addr).
func softetherForwarding(t testing.TB, rep *Report, edge, gwh *netns.Host, sizes []int) map[int]func(time.Duration) (Sample, error) {
	if reason := skipReason(func(t testing.TB) { testenv.RequireBinary(t, "vpnserver") }); reason != "" {
		rep.note("SoftEther skipped: %s", reason)
		return nil
	}
	se := realpeer.StartSoftEther(t, gwh, realpeer.SoftEtherConfig{PSK: benchPSK, Users: map[string]string{"site1": "pw1"}})
	tn, err := dialTunnel(l2tpipsec.ClientConfig{
		Gateway: netip.AddrPortFrom(gwh.Addr, 500).String(),
		IKEConn: listenIn(t, edge), NATTConn: listenIn(t, edge),
		PSK:        []byte(benchPSK),
		IKEOptions: l2tpipsec.IKEOptions{IKEProposals: "aes128-sha1-modp2048", ESPProposals: "aes128-sha1", DPDInterval: -1},
		Username:   "site1", Password: "pw1",
	})
	if err != nil {
		rep.note("SoftEther forwarding skipped: %v", err)
		return nil
	}
	t.Cleanup(func() { _ = tn.Close() })
	pc, err := edge.ListenPacket("udp4", netip.AddrPortFrom(edge.Addr, 0).String())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = pc.Close() })
	s := newSink()
	go s.serve(pc)
	port := uint16(pc.LocalAddr().(*net.UDPAddr).Port)
	seCPU := func() time.Duration { return treeCPU(se.Proc.PID) }
	out := map[int]func(time.Duration) (Sample, error){}
	for _, sz := range sizes {
		pkt := udpPacket(tn.LocalAddr(), edge.Addr, port, sz)
		out[sz] = func(d time.Duration) (Sample, error) {
			return load(d, sz, s, func() error { return tn.WritePacket(pkt) }, seCPU)
		}
	}
	return out
}
