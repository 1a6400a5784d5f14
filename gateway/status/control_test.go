package status

import (
	"context"
	"net"
	"net/http"
	"path/filepath"
	"testing"
)

// TestTerminateOverSocket: the client posts the identity over the unix
// socket, the handler closes what terminate says and reports the count;
// an http:// target is refused (actions are socket-only).
func TestTerminateOverSocket(t *testing.T) {
	sock := filepath.Join(t.TempDir(), "c.sock")
	ln, err := net.Listen("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	var asked []string
	srv := &http.Server{Handler: TerminateHandler(func(id string) int {
		asked = append(asked, id)
		if id == "site-hall7" {
			return 2
		}
		return 0
	})}
	go func() { _ = srv.Serve(ln) }()
	t.Cleanup(func() { _ = srv.Close() })
	ctx := context.Background()
	if n, err := Terminate(ctx, sock, "site-hall7"); err != nil || n != 2 {
		t.Fatalf("terminate site-hall7: %d, %v; want 2", n, err)
	}
	if n, err := Terminate(ctx, sock, "nobody"); err != nil || n != 0 {
		t.Fatalf("terminate nobody: %d, %v; want 0", n, err)
	}
	if _, err := Terminate(ctx, "http://127.0.0.1:9410", "x"); err == nil {
		t.Fatal("terminate over HTTP accepted, want the socket-only error")
	}
	if len(asked) != 2 || asked[0] != "site-hall7" || asked[1] != "nobody" {
		t.Fatalf("handler saw %v", asked)
	}
}
