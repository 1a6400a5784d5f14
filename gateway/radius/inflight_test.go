package radius

import (
	"context"
	"errors"
	"net"
	"testing"
	"time"
)

// TestMaxInFlight: with MaxInFlight Access-Requests waiting on a server
// that never answers, one more fails at once with ErrBusy and is counted;
// once the first has given up, its slot is free again.
func TestMaxInFlight(t *testing.T) {
	srv, err := net.ListenPacket("udp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer srv.Close()
	got := make(chan struct{}, 16)
	go func() {
		buf := make([]byte, 4096)
		for {
			if _, _, err := srv.ReadFrom(buf); err != nil {
				return
			}
			got <- struct{}{}
		}
	}()
	c := New(Config{Auth: srv.LocalAddr().String(), Secret: []byte("s"), Timeout: 2 * time.Second, MaxInFlight: 1})
	req := Request{Method: MethodPAP, User: "u", Password: "p"}
	first := make(chan error, 1)
	go func() { _, err := c.Authenticate(context.Background(), req); first <- err }()
	select {
	case <-got: // the first request is on the wire, waiting
	case <-time.After(10 * time.Second):
		t.Fatal("first request never reached the server")
	}
	t0 := time.Now()
	if _, err := c.Authenticate(context.Background(), req); !errors.Is(err, ErrBusy) {
		t.Fatalf("second request: got %v, want ErrBusy", err)
	}
	if d := time.Since(t0); d > time.Second {
		t.Errorf("ErrBusy took %v: it must not wait", d)
	}
	if n := c.Stats.Busy.Load(); n != 1 {
		t.Errorf("Busy: got %d, want 1", n)
	}
	if err := <-first; err == nil || errors.Is(err, ErrBusy) {
		t.Fatalf("first request: got %v, want a timeout", err)
	}
	// The slot is free again: the next request is not refused as busy
	// (the silent server is now marked dead, so it fails at once).
	if _, err := c.Authenticate(context.Background(), req); errors.Is(err, ErrBusy) {
		t.Fatalf("after the first gave up: %v", err)
	}
}
