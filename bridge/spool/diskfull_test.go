package spool

import (
	"bytes"
	"errors"
	"fmt"
	"os/exec"
	"testing"

	"github.com/fleetgate/fleetgate/internal/testenv"
)

// tinyDisk mounts a tmpfs of size bytes on a new directory (root only) and
// unmounts it at cleanup.
func tinyDisk(t *testing.T, size int) string {
	t.Helper()
	testenv.RequireRoot(t)
	testenv.RequireBinary(t, "mount")
	dir := t.TempDir()
	if out, err := exec.Command("mount", "-t", "tmpfs", "-o", fmt.Sprintf("size=%d,mode=0700", size), "fgspool", dir).CombinedOutput(); err != nil {
		t.Fatalf("mount tmpfs: %v: %s", err, out)
	}
	t.Cleanup(func() {
		if out, err := exec.Command("umount", dir).CombinedOutput(); err != nil {
			t.Errorf("umount %s: %v: %s", dir, err, out)
		}
	})
	return dir
}

// TestRealDiskFull: on a real filesystem that fills up (a 128 KiB tmpfs)
// appends are refused (ErrDiskFull) while room is left for the central
// broker's acknowledgements of everything queued: they need disk space too
// (without the reserve the 17th Ack failed and nothing could ever be freed).
// After they are recorded the space is reclaimed and the device can publish
// again; a restart sees exactly the messages queued after that.
func TestRealDiskFull(t *testing.T) {
	dir := tinyDisk(t, 128<<10)
	s := openT(t, Config{Dir: dir})
	payload := bytes.Repeat([]byte("x"), 1000)
	var seqs []uint64
	for i := 0; ; i++ {
		if i > 1000 {
			t.Fatal("1000 KiB appended to a 128 KiB disk")
		}
		seq, err := s.Append(Message{Endpoint: "a", Topic: "telemetry/t", QoS: 1, Payload: payload})
		if err != nil {
			if !errors.Is(err, ErrWrite) || !errors.Is(err, ErrDiskFull) {
				t.Fatalf("append %d on a full disk: got %v, want ErrWrite wrapping ErrDiskFull", i, err)
			}
			break
		}
		seqs = append(seqs, seq)
	}
	t.Logf("disk full after %d messages; refused for disk space %d, write errors %d", len(seqs), s.Stats().RefusedDisk.Load(), s.Stats().WriteErrors.Load())
	if s.Stats().RefusedDisk.Load() != 1 {
		t.Fatalf("RefusedDisk: got %d, want 1", s.Stats().RefusedDisk.Load())
	}
	for _, q := range seqs {
		if err := s.Ack("a", q); err != nil {
			t.Fatalf("ack %d of %d on the full disk: %v", q, len(seqs), err)
		}
	}
	if got := s.Stats().Queued.Load(); got != 0 {
		t.Fatalf("queued after acking everything: %d", got)
	}
	for i := 0; i < len(seqs); i++ {
		if _, err := s.Append(Message{Endpoint: "a", Topic: "telemetry/t", QoS: 1, Payload: []byte(fmt.Sprintf("%06d", i))}); err != nil {
			t.Fatalf("append %d after everything was acknowledged: %v", i, err)
		}
	}
	s.abandon()
	s2 := openT(t, Config{Dir: dir})
	if got := len(s2.Pending("a", 0, 10*len(seqs))); got != len(seqs) {
		t.Fatalf("after restart: %d pending, want %d", got, len(seqs))
	}
}
