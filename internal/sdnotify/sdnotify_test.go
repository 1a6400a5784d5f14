package sdnotify

import (
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
	// A hang guard: the datagram was written before recv is called.
	if err := c.SetReadDeadline(time.Now().Add(30 * time.Second)); err != nil {
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
	if sent, err := Ready(); sent || err != nil {
		t.Fatalf("Ready() without $NOTIFY_SOCKET = %v, %v; want false, nil", sent, err)
	}
}

func TestNotifyNobodyListening(t *testing.T) {
	t.Setenv(EnvSocket, filepath.Join(t.TempDir(), "absent"))
	if sent, err := Ready(); sent || err == nil {
		t.Fatalf("Ready() to a missing socket = %v, %v; want false and an error", sent, err)
	}
}
