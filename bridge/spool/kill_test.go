package spool

import (
	"bufio"
	"fmt"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"syscall"
	"testing"

	"github.com/fleetgate/fleetgate/internal/testenv"
)

// TestKill9Helper is the child process of TestKill9: it appends QoS 1
// messages as fast as it can, acks every third, and prints "ok <seq>"
// after each Append returned (the moment a broker would send PUBACK) and
// "ack <seq>" after each Ack.
func TestKill9Helper(t *testing.T) {
	dir := testenv.ChildProcess(t, "FLEETGATE_SPOOL_KILL_DIR", "TestKill9")
	s, err := Open(Config{Dir: dir, SegmentBytes: 16 << 10})
	if err != nil {
		fmt.Println("open:", err)
		os.Exit(1)
	}
	w := bufio.NewWriter(os.Stdout)
	for i := 0; ; i++ {
		seq, err := s.Append(Message{Endpoint: fmt.Sprintf("ep%d", i%4), Topic: "telemetry/n", QoS: 1, Payload: []byte(strconv.Itoa(i))})
		if err != nil {
			fmt.Fprintln(w, "err", err)
			continue
		}
		fmt.Fprintln(w, "ok", seq)
		if i%3 == 0 {
			if err := s.Ack(fmt.Sprintf("ep%d", i%4), seq); err == nil {
				fmt.Fprintln(w, "ack", seq)
			}
		}
		_ = w.Flush()
	}
}

// TestKill9 kills a process that is appending to the spool with SIGKILL
// at a random moment, several times over the same directory: every message
// whose Append had returned is recovered unless its Ack had returned too,
// and per-endpoint order holds.
func TestKill9(t *testing.T) {
	dir := t.TempDir()
	acked := map[uint64]bool{}
	appended := map[uint64]bool{}
	for round := 0; round < 3; round++ {
		cmd := exec.Command(os.Args[0], "-test.run=^TestKill9Helper$")
		cmd.Env = append(os.Environ(), "FLEETGATE_SPOOL_KILL_DIR="+dir)
		out, err := cmd.StdoutPipe()
		if err != nil {
			t.Fatal(err)
		}
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		sc := bufio.NewScanner(out)
		lines := 0
		killAt := 300 + round*250
		for sc.Scan() {
			f := strings.Fields(sc.Text())
			if len(f) == 2 {
				n, _ := strconv.ParseUint(f[1], 10, 64)
				switch f[0] {
				case "ok":
					appended[n] = true
				case "ack":
					acked[n] = true
				}
			}
			if lines++; lines == killAt {
				_ = cmd.Process.Signal(syscall.SIGKILL)
			}
		}
		_ = cmd.Wait()
		if lines < killAt {
			t.Fatalf("round %d: child printed only %d lines", round, lines)
		}
		s, err := Open(Config{Dir: dir, SegmentBytes: 16 << 10})
		if err != nil {
			t.Fatalf("round %d: reopen after SIGKILL: %v", round, err)
		}
		got := map[uint64]bool{}
		for _, ep := range []string{"ep0", "ep1", "ep2", "ep3"} {
			var last uint64
			for _, m := range s.Pending(ep, 0, 1<<20) {
				if m.Seq <= last {
					t.Fatalf("round %d: %s out of order", round, ep)
				}
				last = m.Seq
				got[m.Seq] = true
			}
		}
		var lost int
		for seq := range appended {
			if !acked[seq] && !got[seq] {
				lost++
			}
		}
		t.Logf("round %d: killed after %d lines; %d appended, %d acked so far; recovered %d live, torn tails %d, lost %d",
			round, lines, len(appended), len(acked), len(got), s.Stats().TornTails.Load(), lost)
		if lost > 0 {
			t.Fatalf("round %d: %d acknowledged-to-device messages lost", round, lost)
		}
		// Messages the child acked must stay gone.
		for seq := range acked {
			if got[seq] {
				t.Fatalf("round %d: acked seq %d resurrected", round, seq)
			}
		}
		_ = s.Close()
	}
}
