package nftables

import (
	"fmt"
	"os"
	"os/exec"
	"regexp"
	"strconv"
	"strings"
	"testing"

	"github.com/fleetgate/fleetgate/internal/testenv"
)

func run(t *testing.T, name string, args ...string) string {
	t.Helper()
	out, err := exec.Command(name, args...).CombinedOutput()
	if err != nil {
		t.Fatalf("%s %s: %v\n%s", name, strings.Join(args, " "), err, out)
	}
	return string(out)
}

func TestGatewayRulesetCheck(t *testing.T) {
	testenv.RequireRoot(t)
	nft := testenv.RequireBinary(t, "nft")
	run(t, nft, "-c", "-f", "gateway.nft")
}

// TestGatewayRulesetTraffic loads the ruleset (twice: it must be
// idempotent) in a namespace standing in for the gateway host, whose WAN
// interface is eth0, and sends from a client namespace: IKE and NAT-T pass,
// L2TP from outside and the metrics port from a non-admin address are
// dropped and counted.
func TestGatewayRulesetTraffic(t *testing.T) {
	testenv.RequireRoot(t)
	nft := testenv.RequireBinary(t, "nft")
	ip := testenv.RequireBinary(t, "ip")
	gw := fmt.Sprintf("fgnft%dg", os.Getpid())
	cl := fmt.Sprintf("fgnft%dc", os.Getpid())
	for _, ns := range []string{gw, cl} {
		run(t, ip, "netns", "add", ns)
		t.Cleanup(func() { _ = exec.Command(ip, "netns", "del", ns).Run() })
	}
	run(t, ip, "link", "add", "fgnftv", "netns", gw, "type", "veth", "peer", "name", "fgnftc", "netns", cl)
	inNS := func(ns string, args ...string) string {
		t.Helper()
		return run(t, ip, append([]string{"netns", "exec", ns}, args...)...)
	}
	inNS(gw, ip, "link", "set", "fgnftv", "name", "eth0")
	inNS(gw, ip, "addr", "add", "198.51.100.1/24", "dev", "eth0")
	inNS(gw, ip, "link", "set", "eth0", "up")
	inNS(cl, ip, "addr", "add", "198.51.100.2/24", "dev", "fgnftc")
	inNS(cl, ip, "link", "set", "fgnftc", "up")

	inNS(gw, nft, "-f", "gateway.nft")
	inNS(gw, nft, "-f", "gateway.nft")
	if n := strings.Count(inNS(gw, nft, "list", "tables"), "fleetgate"); n != 2 {
		t.Fatalf("after loading twice: %d fleetgate tables, want 2 (inet fleetgate, ip fleetgate_nat)", n)
	}

	reCounter := regexp.MustCompile(`packets (\d+)`)
	dropped := func() int {
		t.Helper()
		m := reCounter.FindStringSubmatch(inNS(gw, nft, "list", "counter", "inet", "fleetgate", "dropped_input"))
		if m == nil {
			t.Fatal("counter dropped_input not found")
		}
		n, _ := strconv.Atoi(m[1])
		return n
	}
	send := func(proto string, port int) {
		t.Helper()
		// bash's /dev/udp and /dev/tcp; a dropped SYN times out after 1s.
		script := fmt.Sprintf("echo probe > /dev/%s/198.51.100.1/%d", proto, port)
		_ = exec.Command(ip, "netns", "exec", cl, "timeout", "1", "bash", "-c", script).Run()
	}
	for _, tt := range []struct {
		name    string
		proto   string
		port    int
		dropped bool
	}{
		{"IKE", "udp", 500, false},
		{"NAT-T", "udp", 4500, false},
		{"L2TP outside ESP", "udp", 1701, true},
		{"metrics from a non-admin address", "tcp", 9410, true},
		{"SSH from a non-admin address", "tcp", 22, true},
	} {
		before := dropped()
		send(tt.proto, tt.port)
		after := dropped()
		if got := after > before; got != tt.dropped {
			t.Errorf("%s (%s/%d): dropped_input %d -> %d, dropped = %v, want %v", tt.name, tt.proto, tt.port, before, after, got, tt.dropped)
		}
	}
}
