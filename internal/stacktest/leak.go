package stacktest

import (
	"runtime"
	"strings"
	"testing"
	"time"
)

// CheckGoroutines records the goroutines running now and, when the test
// ends, fails it if new ones are still running after a grace period (cf.
// pion test.CheckRoutines, wireguard-go goroutineLeakCheck). Call it first in
// a test, before anything that starts goroutines.
func CheckGoroutines(t testing.TB) {
	t.Helper()
	before := goroutineIDs()
	t.Cleanup(func() {
		deadline := time.Now().Add(5 * time.Second)
		for {
			leaked := leakedSince(before)
			if len(leaked) == 0 {
				return
			}
			if time.Now().After(deadline) {
				t.Errorf("stacktest: %d goroutine(s) leaked:\n%s", len(leaked), strings.Join(leaked, "\n\n"))
				return
			}
			time.Sleep(20 * time.Millisecond)
		}
	})
}

func stacks() []string {
	buf := make([]byte, 1<<20)
	n := runtime.Stack(buf, true)
	return strings.Split(string(buf[:n]), "\n\n")
}

func goroutineIDs() map[string]bool {
	ids := map[string]bool{}
	for _, g := range stacks() {
		ids[goroutineHeader(g)] = true
	}
	return ids
}

// goroutineHeader returns "goroutine N" from a stack dump entry.
func goroutineHeader(g string) string {
	line, _, _ := strings.Cut(g, "\n")
	if i := strings.Index(line, " ["); i > 0 {
		return line[:i]
	}
	return line
}

func leakedSince(before map[string]bool) []string {
	var out []string
	for _, g := range stacks() {
		if before[goroutineHeader(g)] {
			continue
		}
		// The testing framework's own goroutines are not leaks.
		if strings.Contains(g, "testing.(*T).Run") || strings.Contains(g, "testing.tRunner") ||
			strings.Contains(g, "runtime.goexit") && strings.Contains(g, "created by runtime") ||
			strings.Contains(g, "os/signal.signal_recv") || strings.Contains(g, "runtime.ensureSigM") {
			continue
		}
		out = append(out, g)
	}
	return out
}
