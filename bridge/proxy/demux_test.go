package proxy

import (
	"context"
	"fmt"
	"net"
	"net/netip"
	"runtime"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/plgd-dev/go-coap/v3/message"
	"github.com/plgd-dev/go-coap/v3/message/codes"
	"github.com/plgd-dev/go-coap/v3/message/pool"
	"github.com/plgd-dev/go-coap/v3/udp/coder"

	"github.com/fleetgate/fleetgate/bridge/spool"
	"github.com/fleetgate/fleetgate/downlink/registry"
	"github.com/fleetgate/fleetgate/ipstack/ipstacktest"
)

// nonGet is a NON GET /x with message ID mid.
func nonGet(t testing.TB, mid uint16) []byte {
	m := pool.NewMessage(context.Background())
	m.SetType(message.NonConfirmable)
	m.SetCode(codes.GET)
	m.SetMessageID(int32(mid))
	m.SetToken([]byte{1, 2})
	if err := m.SetPath("/x"); err != nil {
		t.Fatal(err)
	}
	b, err := m.MarshalWithEncoder(coder.DefaultCoder)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// 10,000 endpoints are added and removed while central sends CoAP to all
// of their addresses: no stack address and no goroutine per endpoint (a
// CoAP spool is configured: idle forwarders hold none)
// (goroutines stay within a small constant of the baseline and return to
// it), and no datagram reaches an endpoint after RemoveEndpoint returned
// (those are refused by the demultiplexer and counted by ipstack).
func TestTenThousandEndpointsChurn(t *testing.T) {
	const n = 10_000
	pair := ipstacktest.NewPair(t, 0)
	if err := pair.B.AddAddress(netip.MustParsePrefix("10.20.0.1/32")); err != nil {
		t.Fatal(err)
	}
	reg, err := registry.Open("", netip.MustParsePrefix("10.10.0.0/16"))
	if err != nil {
		t.Fatal(err)
	}
	// With a CoAP spool, as the daemon runs: the forwarder of an endpoint
	// with nothing spooled must not cost a goroutine either.
	sp, err := spool.Open(spool.Config{Dir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	defer sp.Close()
	px, err := New(Config{Stack: pair.A, Registry: reg, QueueLen: 1, Spool: sp, Central: netip.MustParseAddrPort("10.20.0.1:5683")})
	if err != nil {
		t.Fatal(err)
	}
	defer px.Close()
	eps := make([]registry.Endpoint, n)
	removed := make([]atomic.Bool, n)
	for i := range eps {
		eps[i] = registry.Endpoint{Name: fmt.Sprintf("s%d", i), Protocol: registry.CoAP,
			Addr: netip.AddrFrom4([4]byte{10, 10, byte((i + 2) >> 8), byte(i + 2)})}
	}
	var late, delivered atomic.Uint64
	// Wrap the demultiplexer: a datagram for an address whose
	// RemoveEndpoint had returned before the datagram was demultiplexed
	// must be refused.
	pair.A.HandleUDP(coapPort, func(src, dst netip.AddrPort, payload []byte) bool {
		a := dst.Addr().As4()
		i := int(a[2])<<8 | int(a[3]) - 2
		gone := i >= 0 && i < n && removed[i].Load()
		ok := px.demux(src, dst, payload)
		if ok && gone {
			late.Add(1)
		}
		if ok {
			delivered.Add(1)
		}
		return ok
	})
	base := runtime.NumGoroutine()

	pc, err := pair.B.ListenUDP(netip.MustParseAddrPort("10.20.0.1:40000"))
	if err != nil {
		t.Fatal(err)
	}
	defer pc.Close()
	stop := make(chan struct{})
	var wg sync.WaitGroup
	wg.Add(1)
	go func() { // central: NON GETs round-robin over all addresses
		defer wg.Done()
		for i := 0; ; i++ {
			select {
			case <-stop:
				return
			default:
			}
			k := i % n
			_, _ = pc.WriteTo(nonGet(t, uint16(i)), udpAddr(netip.AddrPortFrom(eps[k].Addr, coapPort)))
			if i%64 == 0 {
				time.Sleep(time.Millisecond) // leave the pair's link room
			}
		}
	}()
	wg.Add(1)
	go func() { // drain answers (5.03 queue full) so B's socket never fills
		defer wg.Done()
		buf := make([]byte, 2048)
		for {
			if _, _, err := pc.ReadFrom(buf); err != nil {
				return
			}
		}
	}()

	for i := range eps {
		if err := px.AddEndpoint(eps[i]); err != nil {
			t.Fatal(err)
		}
	}
	if got := len(pair.A.Addresses()); got != 0 {
		t.Fatalf("got %d stack addresses with %d endpoints, want 0", got, n)
	}
	if g := runtime.NumGoroutine(); g > base+10 {
		t.Fatalf("got %d goroutines with %d endpoints, baseline %d: want no goroutine per endpoint", g, n, base)
	}
	// Let traffic reach live endpoints, then remove them all under traffic.
	deadline := time.Now().Add(30 * time.Second)
	for delivered.Load() < 100 {
		if time.Now().After(deadline) {
			t.Fatalf("only %d datagrams delivered to live endpoints", delivered.Load())
		}
		time.Sleep(10 * time.Millisecond)
	}
	for i := range eps {
		px.RemoveEndpoint(eps[i])
		removed[i].Store(true)
	}
	refusedBefore := pair.A.Stats.Route.NoEndpoint.Load()
	for pair.A.Stats.Route.NoEndpoint.Load() < refusedBefore+100 {
		if time.Now().After(deadline) {
			t.Fatal("datagrams to removed endpoints not counted as NoEndpoint")
		}
		time.Sleep(10 * time.Millisecond)
	}
	close(stop)
	pc.Close()
	wg.Wait()
	t.Logf("delivered %d, refused %d, ICMP unreachable %d", delivered.Load(), pair.A.Stats.Route.NoEndpoint.Load(), pair.A.Stats.Route.Unreachables.Load())
	if got := late.Load(); got != 0 {
		t.Fatalf("%d datagrams demultiplexed to an endpoint after RemoveEndpoint returned", got)
	}
	px.mu.Lock()
	left := len(px.eps)
	px.mu.Unlock()
	px.dmu.RLock()
	left += len(px.byAddr)
	px.dmu.RUnlock()
	if left != 0 {
		t.Fatalf("%d entries left in the proxy's maps", left)
	}
	for runtime.NumGoroutine() > base {
		if time.Now().After(deadline) {
			t.Fatalf("goroutines: %d, baseline %d", runtime.NumGoroutine(), base)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func udpAddr(ap netip.AddrPort) net.Addr { return net.UDPAddrFromAddrPort(ap) }

// FuzzDemux feeds the demultiplexer datagrams for any host of the site
// prefix: it never panics, and it accepts exactly the datagrams whose
// destination is a CoAP endpoint's address.
func FuzzDemux(f *testing.F) {
	f.Add(uint16(17), nonGet(f, 1))
	f.Add(uint16(18), nonGet(f, 2))
	f.Add(uint16(0), []byte{})
	f.Add(uint16(255), []byte{0x40, 0x01, 0x00})
	r := newRig(f, nil)
	ep, ok := r.reg.ByName("sensor-17")
	if !ok {
		f.Fatal("rig has no sensor-17")
	}
	pfx := r.reg.Prefix().Addr().As4()
	src := netip.MustParseAddrPort("10.20.0.1:40000")
	f.Fuzz(func(t *testing.T, host uint16, b []byte) {
		a := pfx
		a[3] += byte(host)
		dst := netip.AddrPortFrom(netip.AddrFrom4(a), coapPort)
		got := r.px.demux(src, dst, b)
		if want := dst.Addr() == ep.Addr; got != want {
			t.Fatalf("demux(%s) = %v, want %v", dst, got, want)
		}
	})
}
