// Package netns_test runs deploy/netns/fleetgate-netns.sh for real: the
// namespaces, the gateway with its TUN, the bridge, firmware-sim, a
// central mosquitto; then tears it all down.
package netns_test

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/fleetgate/fleetgate/internal/testenv"
)

// script runs fleetgate-netns.sh with env and returns its combined output.
func script(ctx context.Context, env []string, args ...string) (string, error) {
	cmd := exec.CommandContext(ctx, "./fleetgate-netns.sh", args...)
	cmd.Env = append(os.Environ(), env...)
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	cmd.WaitDelay = 5 * time.Second
	err := cmd.Run()
	return out.String(), err
}

// namespaces returns the namespaces whose names start with prefix+"-".
func namespaces(t *testing.T, prefix string) []string {
	t.Helper()
	out, err := exec.Command("ip", "netns", "list").Output()
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, l := range strings.Split(string(out), "\n") {
		if f := strings.Fields(l); len(f) > 0 && strings.HasPrefix(f[0], prefix+"-") {
			got = append(got, f[0])
		}
	}
	return got
}

// running reports whether pid is a live (not zombie) process.
func running(pid int) bool {
	if syscall.Kill(pid, 0) != nil {
		return false
	}
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return false
	}
	// pid (comm) STATE ...; comm may contain spaces and parentheses.
	s := string(b)
	i := strings.LastIndexByte(s, ')')
	return i < 0 || i+2 >= len(s) || s[i+2] != 'Z'
}

// TestUpStatusDown: `up` starts mosquitto, the CoAP collector, the gateway
// (TUN), the bridge and firmware-sim in their namespaces; telemetry from an
// MQTT device reaches the central mosquitto over the relay connection of
// its own 10.10.8.N address and CoAP telemetry reaches the central
// collector; an MQTT command published centrally (mosquitto_pub) and a
// CoAP GET from central (libcoap's coap-client) are answered by devices; `status` shows the gateway session and the uplink; a second
// `up` refuses; `down` leaves no namespace and no process.
func TestUpStatusDown(t *testing.T) {
	testenv.RequireRoot(t)
	for _, b := range []string{"ip", "nft", "ss", "mosquitto", "mosquitto_sub", "mosquitto_pub", "coap-client-openssl"} {
		testenv.RequireBinary(t, b)
	}
	bin := t.TempDir()
	t0 := time.Now()
	build := exec.Command("go", "build", "-ldflags=-s -w", "-o", bin+"/", "./gateway", "./bridge", "./firmware-sim")
	build.Dir = "../.."
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	t.Logf("go build: %v", time.Since(t0).Round(time.Millisecond))
	// Not fg<pid>x<n> (the tests' namespaces) and not the default
	// "fleetgate" a developer may have up.
	prefix := fmt.Sprintf("fleetgatetest%d", os.Getpid())
	state := t.TempDir()
	env := []string{"PREFIX=" + prefix, "STATE_DIR=" + state, "BIN_DIR=" + bin, "COAP=2", "MQTT=2", "INTERVAL=1s"}
	ctx, cancel := context.WithTimeout(context.Background(), 200*time.Second)
	defer cancel()
	downDone := false
	t.Cleanup(func() {
		if !downDone {
			out, err := script(context.Background(), env, "down")
			t.Logf("cleanup down: %v\n%s", err, out)
		}
	})
	start := time.Now()
	out, err := script(ctx, env, "up")
	if err != nil {
		t.Fatalf("up: %v\n%s", err, out)
	}
	t.Logf("up in %v:\n%s", time.Since(start).Round(time.Millisecond), out)
	dumpLogs := func() {
		for _, n := range []string{"gateway", "bridge", "fleet", "mosquitto", "collector"} {
			b, _ := os.ReadFile(filepath.Join(state, "logs", n+".log"))
			if len(b) > 3000 {
				b = b[len(b)-3000:]
			}
			t.Logf("---- %s.log (tail):\n%s", n, b)
		}
	}

	// MQTT: a subscriber in central sees sensor-3's telemetry as the
	// bridge's relay publishes it.
	sub := exec.CommandContext(ctx, "ip", "netns", "exec", prefix+"-central", "mosquitto_sub",
		"-h", "10.200.0.2", "-t", "sites/hall7/sensor-3/telemetry/#", "-v", "-C", "1", "-W", "20")
	got, err := sub.Output()
	if err != nil {
		dumpLogs()
		t.Fatalf("mosquitto_sub in central: %v (%q)", err, got)
	}
	if !strings.HasPrefix(string(got), "sites/hall7/sensor-3/telemetry/senml ") || !strings.Contains(string(got), `"bn":"sensor-3/"`) {
		t.Fatalf("central mosquitto_sub: got %q, want sensor-3's SenML on sites/hall7/sensor-3/telemetry/senml", got)
	}
	t.Logf("central mosquitto_sub: %s", bytes.TrimSpace(got))
	// ...published over the relay connection from sensor-3's own address.
	mlog, _ := os.ReadFile(filepath.Join(state, "logs", "mosquitto.log"))
	if !regexp.MustCompile(`New client connected from 10\.10\.8\.3:\d+ as hall7/sensor-3 `).Match(mlog) {
		dumpLogs()
		t.Fatalf("central mosquitto log: no connection from 10.10.8.3 as hall7/sensor-3:\n%s", mlog)
	}

	// status: processes, the gateway session, the bridge uplink and
	// endpoints, CoAP telemetry counted by the central collector.
	var st string
	deadline := time.Now().Add(20 * time.Second)
	re := regexp.MustCompile(`"sensor-1":\{"received":([0-9]+)`)
	for {
		st, err = script(ctx, env, "status")
		if err != nil {
			t.Fatalf("status: %v\n%s", err, st)
		}
		if m := re.FindStringSubmatch(st); m != nil && m[1] != "0" {
			break
		}
		if time.Now().After(deadline) {
			dumpLogs()
			t.Fatalf("status: no CoAP telemetry from sensor-1 at the central collector:\n%s", st)
		}
		time.Sleep(500 * time.Millisecond)
	}
	for _, want := range []*regexp.Regexp{
		regexp.MustCompile(`(?m)^  gateway +pid \d+ running$`),
		regexp.MustCompile(`(?m)^  fleet +pid \d+ running$`),
		regexp.MustCompile(`1 session\(s\)`),
		regexp.MustCompile(`(?m)^  hall7 +198\.51\.100\.2:\d+ +10\.10\.0\.\d+ +10\.10\.8\.0/24 `),
		regexp.MustCompile(`(?m)^  uplink: up gateway=203\.0\.113\.2:500`),
		regexp.MustCompile(`(?m)^  sensor-3 +10\.10\.8\.3 +mqtt +true `),
	} {
		if !want.MatchString(st) {
			t.Errorf("status: no match for %s in:\n%s", want, st)
		}
	}
	t.Logf("status:\n%s", st)

	// MQTT command central → device with the real mosquitto: published on
	// sites/hall7/sensor-4/cmd/ping, relayed by the bridge into sensor-4's
	// cmd/# subscription, answered by firmware-sim on status/cmd/ping and
	// relayed back. Published once a second until the reply is seen (the
	// subscriber may not be subscribed yet when the first one goes out).
	reply := exec.CommandContext(ctx, "ip", "netns", "exec", prefix+"-central", "mosquitto_sub",
		"-h", "10.200.0.2", "-t", "sites/hall7/sensor-4/status/#", "-v", "-C", "1", "-W", "25")
	var replyOut bytes.Buffer
	reply.Stdout = &replyOut
	if err := reply.Start(); err != nil {
		t.Fatal(err)
	}
	replyDone := make(chan error, 1)
	go func() { replyDone <- reply.Wait() }()
	var replyErr error
pub:
	for i := 1; ; i++ {
		if out, err := exec.CommandContext(ctx, "ip", "netns", "exec", prefix+"-central", "mosquitto_pub",
			"-h", "10.200.0.2", "-q", "1", "-t", "sites/hall7/sensor-4/cmd/ping", "-m", fmt.Sprintf("ping %d", i)).CombinedOutput(); err != nil {
			t.Fatalf("mosquitto_pub: %v\n%s", err, out)
		}
		select {
		case replyErr = <-replyDone:
			break pub
		case <-time.After(time.Second):
		}
	}
	if replyErr != nil || !strings.HasPrefix(replyOut.String(), "sites/hall7/sensor-4/status/cmd/ping ") || !strings.Contains(replyOut.String(), `"device":"sensor-4","command":"cmd/ping","payload":"ping `) {
		dumpLogs()
		t.Fatalf("command reply at central: %v %q, want sensor-4's reply on sites/hall7/sensor-4/status/cmd/ping", replyErr, replyOut.String())
	}
	t.Logf("MQTT command reply at central: %s", bytes.TrimSpace(replyOut.Bytes()))

	// CoAP central → device with libcoap from central: routed by gw's
	// kernel into the TUN, over the uplink to the bridge's proxy at
	// 10.10.8.1:5683 and on over sensor-1's DTLS session.
	coapOut, err := exec.CommandContext(ctx, "ip", "netns", "exec", prefix+"-central",
		"coap-client-openssl", "-B", "15", "coap://10.10.8.1/sensors/temp").Output()
	if err != nil || !bytes.Contains(coapOut, []byte("sensor-1/")) || !bytes.Contains(coapOut, []byte("Cel")) {
		dumpLogs()
		t.Fatalf("coap-client GET coap://10.10.8.1/sensors/temp from central: %v %q, want sensor-1's SenML reading", err, coapOut)
	}
	t.Logf("central → sensor-1 CoAP GET: %d bytes of SenML (CBOR) naming sensor-1/ in Cel", len(coapOut))

	// kill -9 of the gateway, restarted 0 s later (issue 16): the uplink
	// comes back on its own, and the CoAP count at the central collector
	// rises again within 10 s of the new gateway holding the site's session
	// (devices keep sending throughout; spooled telemetry drains).
	coapCount := func(st string) int {
		m := re.FindStringSubmatch(st)
		if m == nil {
			return -1
		}
		n, _ := strconv.Atoi(m[1])
		return n
	}
	session := regexp.MustCompile(`(?m)^  hall7 +198\.51\.100\.2:\d+ +10\.10\.0\.\d+ `)
	kill := time.Now()
	if out, err := script(ctx, env, "crash", "gateway"); err != nil {
		dumpLogs()
		t.Fatalf("crash gateway: %v\n%s", err, out)
	}
	var back time.Time
	before := -1
	for back.IsZero() || time.Since(back) < 10*time.Second {
		st, err := script(ctx, env, "status")
		if err != nil {
			t.Fatalf("status after the crash: %v\n%s", err, st)
		}
		if back.IsZero() && session.MatchString(st) {
			back, before = time.Now(), coapCount(st)
		} else if !back.IsZero() && coapCount(st) > before {
			t.Logf("gateway kill -9: site session on the new gateway %v after the kill; CoAP count at central rose (%d -> %d) %v after that (bound 10 s)",
				back.Sub(kill).Round(100*time.Millisecond), before, coapCount(st), time.Since(back).Round(100*time.Millisecond))
			break
		}
		if back.IsZero() && time.Since(kill) > 120*time.Second {
			dumpLogs()
			t.Fatalf("the site's session is not back on the restarted gateway 120 s after kill -9:\n%s", st)
		}
		time.Sleep(250 * time.Millisecond)
	}
	if !back.IsZero() && time.Since(back) >= 10*time.Second {
		dumpLogs()
		t.Fatalf("CoAP count at central did not rise within 10 s of the uplink being back (%d before)", before)
	}

	// up again refuses.
	if out, err := script(ctx, env, "up"); err == nil || !strings.Contains(out, "already up") {
		t.Errorf("second up: err %v, want a failure saying already up:\n%s", err, out)
	}

	// down: every process by its PID file, then the namespaces.
	var pids []int
	for _, n := range []string{"mosquitto", "collector", "gateway", "bridge", "fleet"} {
		b, err := os.ReadFile(filepath.Join(state, "run", n+".pid"))
		if err != nil {
			t.Fatalf("PID file of %s: %v", n, err)
		}
		pid, err := strconv.Atoi(strings.TrimSpace(string(b)))
		if err != nil || !running(pid) {
			t.Fatalf("%s: PID %q not running before down", n, b)
		}
		pids = append(pids, pid)
	}
	out, err = script(ctx, env, "down")
	downDone = true
	if err != nil {
		t.Fatalf("down: %v\n%s", err, out)
	}
	t.Logf("down:\n%s", out)
	if left := namespaces(t, prefix); len(left) > 0 {
		t.Errorf("namespaces left after down: %v", left)
	}
	for _, pid := range pids {
		if running(pid) {
			t.Errorf("PID %d still running after down", pid)
		}
	}
	if strings.Contains(out, "ignored SIGTERM") {
		t.Errorf("a process needed SIGKILL:\n%s", out)
	}
	// firmware-sim wrote its final report on SIGTERM.
	rep, err := os.ReadFile(filepath.Join(state, "fleet-report.json"))
	if err != nil || !bytes.Contains(rep, []byte(`"devices": 4`)) {
		t.Errorf("fleet report: %v\n%s", err, rep)
	}
	// ...counting the command(s) sensor-4 received and answered.
	if m := regexp.MustCompile(`"commands_received": ([1-9][0-9]*)`).FindSubmatch(rep); m == nil {
		t.Errorf("fleet report: no commands_received > 0 in totals:\n%s", rep)
	}
}
