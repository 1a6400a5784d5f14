package device

import (
	"context"
	"net"
	"sync"
	"testing"
	"time"

	"github.com/plgd-dev/go-coap/v3/message"
	"github.com/plgd-dev/go-coap/v3/options"
	udpclient "github.com/plgd-dev/go-coap/v3/udp/client"

	"github.com/fleetgate/fleetgate/firmware-sim/collector"
	"github.com/fleetgate/fleetgate/firmware-sim/creds"
	"github.com/fleetgate/fleetgate/firmware-sim/senml"
	"github.com/fleetgate/fleetgate/internal/stacktest"
)

// sink is an in-process DTLS/CoAP collector that also captures the
// server-side connection of each device, to send requests back to it.
type sink struct {
	addr  string
	col   *collector.Collector
	mu    sync.Mutex
	conns []*udpclient.Conn
}

func newSink(t *testing.T, set *creds.Set, ca *creds.CA, cid bool) *sink {
	t.Helper()
	cfg := collector.DTLSConfig{Addr: "127.0.0.1:0", Creds: set, CID: cid}
	if ca != nil {
		srv, err := ca.Issue("collector.test", "collector.test", "127.0.0.1")
		if err != nil {
			t.Fatal(err)
		}
		cfg.Cert, cfg.ClientCAs = srv, ca.Pool
	}
	l, err := collector.ListenDTLS(cfg)
	if err != nil {
		t.Fatal(err)
	}
	s := &sink{addr: l.Addr().String(), col: collector.New(collector.Config{})}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		_ = s.col.ServeCoAPDTLS(ctx, l, options.WithOnNewConn(func(cc *udpclient.Conn) {
			s.mu.Lock()
			s.conns = append(s.conns, cc)
			s.mu.Unlock()
		}))
	}()
	t.Cleanup(func() {
		cancel()
		_ = l.Close()
		<-done
	})
	return s
}

func (s *sink) conn(t *testing.T) *udpclient.Conn {
	t.Helper()
	s.mu.Lock()
	defer s.mu.Unlock()
	if len(s.conns) == 0 {
		t.Fatal("no device connection at the sink")
	}
	return s.conns[len(s.conns)-1]
}

// waitFor polls cond (real network: no fake clock possible) up to 10 s.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func runDevice(t *testing.T, cfg Config) *Device {
	t.Helper()
	d, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); _ = d.Run(ctx) }()
	t.Cleanup(func() { cancel(); <-done })
	return d
}

func TestCoAPDeviceVariants(t *testing.T) {
	ca, err := creds.NewCA("test-ca")
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name   string
		kind   creds.Kind
		suite  string
		cid    bool
		format senml.Format
	}{
		{"psk-ccm8-cid-cbor", creds.KindPSK, "ccm8", true, senml.FormatCBOR},
		{"psk-gcm-json", creds.KindPSK, "gcm", false, senml.FormatJSON},
		{"cert-ccm8-cid", creds.KindCert, "ccm8", true, senml.FormatCBOR},
		{"cert-gcm", creds.KindCert, "gcm", false, senml.FormatJSON},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			stacktest.CheckGoroutines(t)
			name := "sensor-" + tt.name
			set, err := creds.Generate("seed", creds.KindPSK, []string{name})
			if err != nil {
				t.Fatal(err)
			}
			e, _ := set.Get(name)
			if tt.kind == creds.KindCert {
				c, err := ca.Issue(name)
				if err != nil {
					t.Fatal(err)
				}
				e = &creds.Entry{Name: name, Kind: creds.KindCert, Identity: name, Cert: c}
			}
			s := newSink(t, set, ca, tt.cid)
			d := runDevice(t, Config{
				Name: name, Protocol: CoAP, Target: s.addr, Path: "/telemetry", Creds: e,
				Suite: tt.suite, CID: tt.cid, Format: tt.format, Interval: 50 * time.Millisecond,
				Confirmable: true, RootCAs: ca.Pool, ServerName: "collector.test",
				AckTimeout: 200 * time.Millisecond,
			})
			waitFor(t, "3 acked messages", func() bool { return d.Stats.Acked.Load() >= 3 })
			got, _ := s.col.Device(name)
			if got.Unique < 3 || got.Gaps != 0 || got.Duplicates != 0 {
				t.Errorf("collector: got %+v, want >= 3 unique, no gaps or duplicates", got)
			}
			if d.Stats.Handshakes.Load() != 1 || d.Stats.Reconnects.Load() != 0 {
				t.Errorf("handshakes %d reconnects %d, want 1 and 0", d.Stats.Handshakes.Load(), d.Stats.Reconnects.Load())
			}
			// Central → device GET over the device's own DTLS session.
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			defer cancel()
			resp, err := s.conn(t).Get(ctx, PathTemp)
			if err != nil {
				t.Fatalf("GET %s: %v", PathTemp, err)
			}
			body, _ := resp.ReadBody()
			cf, _ := resp.ContentFormat()
			p, err := senml.Decode(body, tt.format)
			if err != nil || cf != message.MediaType(tt.format.ContentFormat()) {
				t.Fatalf("GET body %q (cf %d): %v", body, cf, err)
			}
			rs, _ := p.Resolve()
			if rs[0].Name != name+"/temp" || rs[0].Unit != "Cel" {
				t.Errorf("GET: got %+v, want %s/temp in Cel", rs[0], name)
			}
			if d.Stats.Served.Load() < 1 {
				t.Error("served counter not incremented")
			}
		})
	}
}

func TestCoAPObserve(t *testing.T) {
	stacktest.CheckGoroutines(t)
	name := "sensor-obs"
	set, _ := creds.Generate("seed", creds.KindPSK, []string{name})
	e, _ := set.Get(name)
	s := newSink(t, set, nil, true)
	d := runDevice(t, Config{Name: name, Protocol: CoAP, Target: s.addr, Path: "/telemetry", Creds: e,
		CID: true, Format: senml.FormatJSON, Interval: 50 * time.Millisecond, Confirmable: true})
	waitFor(t, "first ack", func() bool { return d.Stats.Acked.Load() >= 1 })
	got := make(chan uint32, 16)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	obs, err := s.conn(t).Observe(ctx, PathHumidity, func(m *pool_Message) {
		if o, err := m.Observe(); err == nil {
			select {
			case got <- o:
			default:
			}
		}
	})
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = obs.Cancel(ctx) }()
	var seqs []uint32
	for len(seqs) < 3 {
		select {
		case o := <-got:
			seqs = append(seqs, o)
		case <-ctx.Done():
			t.Fatalf("got %d notifications, want 3", len(seqs))
		}
	}
	if !(seqs[0] < seqs[1] && seqs[1] < seqs[2]) {
		t.Errorf("observe numbers not increasing: %v", seqs)
	}
	// The counter is bumped after the write returns, possibly after the
	// observer got the message: wait for it.
	waitFor(t, "notifications counter >= 2", func() bool { return d.Stats.Notifications.Load() >= 2 })
}

func TestFaultConnRebindKeepsReading(t *testing.T) {
	fc, err := ListenFault(net.IPv4(127, 0, 0, 1), 0, 1, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer fc.Close()
	peer, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	defer peer.Close()
	old := fc.LocalAddr().String()
	got := make(chan string, 1)
	go func() {
		buf := make([]byte, 64)
		n, _, err := fc.ReadFrom(buf)
		if err != nil {
			got <- "err: " + err.Error()
			return
		}
		got <- string(buf[:n])
	}()
	if err := fc.Rebind(); err != nil {
		t.Fatal(err)
	}
	if fc.LocalAddr().String() == old {
		t.Fatal("rebind kept the same source address")
	}
	if _, err := peer.WriteTo([]byte("after"), fc.LocalAddr()); err != nil {
		t.Fatal(err)
	}
	select {
	case s := <-got:
		if s != "after" {
			t.Errorf("got %q, want %q", s, "after")
		}
	case <-time.After(5 * time.Second):
		t.Fatal("read blocked on the old socket")
	}
}

func TestFaultConnLossAndSleep(t *testing.T) {
	var st = new(statsHolder)
	fc, err := ListenFault(net.IPv4(127, 0, 0, 1), 30, 7, &st.s)
	if err != nil {
		t.Fatal(err)
	}
	defer fc.Close()
	to := &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1), Port: 9} // discard
	for i := 0; i < 1000; i++ {
		if _, err := fc.WriteTo([]byte("x"), to); err != nil {
			t.Fatal(err)
		}
	}
	if n := st.s.DroppedOut.Load(); n < 230 || n > 370 {
		t.Errorf("30%% loss dropped %d of 1000", n)
	}
	fc.SetAsleep(true)
	before := st.s.DroppedOut.Load()
	_, _ = fc.WriteTo([]byte("x"), to)
	if st.s.DroppedOut.Load() != before+1 {
		t.Error("asleep radio sent a datagram")
	}
}

func TestBackoff(t *testing.T) {
	b := NewBackoff(100*time.Millisecond, time.Second, newRand(1))
	want := []time.Duration{100, 200, 400, 800, 1000, 1000}
	for i, w := range want {
		w *= time.Millisecond
		got := b.Next()
		if got < w/2 || got > w {
			t.Errorf("attempt %d: got %v, want in [%v, %v]", i, got, w/2, w)
		}
	}
	b.Reset()
	if got := b.Next(); got > 100*time.Millisecond {
		t.Errorf("after reset: got %v, want <= 100ms", got)
	}
}

func TestMQTTPassword(t *testing.T) {
	tests := []struct {
		e        creds.Entry
		user, pw string
	}{
		{creds.Entry{Kind: creds.KindMQTT, Identity: "u", Secret: []byte("pw")}, "u", "pw"},
		{creds.Entry{Kind: creds.KindPSK, Identity: "s", Secret: []byte("3f0a")}, "s", "3f0a"},
		{creds.Entry{Kind: creds.KindPSK, Identity: "s", Secret: []byte{0, 0xff}}, "s", "00ff"},
		{creds.Entry{Kind: creds.KindCert, Identity: "c"}, "c", ""},
	}
	for _, tt := range tests {
		u, p := mqttPassword(&tt.e)
		if u != tt.user || p != tt.pw {
			t.Errorf("%s %q: got %q/%q, want %q/%q", tt.e.Kind, tt.e.Secret, u, p, tt.user, tt.pw)
		}
	}
}
