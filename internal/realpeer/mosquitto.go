package realpeer

import (
	"bufio"
	"fmt"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/fleetgate/fleetgate/internal/netns"
	"github.com/fleetgate/fleetgate/internal/testenv"
)

// MosquittoConfig configures StartMosquitto.
type MosquittoConfig struct {
	// Listen is the address and port (default 0.0.0.0:1883 in a host,
	// 127.0.0.1 and a free port in the root namespace; 8883 with TLS).
	Listen netip.AddrPort
	// TLS serves MQTT over TLS with a certificate from a generated CA
	// (Mosquitto.CA), for Listen's address and "localhost".
	TLS bool
	// CA, when set with TLS, signs the server certificate instead of a
	// generated CA (e.g. a test's site CA whose pool the client trusts).
	CA *TLSCA
	// Users, when set, turns off anonymous access and creates these
	// users (name → password) with mosquitto_passwd.
	Users map[string]string
	// Extra is appended to mosquitto.conf.
	Extra string
}

// Mosquitto is a running mosquitto broker with a private configuration
// (no persistence, logging everything to its output).
type Mosquitto struct {
	// Addr is where the broker listens.
	Addr netip.AddrPort
	// CA signed the server certificate (TLS only); CAFile is its path.
	CA     *TLSCA
	CAFile string
	// Dir is the private directory.
	Dir string
	// Proc is the broker process; its output is the broker log.
	Proc *netns.Proc

	host *netns.Host
}

// StartMosquitto starts mosquitto in h (nil: root namespace, loopback).
// Only a host needs root; on loopback in the root namespace any user can
// run the broker.
func StartMosquitto(t testing.TB, h *netns.Host, cfg MosquittoConfig) *Mosquitto {
	t.Helper()
	if h != nil {
		testenv.RequireRoot(t)
	}
	bin := testenv.RequireBinary(t, "mosquitto")
	m := &Mosquitto{Dir: privateDir(t, "mosq"), Addr: cfg.Listen, host: h}
	if !m.Addr.IsValid() {
		switch {
		case h == nil:
			m.Addr = netip.AddrPortFrom(netip.MustParseAddr("127.0.0.1"), uint16(FreePort(t)))
		case cfg.TLS:
			m.Addr = netip.MustParseAddrPort("0.0.0.0:8883")
		default:
			m.Addr = netip.MustParseAddrPort("0.0.0.0:1883")
		}
	}
	conf := ""
	if os.Geteuid() == 0 {
		// Else mosquitto drops to user "mosquitto", which cannot read
		// the private directory.
		conf = "user root\n"
	}
	conf += fmt.Sprintf("persistence false\nlog_dest stderr\nlog_type all\nlog_timestamp_format %%H:%%M:%%S\n"+
		"pid_file %s\nlistener %d %s\n", filepath.Join(m.Dir, "pid"), m.Addr.Port(), m.Addr.Addr())
	if cfg.TLS {
		m.CA = cfg.CA
		if m.CA == nil {
			m.CA = NewTLSCA(t, "mosquitto test CA")
		}
		hosts := []string{"localhost", "127.0.0.1"}
		if h != nil {
			hosts = append(hosts, h.Addr.String())
		}
		if a := m.Addr.Addr(); !a.IsUnspecified() {
			hosts = append(hosts, a.String())
		}
		cert, key := m.CA.Issue(t, "mosquitto", hosts...).WriteFiles(t, m.Dir, "server")
		m.CAFile = m.CA.CAFile
		conf += fmt.Sprintf("cafile %s\ncertfile %s\nkeyfile %s\n", m.CAFile, cert, key)
	}
	if len(cfg.Users) > 0 {
		pw := filepath.Join(m.Dir, "passwd")
		passwd := testenv.RequireBinary(t, "mosquitto_passwd")
		first := true
		for u, p := range cfg.Users {
			args := []string{"-b", pw, u, p}
			if first {
				args = append([]string{"-c"}, args...)
				first = false
			}
			if out, err := exec.Command(passwd, args...).CombinedOutput(); err != nil {
				t.Fatalf("realpeer: mosquitto_passwd: %v: %s", err, out)
			}
		}
		conf += fmt.Sprintf("allow_anonymous false\npassword_file %s\n", pw)
	} else {
		conf += "allow_anonymous true\n"
	}
	conf += cfg.Extra + "\n"
	writeFile(t, filepath.Join(m.Dir, "mosquitto.conf"), []byte(conf))
	m.Proc = netns.Start(t, h.Command(bin, "-c", filepath.Join(m.Dir, "mosquitto.conf")))
	if !poll(10*time.Second, func() bool { return strings.Contains(m.Proc.Output(), " running") }) {
		t.Fatalf("%v: mosquitto did not start:\n%s", ErrNotReady, m.Proc.Output())
	}
	return m
}

// ClientArgs returns the mosquitto_pub/mosquitto_sub connection flags for
// this broker as seen from client host h (-h, -p and, with TLS,
// --cafile). With a wildcard listen address a client in the broker's own
// host uses 127.0.0.1, others the broker host's Addr.
func (m *Mosquitto) ClientArgs(h *netns.Host) []string {
	host := m.Addr.Addr().String()
	if m.Addr.Addr().IsUnspecified() {
		host = "127.0.0.1"
		if h != m.host && m.host != nil {
			host = m.host.Addr.String()
		}
	}
	a := []string{"-h", host, "-p", fmt.Sprint(m.Addr.Port())}
	if m.CAFile != "" {
		a = append(a, "--cafile", m.CAFile)
	}
	return a
}

// Pub publishes msg on topic with mosquitto_pub from host h (nil: root
// namespace) and returns its output; args are extra flags (-q 1, -u, -P,
// -h to override the host...).
func (m *Mosquitto) Pub(t testing.TB, h *netns.Host, topic, msg string, args ...string) string {
	t.Helper()
	bin := testenv.RequireBinary(t, "mosquitto_pub")
	a := append(append(m.ClientArgs(h), "-t", topic, "-m", msg), args...)
	out, err := h.Run(t.Context(), bin, a...)
	if err != nil {
		t.Fatal(err)
	}
	return out
}

// Sub is a running mosquitto_sub.
type Sub struct {
	proc *netns.Proc
}

// subMarker prefixes every received message in mosquitto_sub's output
// (-F), to tell messages from its -d debug lines.
const subMarker = "fgmsg| "

// Subscribe starts mosquitto_sub on topic from h (nil: root namespace)
// and returns once the broker acknowledged the subscription (SUBACK); args
// are extra flags (-q 1, -u, -P, -h...).
func (m *Mosquitto) Subscribe(t testing.TB, h *netns.Host, topic string, args ...string) *Sub {
	t.Helper()
	bin := testenv.RequireBinary(t, "mosquitto_sub")
	a := append(append(m.ClientArgs(h), "-d", "-t", topic, "-F", subMarker+"%t %p"), args...)
	// stdbuf: mosquitto_sub's stdout is a pipe here, which stdio would
	// buffer fully (and it has no --unbuffered in 2.0.11).
	s := &Sub{proc: netns.Start(t, h.Command("stdbuf", append([]string{"-oL", bin}, a...)...))}
	if !poll(10*time.Second, func() bool { return strings.Contains(s.proc.Output(), "received SUBACK") }) {
		t.Fatalf("%v: mosquitto_sub got no SUBACK:\n%s", ErrNotReady, s.proc.Output())
	}
	return s
}

// Messages returns the messages received so far as "topic payload".
func (s *Sub) Messages() []string {
	var msgs []string
	sc := bufio.NewScanner(strings.NewReader(s.proc.Output()))
	for sc.Scan() {
		if l, ok := strings.CutPrefix(sc.Text(), subMarker); ok {
			msgs = append(msgs, l)
		}
	}
	return msgs
}

// Wait waits until n messages arrived and returns them; it fails the test
// after timeout.
func (s *Sub) Wait(t testing.TB, n int, timeout time.Duration) []string {
	t.Helper()
	var msgs []string
	if !poll(timeout, func() bool { msgs = s.Messages(); return len(msgs) >= n }) {
		t.Fatalf("mosquitto_sub got %d messages, want %d:\n%s", len(msgs), n, s.proc.Output())
	}
	return msgs
}
