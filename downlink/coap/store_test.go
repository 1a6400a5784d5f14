package coap_test

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/plgd-dev/go-coap/v3/message/codes"

	"github.com/fleetgate/fleetgate/downlink/coap"
	"github.com/fleetgate/fleetgate/downlink/coap/coaptest"
)

// TestSessionsRestoredAfterRestart: Close with a state file keeps the
// sessions (no close_notify); a new server on the same port restores them
// and a device's next request is served without a handshake (PSK and
// certificate). The file is single use: it is rewritten at once with the
// skipped sequence numbers. A file from another bridge (other key) or
// modified is refused as a whole with a clear error and a counter.
func TestSessionsRestoredAfterRestart(t *testing.T) {
	dir := t.TempDir()
	stateFile, keyFile := filepath.Join(dir, "sessions.state"), filepath.Join(dir, "sessions.key")
	var cfg coap.Config
	f := newFixture(t, func(c *coap.Config) {
		c.StateFile, c.StateKeyFile = stateFile, keyFile
		cfg = *c
	})
	if fi, err := os.Stat(keyFile); err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("key file: %v %v, want mode 0600", fi, err)
	}
	addr := f.srv.Addr().String()
	psk, err := coaptest.Dial(t, addr, coaptest.Options{Identity: "sensor-17", Key: f.key})
	if err != nil {
		t.Fatal(err)
	}
	cert, err := coaptest.Dial(t, addr, coaptest.Options{Cert: &f.cert, RootCAs: f.ca.Pool})
	if err != nil {
		t.Fatal(err)
	}
	for _, d := range []*coaptest.Device{psk, cert} {
		if code, _ := get(t, d, "/1"); code != codes.Content {
			t.Fatalf("got %v", code)
		}
	}
	f.srv.Close()
	f.srv.Wait()
	if n := f.srv.Stats.StateSaved.Load(); n != 2 {
		t.Fatalf("saved %d sessions, want 2", n)
	}
	saved, err := os.ReadFile(stateFile)
	if err != nil {
		t.Fatal(err)
	}
	select {
	case <-psk.Conn.Done():
		t.Fatal("the device was told of the close (close_notify) although its session was saved")
	default:
	}

	cfg.ListenAddr = addr
	restart := func(t *testing.T, c coap.Config) *coap.Server {
		t.Helper()
		srv, err := coap.New(c)
		if err != nil {
			t.Fatal(err)
		}
		go func() { _ = srv.Serve() }()
		t.Cleanup(func() { srv.Close(); srv.Wait() })
		return srv
	}
	t.Run("stolen", func(t *testing.T) {
		// Another bridge's key: nothing restored, clear error, counted.
		other := t.TempDir()
		c := cfg
		c.ListenAddr = "127.0.0.1:0"
		c.StateFile, c.StateKeyFile = filepath.Join(other, "s.state"), filepath.Join(other, "s.key")
		if err := os.WriteFile(c.StateFile, saved, 0o600); err != nil {
			t.Fatal(err)
		}
		srv := restart(t, c)
		if err := srv.StateError(); !errors.Is(err, coap.ErrStateFile) || !strings.Contains(err.Error(), "does not decrypt") {
			t.Fatalf("StateError = %v", err)
		}
		if srv.Stats.StateRefused.Load() != 1 || srv.Stats.StateRestored.Load() != 0 {
			t.Fatalf("refused %d restored %d, want 1 0", srv.Stats.StateRefused.Load(), srv.Stats.StateRestored.Load())
		}
	})
	t.Run("corrupted", func(t *testing.T) {
		other := t.TempDir()
		c := cfg
		c.ListenAddr = "127.0.0.1:0"
		c.StateFile = filepath.Join(other, "s.state")
		bad := append([]byte(nil), saved...)
		bad[len(bad)/2] ^= 1
		if err := os.WriteFile(c.StateFile, bad, 0o600); err != nil {
			t.Fatal(err)
		}
		srv := restart(t, c)
		if !errors.Is(srv.StateError(), coap.ErrStateFile) || srv.Stats.StateRefused.Load() != 1 || srv.Stats.StateRestored.Load() != 0 {
			t.Fatalf("corrupted file: err %v refused %d restored %d", srv.StateError(), srv.Stats.StateRefused.Load(), srv.Stats.StateRestored.Load())
		}
	})
	t.Run("key readable by others", func(t *testing.T) {
		other := t.TempDir()
		c := cfg
		c.StateFile, c.StateKeyFile = filepath.Join(other, "s.state"), filepath.Join(other, "s.key")
		if err := os.WriteFile(c.StateKeyFile, make([]byte, 32), 0o644); err != nil {
			t.Fatal(err)
		}
		if _, err := coap.New(c); err == nil || !strings.Contains(err.Error(), "chmod 600 "+c.StateKeyFile) {
			t.Fatalf("New with a 0644 key file: %v", err)
		}
	})

	srv := restart(t, cfg)
	if srv.StateError() != nil || srv.Stats.StateRestored.Load() != 2 {
		t.Fatalf("restored %d (err %v), want 2", srv.Stats.StateRestored.Load(), srv.StateError())
	}
	if again, _ := os.ReadFile(stateFile); string(again) == string(saved) {
		t.Fatal("the state file was not rewritten after the restore (single use)")
	}
	if live, parked := srv.Count(); live != 0 || parked != 2 {
		t.Fatalf("%d live %d parked, want 0 2", live, parked)
	}
	for name, d := range map[string]*coaptest.Device{"sensor-17": psk, "sensor-9": cert} {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		resp, err := d.Conn.Get(ctx, "/after-restart")
		cancel()
		if err != nil {
			t.Fatalf("%s after the restart: %v", name, err)
		}
		body, _ := resp.ReadBody()
		if resp.Code() != codes.Content || string(body) != "hello "+name {
			t.Fatalf("%s after the restart: %v %q", name, resp.Code(), body)
		}
		d.Conn.ReleaseMessage(resp)
	}
	if hs, r := srv.Stats.HandshakesOK.Load(), srv.Stats.Resumed.Load(); hs != 0 || r != 2 {
		t.Fatalf("after the restart: %d handshakes %d resumed, want 0 2", hs, r)
	}
}
