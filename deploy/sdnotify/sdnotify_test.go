package sdnotify

import (
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"testing"
	"time"
)

// listen opens a unixgram socket standing in for systemd's notify socket.
func listen(t *testing.T, name string) *net.UnixConn {
	t.Helper()
	c, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Name: name, Net: "unixgram"})
	if err != nil {
		t.Fatalf("listen %q: %v", name, err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

func recv(t *testing.T, c *net.UnixConn) string {
	t.Helper()
	if err := c.SetReadDeadline(time.Now().Add(5 * time.Second)); err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 4096)
	n, err := c.Read(buf)
	if err != nil {
		t.Fatalf("read notify datagram: %v", err)
	}
	return string(buf[:n])
}

func TestNotifySocketKinds(t *testing.T) {
	sockets := map[string]string{
		"path":     filepath.Join(t.TempDir(), "notify"),
		"abstract": fmt.Sprintf("@fleetgate-sdnotify-test-%d-%d", os.Getpid(), time.Now().UnixNano()),
	}
	for kind, name := range sockets {
		t.Run(kind, func(t *testing.T) {
			c := listen(t, name)
			t.Setenv(EnvSocket, name)
			for _, tt := range []struct {
				send func() (bool, error)
				want string
			}{
				{Ready, "READY=1"},
				{Reloading, "RELOADING=1"},
				{Stopping, "STOPPING=1"},
				{func() (bool, error) { return Status("3 sessions\nup") }, "STATUS=3 sessions up"},
				{func() (bool, error) { return Notify("READY=1\nSTATUS=ok") }, "READY=1\nSTATUS=ok"},
			} {
				sent, err := tt.send()
				if err != nil || !sent {
					t.Fatalf("send %q: sent=%v err=%v, want sent=true err=nil", tt.want, sent, err)
				}
				if got := recv(t, c); got != tt.want {
					t.Errorf("datagram = %q, want %q", got, tt.want)
				}
			}
		})
	}
}

func TestNotifyWithoutSocketIsNoop(t *testing.T) {
	t.Setenv(EnvSocket, "")
	sent, err := Ready()
	if sent || err != nil {
		t.Fatalf("Ready() without $NOTIFY_SOCKET = %v, %v; want false, nil", sent, err)
	}
	var n *Notifier
	if sent, err := n.Notify(StateReady); sent || err != nil {
		t.Fatalf("nil Notifier = %v, %v; want false, nil", sent, err)
	}
}

func TestNotifyErrors(t *testing.T) {
	dir := t.TempDir()
	for _, tt := range []struct {
		name, socket, state string
		want                error
	}{
		{"empty state", "/x", "", ErrEmptyState},
		{"no equals", "/x", "READY", ErrBadState},
		{"empty key", "/x", "=1", ErrBadState},
		{"second line bad", "/x", "READY=1\nbogus", ErrBadState},
		{"relative socket", "notify", "READY=1", ErrBadSocket},
	} {
		t.Run(tt.name, func(t *testing.T) {
			sent, err := (&Notifier{Socket: tt.socket}).Notify(tt.state)
			if sent || !errors.Is(err, tt.want) {
				t.Fatalf("Notify = %v, %v; want false, %v", sent, err, tt.want)
			}
		})
	}
	t.Run("nobody listening", func(t *testing.T) {
		sent, err := (&Notifier{Socket: filepath.Join(dir, "absent")}).Notify(StateReady)
		var e *Error
		if sent || !errors.As(err, &e) || e.Op != "dial" {
			t.Fatalf("Notify to a missing socket = %v, %v; want false, *Error{Op: dial}", sent, err)
		}
	})
}
