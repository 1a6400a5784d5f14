package netns

import (
	"bufio"
	"fmt"
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/fleetgate/fleetgate/internal/testenv"
)

// killedHelper runs in the child test binary that TestKilledTestBinary
// kills with SIGKILL.
func killedHelper(t *testing.T) {
	p := Pair(t)
	proc := p.Host("b").Start(t, "sleep", "600")
	fmt.Printf("READY %d %s %s\n", proc.PID, p.Host("a").NS, p.Host("b").NS)
	time.Sleep(time.Minute) // killed by the parent long before
}

// TestKilledTestBinary: a test binary killed before its cleanups run
// leaves no process behind (Pdeathsig), and its namespaces are removed by
// the next topology built in any process (reapStale).
func TestKilledTestBinary(t *testing.T) {
	testenv.RequireRoot(t)
	if os.Getenv("FG_NETNS_HELPER") == "1" {
		killedHelper(t)
		return
	}
	cmd := exec.Command(os.Args[0], "-test.run=^TestKilledTestBinary$", "-test.v")
	cmd.Env = append(os.Environ(), "FG_NETNS_HELPER=1")
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = cmd.Process.Kill(); _ = cmd.Wait() })
	var pid int
	var nsA, nsB string
	sc := bufio.NewScanner(out)
	for sc.Scan() {
		if _, err := fmt.Sscanf(sc.Text(), "READY %d %s %s", &pid, &nsA, &nsB); err == nil {
			break
		}
	}
	if pid == 0 {
		t.Fatal("helper never became ready")
	}
	if err := cmd.Process.Kill(); err != nil {
		t.Fatal(err)
	}
	_ = cmd.Wait()
	deadline := time.Now().Add(20 * time.Second) // a loaded box reaps late
	for unix.Kill(pid, 0) == nil {
		if time.Now().After(deadline) {
			_ = unix.Kill(pid, unix.SIGKILL)
			t.Fatalf("process %d outlived the killed test binary", pid)
		}
		time.Sleep(20 * time.Millisecond) // waiting for the kernel to reap it
	}
	list := func() string { b, _ := exec.Command("ip", "netns", "list").Output(); return string(b) }
	if l := list(); !strings.Contains(l, nsA) {
		// Another test process (go test runs packages side by side)
		// built a topology since the kill, and its reapStale removed
		// them: the behaviour under test, from another process.
		for end := time.Now().Add(10 * time.Second); strings.Contains(l, nsB); l = list() {
			if time.Now().After(end) { // that reaper deletes them one by one
				t.Fatalf("namespace %s reaped but %s left:\n%s", nsA, nsB, l)
			}
			time.Sleep(50 * time.Millisecond)
		}
		t.Logf("namespaces %s %s already reaped by another process's topology", nsA, nsB)
		return
	}
	reapStaleNow()
	if l := list(); strings.Contains(l, nsA) || strings.Contains(l, nsB) {
		t.Errorf("stale namespaces %s %s not reaped:\n%s", nsA, nsB, l)
	}
}
