package procstat

import (
	"os"
	"runtime"
	"testing"
	"time"
)

// RSS of this process, by pid and as 0, is the same order of magnitude and
// grows when memory is touched; the watch sees that growth as its peak.
func TestRSSAndWatch(t *testing.T) {
	self, err := RSS(0)
	if err != nil || self <= 0 {
		t.Fatalf("RSS(0) = %d, %v", self, err)
	}
	byPID, err := RSS(os.Getpid())
	if err != nil || byPID < self/2 || byPID > self*2 {
		t.Fatalf("RSS(own pid) = %d, %v; RSS(0) = %d", byPID, err, self)
	}
	w := WatchRSS(0)
	buf := make([]byte, 64<<20)
	for i := 0; i < len(buf); i += 4096 {
		buf[i] = 1
	}
	// Let at least one sample see the touched pages.
	for deadline := time.Now().Add(10 * time.Second); w.peak.Load() < w.Base+32<<20 && time.Now().Before(deadline); {
		time.Sleep(time.Millisecond)
	}
	peak := w.Stop()
	runtime.KeepAlive(buf)
	if peak < w.Base+32<<20 {
		t.Fatalf("peak %d, base %d: the watch missed 64 MB touched", peak, w.Base)
	}
	if again := w.Stop(); again != peak {
		t.Fatalf("second Stop: %d, want %d", again, peak)
	}
	if _, err := RSS(1 << 30); err == nil {
		t.Fatal("RSS of a pid that cannot exist: got nil error")
	}
}
