package ctlsock

import (
	"net"
	"os"
	"path/filepath"
	"testing"
)

// The file appears with mode 0660 and accepts at once; a stale file is
// replaced; Close removes the file; no temporary file is left.
func TestListen(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "run", "gw.sock")
	if err := os.MkdirAll(filepath.Dir(path), 0o750); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, []byte("stale"), 0o600); err != nil {
		t.Fatal(err)
	}
	ln, err := Listen(path)
	if err != nil {
		t.Fatal(err)
	}
	fi, err := os.Stat(path)
	if err != nil || fi.Mode()&os.ModeSocket == 0 || fi.Mode().Perm() != Mode {
		t.Fatalf("socket file: %v %v, want a socket with mode %o", fi.Mode(), err, Mode)
	}
	accepted := make(chan error, 1)
	go func() {
		c, err := ln.Accept()
		if err == nil {
			c.Close()
		}
		accepted <- err
	}()
	c, err := net.Dial("unix", path)
	if err != nil {
		t.Fatalf("dial as soon as the file exists: %v", err)
	}
	c.Close()
	if err := <-accepted; err != nil {
		t.Fatal(err)
	}
	if err := ln.Close(); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(path); !os.IsNotExist(err) {
		t.Fatalf("after Close: %v, want the file gone", err)
	}
	if left, _ := filepath.Glob(filepath.Join(dir, "run", "*")); len(left) != 0 {
		t.Fatalf("files left: %v", left)
	}
	if _, err := Listen(filepath.Join(dir, "no\x00such", "x.sock")); err == nil {
		t.Fatal("Listen on an impossible path: got nil error")
	}
}
