package netns

import (
	"encoding/json"
	"os"
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
