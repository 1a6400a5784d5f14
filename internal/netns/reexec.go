package netns

import (
	"encoding/json"
	"net/netip"
	"os"
	"os/exec"
	"regexp"
	"strings"
	"testing"
	"time"
)

// childEnv names the test a child process runs; hostsEnv carries the hosts.
const (
	childEnv = "FG_NETNS_CHILD"
	hostsEnv = "FG_NETNS_HOSTS"
)

// InHost runs the calling top-level test again as a child test process
// inside the namespace of topo's host run, for code that opens its sockets
// from goroutines of its own (a library such as GoBGP dials from its own
// goroutines, so Host.Do cannot place them). In the parent it builds the
// topology with build, runs the child, copies its output to the test log,
// fails the test if the child failed, and returns (nil, false): the parent
// returns at once. In the child it returns the topology's hosts by name and
// true, and the test body runs there; the namespaces stay owned (and are
// removed) by the parent. Processes the child starts are the child's to
// stop (netns.Start does it at its cleanup).
func InHost(t *testing.T, run string, build func() *Topology) (map[string]*Host, bool) {
	t.Helper()
	if os.Getenv(childEnv) == t.Name() {
		var hosts map[string]*Host
		if err := json.Unmarshal([]byte(os.Getenv(hostsEnv)), &hosts); err != nil {
			t.Fatalf("netns: child hosts: %v", err)
		}
		return hosts, true
	}
	if strings.Contains(t.Name(), "/") {
		t.Fatalf("netns: InHost needs a top-level test, not %s", t.Name())
	}
	topo := build()
	h := topo.Host(run)
	b, err := json.Marshal(topo.hosts)
	if err != nil {
		t.Fatal(err)
	}
	args := []string{"-test.run=^" + regexp.QuoteMeta(t.Name()) + "$", "-test.count=1", "-test.v"}
	if d, ok := t.Deadline(); ok {
		args = append(args, "-test.timeout="+time.Until(d).Round(time.Second).String())
	}
	cmd := h.Command(os.Args[0], args...)
	cmd.Env = append(os.Environ(), childEnv+"="+t.Name(), hostsEnv+"="+string(b))
	out, err := cmd.CombinedOutput()
	t.Logf("child test in %s:\n%s", h.NS, out)
	if err != nil {
		t.Fatalf("child test in namespace %s failed: %v", h.NS, err)
	}
	if strings.Contains(string(out), "--- SKIP: "+t.Name()) {
		t.Skipf("child test skipped (see its output above)")
	}
	return nil, false
}

// AddHost adds one more namespace to the topology (removed at cleanup),
// with loopback up and forwarding on; addr is its main address.
func (topo *Topology) AddHost(name, addr string) *Host {
	topo.t.Helper()
	if topo.hosts[name] != nil {
		topo.t.Fatalf("netns: host %q exists", name)
	}
	h := &Host{Name: name, NS: topo.nsPrefix() + name, Addr: netip.MustParseAddr(addr), Ifaces: map[string]netip.Prefix{}}
	_ = exec.Command("ip", "netns", "del", h.NS).Run()
	if out, err := exec.Command("ip", "netns", "add", h.NS).CombinedOutput(); err != nil {
		topo.t.Fatalf("netns: ip netns add %s: %v: %s", h.NS, err, out)
	}
	ns := h.NS
	t := topo.t
	t.Cleanup(func() {
		if out, err := exec.Command("ip", "netns", "del", ns).CombinedOutput(); err != nil {
			t.Errorf("netns: ip netns del %s: %v: %s", ns, err, out)
		}
	})
	topo.hosts[name] = h
	topo.mustRun(name, "ip", "link", "set", "dev", "lo", "up")
	topo.mustRun(name, "sysctl", "-qw", "net.ipv4.ip_forward=1")
	return h
}

// Connect joins hosts a and b with a veth (interfaces named after the
// neighbour) and the given addresses with prefix length.
func (topo *Topology) Connect(a, b, aAddr, bAddr string) {
	topo.t.Helper()
	ha, hb := topo.Host(a), topo.Host(b)
	topo.mustRun(a, "ip", "link", "add", "name", b, "type", "veth", "peer", "name", a, "netns", hb.NS)
	ha.Ifaces[b] = netip.MustParsePrefix(aAddr)
	hb.Ifaces[a] = netip.MustParsePrefix(bAddr)
	topo.mustRun(a, "ip", addrAdd(aAddr, b)...)
	topo.mustRun(b, "ip", addrAdd(bAddr, a)...)
	topo.mustRun(a, "ip", "link", "set", "dev", b, "up")
	topo.mustRun(b, "ip", "link", "set", "dev", a, "up")
}

// Run runs a command in host name and fails the test if it fails.
func (topo *Topology) Run(name string, cmd string, args ...string) string {
	topo.t.Helper()
	return topo.mustRun(name, cmd, args...)
}

// nsPrefix is the topology's "fg<pid>x<n>-" namespace prefix.
func (topo *Topology) nsPrefix() string {
	for _, h := range topo.hosts {
		return strings.TrimSuffix(h.NS, h.Name)
	}
	return ""
}
