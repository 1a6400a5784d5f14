package suite

import (
	"io"
	"os"
	"os/exec"
	"syscall"
	"testing"
	"time"
)

// launch starts cmd, a helper child (this executable with a -helper-*
// flag), with its stdin piped (the child exits when it closes), its stdout
// piped when withOut (else out is nil), stderr shared, and SIGKILL should
// this process die first.
func launch(t testing.TB, cmd *exec.Cmd, withOut bool) (in io.WriteCloser, out io.ReadCloser) {
	t.Helper()
	in, err := cmd.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	if withOut {
		if out, err = cmd.StdoutPipe(); err != nil {
			t.Fatal(err)
		}
	}
	cmd.Stderr = os.Stderr
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	return in, out
}

// waitOrKill waits for a started helper to exit (its stdin closed) and
// kills it after grace.
func waitOrKill(cmd *exec.Cmd, grace time.Duration) {
	waited := make(chan struct{})
	go func() { _ = cmd.Wait(); close(waited) }()
	select {
	case <-waited:
	case <-time.After(grace):
		_ = cmd.Process.Kill()
		<-waited
	}
}

// stopOnCleanup closes the helper's stdin when the test ends and waits for
// it (waitOrKill).
func stopOnCleanup(t testing.TB, cmd *exec.Cmd, in io.Closer, grace time.Duration) {
	t.Cleanup(func() {
		_ = in.Close()
		waitOrKill(cmd, grace)
	})
}
