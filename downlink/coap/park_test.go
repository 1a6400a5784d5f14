package coap_test

import (
	"bytes"
	"context"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/plgd-dev/go-coap/v3/message"
	"github.com/plgd-dev/go-coap/v3/message/codes"
	"github.com/plgd-dev/go-coap/v3/message/pool"
	"github.com/plgd-dev/go-coap/v3/net/responsewriter"
	udpclient "github.com/plgd-dev/go-coap/v3/udp/client"

	"github.com/fleetgate/fleetgate/downlink/coap"
	"github.com/fleetgate/fleetgate/downlink/coap/coaptest"
)

// serverConnGoroutines counts go-coap's per-conn serve goroutines of the
// DTLS server (the devices in the test use go-coap's client, not these).
func serverConnGoroutines() int {
	buf := make([]byte, 4<<20)
	buf = buf[:runtime.Stack(buf, true)]
	n := 0
	for _, g := range strings.Split(string(buf), "\n\n") {
		if strings.Contains(g, "go-coap/v3/dtls/server.(*Server).serveConnection") {
			n++
		}
	}
	return n
}

func waitParked(t *testing.T, srv *coap.Server, want int) {
	t.Helper()
	waitFor(t, func() bool { live, parked := srv.Count(); return live == 0 && parked == want })
}

// TestParkedSessionWakes: an idle session is parked (no conn, no go-coap
// goroutine, state kept) and the next request from the device, from the
// bridge, or from the device at a new address (CID) resumes it without a
// handshake and is served, for PSK and certificate sessions.
func TestParkedSessionWakes(t *testing.T) {
	for _, tc := range []struct {
		name string
		cert bool
		want string
	}{{"psk", false, "sensor-17"}, {"cert", true, "sensor-9"}} {
		t.Run(tc.name, func(t *testing.T) {
			f := newFixture(t, func(c *coap.Config) { c.ParkAfter = 100 * time.Millisecond })
			opts := coaptest.Options{Identity: "sensor-17", Key: f.key,
				Handler: func(w *responsewriter.ResponseWriter[*udpclient.Conn], r *pool.Message) {
					_ = w.SetResponse(codes.Content, message.TextPlain, bytes.NewReader([]byte("device says hi")))
				}}
			if tc.cert {
				opts = coaptest.Options{Cert: &f.cert, RootCAs: f.ca.Pool, Handler: opts.Handler}
			}
			d, err := coaptest.Dial(t, f.srv.Addr().String(), opts)
			if err != nil {
				t.Fatal(err)
			}
			if code, body := get(t, d, "/1"); code != codes.Content || body != "hello "+tc.want {
				t.Fatalf("got %v %q", code, body)
			}
			if n := serverConnGoroutines(); n != 1 {
				t.Fatalf("live session: %d go-coap server conn goroutines, want 1", n)
			}
			waitParked(t, f.srv, 1)
			waitFor(t, func() bool { return serverConnGoroutines() == 0 })
			if info, ok := f.srv.Info(tc.want); !ok || !info.Parked {
				t.Fatalf("Info: %+v %v, want parked", info, ok)
			}

			// 1. The device speaks first.
			if code, body := get(t, d, "/2"); code != codes.Content || body != "hello "+tc.want {
				t.Fatalf("after park: got %v %q", code, body)
			}
			// 2. Parked again; the bridge speaks first.
			waitParked(t, f.srv, 1)
			sess := f.srv.Session(tc.want)
			if sess == nil {
				t.Fatal("Session did not resume the parked session")
			}
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			req := sess.Conn.AcquireMessage(ctx)
			req.SetCode(codes.GET)
			req.SetType(message.Confirmable)
			_ = req.SetPath("/state")
			req.SetToken(message.Token{1, 2, 3, 4})
			resp, err := sess.Do(req)
			cancel()
			sess.Conn.ReleaseMessage(req)
			if err != nil {
				t.Fatalf("bridge → device after park: %v", err)
			}
			body, _ := resp.ReadBody()
			if resp.Code() != codes.Content || string(body) != "device says hi" {
				t.Fatalf("bridge → device after park: %v %q", resp.Code(), body)
			}
			sess.Conn.ReleaseMessage(resp)
			// 3. Parked again; the device moved (NAT rebinding): found by CID.
			waitParked(t, f.srv, 1)
			if err := d.Sock.Rebind(); err != nil {
				t.Fatal(err)
			}
			if code, body := get(t, d, "/3"); code != codes.Content || body != "hello "+tc.want {
				t.Fatalf("after park + rebind: got %v %q", code, body)
			}
			if got := f.srv.Stats.HandshakesOK.Load(); got != 1 {
				t.Fatalf("%d handshakes, want 1 (every wake resumed the session)", got)
			}
			if p, r, fl := f.srv.Stats.Parked.Load(), f.srv.Stats.Resumed.Load(), f.srv.Stats.ResumeFailures.Load(); p != 3 || r != 3 || fl != 0 {
				t.Fatalf("parked %d resumed %d failures %d, want 3 3 0", p, r, fl)
			}
		})
	}
}

// TestParkedSessionRevoked: CloseSession drops a parked session: the
// device's next record finds nothing to resume (dropped and counted as
// no_session) and a new handshake is needed.
func TestParkedSessionRevoked(t *testing.T) {
	f := newFixture(t, func(c *coap.Config) { c.ParkAfter = 100 * time.Millisecond })
	d, err := coaptest.Dial(t, f.srv.Addr().String(), coaptest.Options{Identity: "sensor-17", Key: f.key})
	if err != nil {
		t.Fatal(err)
	}
	if code, _ := get(t, d, "/1"); code != codes.Content {
		t.Fatalf("got %v", code)
	}
	waitParked(t, f.srv, 1)
	if !f.srv.CloseSession("sensor-17") {
		t.Fatal("CloseSession: no session")
	}
	if live, parked := f.srv.Count(); live != 0 || parked != 0 {
		t.Fatalf("after CloseSession: %d live %d parked", live, parked)
	}
	before := f.srv.Stats.GarbageByReason[coap.GarbageNoSession].Load()
	ctx, cancel := context.WithTimeout(context.Background(), 500*time.Millisecond)
	defer cancel()
	if _, err := d.Conn.Get(ctx, "/2"); err == nil {
		t.Fatal("a revoked parked session answered")
	}
	if after := f.srv.Stats.GarbageByReason[coap.GarbageNoSession].Load(); after == before {
		t.Fatal("the record for the revoked session was not counted")
	}
	if f.srv.Stats.Resumed.Load() != 0 {
		t.Fatal("a revoked parked session was resumed")
	}
}

// TestCloseNotifiesParkedDevices: Close resumes parked sessions just to
// send their close_notify, as for live ones.
func TestCloseNotifiesParkedDevices(t *testing.T) {
	f := newFixture(t, func(c *coap.Config) { c.ParkAfter = 100 * time.Millisecond })
	d, err := coaptest.Dial(t, f.srv.Addr().String(), coaptest.Options{Identity: "sensor-17", Key: f.key})
	if err != nil {
		t.Fatal(err)
	}
	if code, _ := get(t, d, "/1"); code != codes.Content {
		t.Fatalf("got %v", code)
	}
	waitParked(t, f.srv, 1)
	f.srv.Close()
	select {
	case <-d.Conn.Done():
	case <-time.After(5 * time.Second):
		t.Fatal("parked device not told of the close within 5 s")
	}
}
