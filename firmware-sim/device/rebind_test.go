package device

import (
	"context"
	"net"
	"testing"
	"time"

	"github.com/plgd-dev/go-coap/v3/message"

	"github.com/fleetgate/fleetgate/firmware-sim/collector"
	"github.com/fleetgate/fleetgate/firmware-sim/creds"
	"github.com/fleetgate/fleetgate/firmware-sim/senml"
	"github.com/fleetgate/fleetgate/internal/stacktest"
)

// TestNATRebinding moves the device to a new source port mid-session. With
// a DTLS Connection ID the server keeps the session (no new handshake);
// without one the device's exchanges time out and it handshakes again.
func TestNATRebinding(t *testing.T) {
	tests := []struct {
		name          string
		cid           bool
		wantReconnect bool
		// CID: generous CoAP timers, so that a slow (race-detector, shared)
		// machine does not fake a failure; no CID: short ones, failure is
		// expected anyway.
		ackTimeout time.Duration
		maxRetx    uint32
	}{
		{"cid keeps session", true, false, 500 * time.Millisecond, 4},
		{"no cid re-handshakes", false, true, 100 * time.Millisecond, 1},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			stacktest.CheckGoroutines(t)
			name := "sensor-rebind"
			set, _ := creds.Generate("seed", creds.KindPSK, []string{name})
			e, _ := set.Get(name)
			s := newSink(t, set, nil, tt.cid)
			d := runDevice(t, Config{
				Name: name, Protocol: CoAP, Target: s.addr, Path: "/telemetry", Creds: e,
				CID: tt.cid, Format: senml.FormatCBOR, Interval: 50 * time.Millisecond, Confirmable: true,
				RebindEvery: 300 * time.Millisecond, AckTimeout: tt.ackTimeout, MaxRetransmit: tt.maxRetx,
				BackoffMin: 50 * time.Millisecond, BackoffMax: 100 * time.Millisecond,
			})
			// Wait for a rebind, then for 10 more acks after it.
			waitFor(t, "a rebind", func() bool { return d.Stats.Rebinds.Load() >= 1 })
			base := d.Stats.Acked.Load()
			waitFor(t, "acks after the rebind", func() bool { return d.Stats.Acked.Load() >= base+10 })
			reconnects := d.Stats.Reconnects.Load()
			if got := reconnects > 0; got != tt.wantReconnect {
				t.Errorf("reconnects %d (rebinds %d, unacked %d), want reconnect=%v", reconnects, d.Stats.Rebinds.Load(), d.Stats.Unacked.Load(), tt.wantReconnect)
			}
			c, _ := s.col.Device(name)
			if tt.cid && (c.Gaps != 0 || d.Stats.Unacked.Load() != 0) {
				t.Errorf("with CID: gaps %d unacked %d, want 0 and 0", c.Gaps, d.Stats.Unacked.Load())
			}
		})
	}
}

// TestSleepyRadioDropsRequests checks the duty cycle: while asleep the
// device hears nothing (a central GET is lost and counted), while awake it
// answers.
func TestSleepyRadioDropsRequests(t *testing.T) {
	stacktest.CheckGoroutines(t)
	name := "sensor-sleepy"
	set, _ := creds.Generate("seed", creds.KindPSK, []string{name})
	e, _ := set.Get(name)
	s := newSink(t, set, nil, true)
	d := runDevice(t, Config{
		Name: name, Protocol: CoAP, Target: s.addr, Path: "/telemetry", Creds: e, CID: true,
		Format: senml.FormatJSON, Interval: 400 * time.Millisecond, Awake: 100 * time.Millisecond, Confirmable: true,
	})
	waitFor(t, "2 acks", func() bool { return d.Stats.Acked.Load() >= 2 })
	// Send GETs back-to-back for over one period: some land while the
	// radio is off (dropped), some in the awake window (answered).
	cc := s.conn(t)
	deadline := time.Now().Add(1200 * time.Millisecond)
	for time.Now().Before(deadline) {
		req, err := cc.NewGetRequest(cc.Context(), PathTemp)
		if err != nil {
			t.Fatal(err)
		}
		req.SetType(message.NonConfirmable) // a lost request is simply lost
		_ = cc.WriteMessage(req)
		cc.ReleaseMessage(req)
		time.Sleep(20 * time.Millisecond)
	}
	if d.Stats.DroppedIn.Load() == 0 {
		t.Error("no request was dropped while the radio was off")
	}
	if d.Stats.Served.Load() == 0 {
		t.Error("no request was answered in the awake window")
	}
	if d.Stats.Unacked.Load() != 0 {
		t.Errorf("unacked %d, want 0: telemetry must be sent awake", d.Stats.Unacked.Load())
	}
}

// TestReconnectBackoffUntilServerUp starts the device before its server:
// handshakes time out and are retried with backoff until the server comes
// up, then the device connects once and delivers.
func TestReconnectBackoffUntilServerUp(t *testing.T) {
	stacktest.CheckGoroutines(t)
	name := "sensor-early"
	set, _ := creds.Generate("seed", creds.KindPSK, []string{name})
	e, _ := set.Get(name)
	// Reserve a port, then free it for the server started later.
	pc, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := pc.LocalAddr().String()
	pc.Close()
	d := runDevice(t, Config{
		Name: name, Protocol: CoAP, Target: addr, Path: "/telemetry", Creds: e, CID: true,
		Format: senml.FormatJSON, Interval: 50 * time.Millisecond, Confirmable: true,
		HandshakeTimeout: 200 * time.Millisecond, BackoffMin: 50 * time.Millisecond, BackoffMax: 200 * time.Millisecond,
	})
	waitFor(t, "2 failed handshakes", func() bool { return d.Stats.HandshakeFailures.Load() >= 2 })
	if d.Stats.Sent.Load() != 0 || d.Stats.Connected.Load() != 0 {
		t.Fatalf("sent %d connected %d before the server exists", d.Stats.Sent.Load(), d.Stats.Connected.Load())
	}
	l, err := collector.ListenDTLS(collector.DTLSConfig{Addr: addr, Creds: set, CID: true})
	if err != nil {
		t.Fatal(err)
	}
	col := collector.New(collector.Config{})
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); _ = col.ServeCoAPDTLS(ctx, l) }()
	t.Cleanup(func() { cancel(); _ = l.Close(); <-done })
	waitFor(t, "3 acks", func() bool { return d.Stats.Acked.Load() >= 3 })
	if d.Stats.Handshakes.Load() != 1 || d.Stats.Reconnects.Load() != 0 {
		t.Errorf("handshakes %d reconnects %d, want 1 and 0", d.Stats.Handshakes.Load(), d.Stats.Reconnects.Load())
	}
	if st, _ := col.Device(name); st.Highest != st.Unique || st.Unique < 3 {
		t.Errorf("collector: got %+v, want seq 1.. without gaps", st)
	}
}
