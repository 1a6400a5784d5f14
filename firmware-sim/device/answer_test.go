package device

import (
	"context"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	dtlsserver "github.com/plgd-dev/go-coap/v3/dtls/server"
	"github.com/plgd-dev/go-coap/v3/message"
	"github.com/plgd-dev/go-coap/v3/message/codes"
	"github.com/plgd-dev/go-coap/v3/mux"
	"github.com/plgd-dev/go-coap/v3/options"

	"github.com/fleetgate/fleetgate/firmware-sim/collector"
	"github.com/fleetgate/fleetgate/firmware-sim/creds"
)

// TestCoAPZeroTokenAnd503: a device with ZeroToken sends telemetry with a
// zero-length token; a bridge answering 5.03 (uplink down, passthrough)
// makes the device count the message as unavailable, report its Max-Age
// and keep its session (one handshake), since an answer proves the
// session alive.
func TestCoAPZeroTokenAnd503(t *testing.T) {
	name := "sensor-zt"
	set, err := creds.Generate("seed", creds.KindPSK, []string{name})
	if err != nil {
		t.Fatal(err)
	}
	e, _ := set.Get(name)
	l, err := collector.ListenDTLS(collector.DTLSConfig{Addr: "127.0.0.1:0", Creds: set})
	if err != nil {
		t.Fatal(err)
	}
	var n atomic.Int64
	var mu sync.Mutex
	var tokens []int
	h := mux.HandlerFunc(func(w mux.ResponseWriter, r *mux.Message) {
		mu.Lock()
		tokens = append(tokens, len(r.Token()))
		mu.Unlock()
		if n.Add(1) <= 4 {
			_ = w.SetResponse(codes.ServiceUnavailable, message.TextPlain, nil, message.Option{ID: message.MaxAge, Value: []byte{3}})
			return
		}
		_ = w.SetResponse(codes.Changed, message.TextPlain, nil)
	})
	ctx, cancel := context.WithCancel(context.Background())
	srv := dtlsserver.New(options.WithMux(h), options.WithContext(ctx))
	done := make(chan struct{})
	go func() { defer close(done); _ = srv.Serve(l) }()
	t.Cleanup(func() { cancel(); srv.Stop(); _ = l.Close(); <-done })

	var unavailable []uint64
	var maxAge time.Duration
	d := runDevice(t, Config{
		Name: name, Protocol: CoAP, Target: l.Addr().String(), Path: "/telemetry", Creds: e,
		Interval: 30 * time.Millisecond, Confirmable: true, ZeroToken: true, AckTimeout: 200 * time.Millisecond,
		OnUnavailable: func(seq uint64, age time.Duration) {
			mu.Lock()
			unavailable, maxAge = append(unavailable, seq), age
			mu.Unlock()
		},
	})
	waitFor(t, "3 acked after 4 refused", func() bool { return d.Stats.Acked.Load() >= 3 })
	mu.Lock()
	defer mu.Unlock()
	if len(unavailable) != 4 || unavailable[0] != 1 || unavailable[3] != 4 || maxAge != 3*time.Second {
		t.Errorf("unavailable seqs %v, Max-Age %v; want 1..4 and 3s", unavailable, maxAge)
	}
	if d.Stats.Unavailable.Load() != 4 || d.Stats.Handshakes.Load() != 1 || d.Stats.Reconnects.Load() != 0 {
		t.Errorf("unavailable %d handshakes %d reconnects %d; want 4, 1, 0", d.Stats.Unavailable.Load(), d.Stats.Handshakes.Load(), d.Stats.Reconnects.Load())
	}
	for i, l := range tokens {
		if l != 0 {
			t.Fatalf("request %d carried a %d-byte token, want zero-length", i, l)
		}
	}
}
