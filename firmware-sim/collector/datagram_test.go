package collector

import (
	"bytes"
	"context"
	"net"
	"testing"
	"time"

	"github.com/plgd-dev/go-coap/v3/message"
	"github.com/plgd-dev/go-coap/v3/message/codes"
	"github.com/plgd-dev/go-coap/v3/options"
	"github.com/plgd-dev/go-coap/v3/udp"

	"github.com/fleetgate/fleetgate/firmware-sim/senml"
	"github.com/fleetgate/fleetgate/internal/stacktest"
)

func telemetryDatagram(t testing.TB, typ message.Type, mid int32, seq uint64) []byte {
	t.Helper()
	body, err := senml.Telemetry{Device: "sensor-5", Seq: seq, Time: time.Unix(1763900000, 0)}.Encode(senml.FormatCBOR)
	if err != nil {
		t.Fatal(err)
	}
	var opts message.Options
	buf := make([]byte, 64)
	opts, _, _ = opts.SetPath(buf, "/telemetry")
	opts, _, _ = opts.SetContentFormat(buf[len(buf)-8:], message.MediaType(senml.ContentFormatCBOR))
	return encode(message.Message{Token: message.Token{1, 2}, Options: opts, Code: codes.POST, Payload: body, MessageID: mid, Type: typ})
}

func TestDatagramSinkDedupAndCodes(t *testing.T) {
	c := New(Config{})
	s := c.NewDatagramSink()
	req := telemetryDatagram(t, message.Confirmable, 77, 1)
	r1 := s.Handle("peer", req)
	r2 := s.Handle("peer", req) // retransmission
	if r1 == nil || !bytes.Equal(r1, r2) {
		t.Fatalf("retransmission answered differently: %x vs %x", r1, r2)
	}
	var resp message.Message
	if _, err := decodeForTest(r1, &resp); err != nil {
		t.Fatal(err)
	}
	if resp.Type != message.Acknowledgement || resp.Code != codes.Changed || resp.MessageID != 77 || !bytes.Equal(resp.Token, []byte{1, 2}) {
		t.Errorf("response: got %v", resp.String())
	}
	if st, _ := c.Device("sensor-5"); st.Received != 1 {
		t.Errorf("retransmission counted: received %d, want 1", st.Received)
	}
	// Same seq from another MID is a real duplicate at the application level.
	s.Handle("peer", telemetryDatagram(t, message.Confirmable, 78, 1))
	if st, _ := c.Device("sensor-5"); st.Duplicates != 1 {
		t.Errorf("duplicates: got %d, want 1", st.Duplicates)
	}
	// NON gets a NON response.
	if _, err := decodeForTest(s.Handle("peer", telemetryDatagram(t, message.NonConfirmable, 79, 2)), &resp); err != nil || resp.Type != message.NonConfirmable || resp.Code != codes.Changed {
		t.Errorf("NON response: got %v %v", resp.String(), err)
	}
	// Ping → Reset; garbage → nothing, counted.
	ping := encode(message.Message{Type: message.Confirmable, Code: codes.Empty, MessageID: 5})
	if _, err := decodeForTest(s.Handle("peer", ping), &resp); err != nil || resp.Type != message.Reset {
		t.Errorf("ping: got %v %v", resp.String(), err)
	}
	before := c.Stats.Malformed.Load()
	if out := s.Handle("peer", []byte{0xff, 0x00}); out != nil {
		t.Errorf("garbage answered: %x", out)
	}
	if c.Stats.Malformed.Load() != before+1 {
		t.Error("garbage not counted as malformed")
	}
}

// TestDatagramSinkWithGoCoAPClient serves on a plain net.PacketConn and
// posts with go-coap's UDP client.
func TestDatagramSinkWithGoCoAPClient(t *testing.T) {
	stacktest.CheckGoroutines(t)
	c := New(Config{})
	pc, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- c.NewDatagramSink().Serve(ctx, pc) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Serve: %v", err)
		}
	})
	cc, err := udp.Dial(pc.LocalAddr().String(), options.WithPeriodicRunner(fastRunner))
	if err != nil {
		t.Fatal(err)
	}
	defer cc.Close()
	for seq := uint64(1); seq <= 3; seq++ {
		body, _ := senml.Telemetry{Device: "sensor-9", Seq: seq, Time: time.Now()}.Encode(senml.FormatJSON)
		rctx, rcancel := context.WithTimeout(ctx, 5*time.Second)
		resp, err := cc.Post(rctx, "/telemetry", message.MediaType(senml.ContentFormatJSON), bytes.NewReader(body))
		rcancel()
		if err != nil {
			t.Fatal(err)
		}
		if resp.Code() != codes.Changed {
			t.Errorf("seq %d: got %v, want 2.04", seq, resp.Code())
		}
	}
	if st, _ := c.Device("sensor-9"); st.Unique != 3 || st.Gaps != 0 {
		t.Errorf("got %+v, want 3 unique", st)
	}
}

func FuzzDatagramSink(f *testing.F) {
	f.Add(telemetryDatagram(f, message.Confirmable, 1, 1))
	f.Add(telemetryDatagram(f, message.NonConfirmable, 2, 9))
	f.Add(encode(message.Message{Type: message.Confirmable, Code: codes.Empty, MessageID: 5}))
	f.Add([]byte{0x40, 0x01, 0x00, 0x01}) // CON GET, no options
	f.Fuzz(func(t *testing.T, b []byte) {
		s := New(Config{}).NewDatagramSink()
		out := s.Handle("fuzz", b)
		if out != nil {
			var m message.Message
			if _, err := decodeForTest(out, &m); err != nil {
				t.Fatalf("sink produced an undecodable response %x: %v", out, err)
			}
		}
	})
}
