// Package realpeer starts real third-party programs for interop tests:
// strongSwan charon, xl2tpd, SoftEther vpnserver, mosquitto, libcoap's
// coap-server and coap-client, FreeRADIUS, bird2 (BGP) and tshark/dumpcap
// captures.
//
// Every launcher starts ONE program inside a network namespace (a
// *netns.Host) or, when the host is nil, in the root namespace on loopback
// (SoftEther always needs a host: it binds fixed ports). Each gets a private
// configuration and state directory, never reads the system's
// configuration, is stopped by PID at cleanup, and its output and log are
// written to the test log when the test failed. Launchers call
// testenv.RequireRoot and testenv.RequireBinary first, so tests skip loudly
// (or fail in CI) where the programs cannot run.
//
// Known traps handled here (see /work/shared/LIBRARY-FACTS.md): charon must
// read only its own strongswan.conf (STRONGSWAN_CONF) and pid file (private
// /run); SoftEther writes to fixed system directories (private mount
// namespace with bind mounts) and may stop answering a source after failed
// sessions (start a fresh instance per test); coap-client exits 0 when the
// DTLS handshake fails (CoAPClient judges by output); its -k takes the PSK
// as text; coap-server listens for DTLS on its port + 1.
package realpeer

import (
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// privateDir returns a new short directory under /tmp (unix socket paths
// must stay under 108 bytes, which t.TempDir's long names can exceed),
// removed at cleanup.
func privateDir(t testing.TB, prefix string) string {
	t.Helper()
	d, err := os.MkdirTemp("", "fg"+prefix)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(d) })
	return d
}

func writeFile(t testing.TB, path string, b []byte) {
	t.Helper()
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, b, 0o600); err != nil {
		t.Fatal(err)
	}
}

// poll calls cond every 50 ms until it is true or timeout passes; it
// reports whether cond became true. It is for waiting on external
// processes, which offer no event to wait for.
func poll(timeout time.Duration, cond func() bool) bool {
	deadline := time.Now().Add(timeout)
	for {
		if cond() {
			return true
		}
		if time.Now().After(deadline) {
			return false
		}
		time.Sleep(50 * time.Millisecond) // polling an external process
	}
}

// containsAll reports whether s contains every string in want.
func containsAll(s string, want []string) bool {
	for _, w := range want {
		if !strings.Contains(s, w) {
			return false
		}
	}
	return true
}

// logOnFailure writes the file at path to the test log at cleanup if the
// test failed.
func logOnFailure(t testing.TB, what, path string) {
	t.Cleanup(func() {
		if t.Failed() {
			b, _ := os.ReadFile(path)
			t.Logf("%s (%s):\n%s", what, path, b)
		}
	})
}

// FreePort returns a TCP and UDP port number that was free on loopback in
// the root namespace a moment ago, for launchers started without a host.
func FreePort(t testing.TB) int {
	t.Helper()
	for range 20 {
		l, err := net.ListenTCP("tcp4", &net.TCPAddr{IP: net.IPv4(127, 0, 0, 1)})
		if err != nil {
			t.Fatal(err)
		}
		port := l.Addr().(*net.TCPAddr).Port
		l.Close()
		u, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1), Port: port})
		if err != nil {
			continue
		}
		u2, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1), Port: port + 1})
		u.Close()
		if err != nil {
			continue
		}
		u2.Close()
		return port
	}
	t.Fatal("realpeer: no free port")
	return 0
}
