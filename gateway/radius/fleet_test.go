package radius

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/fleetgate/fleetgate/internal/realpeer"
	"github.com/fleetgate/fleetgate/internal/testenv"
)

// TestFailoverAndSpool runs two real FreeRADIUS servers as one fail-over
// pool. With the first stopped, authentication continues on the second;
// with both stopped, requests fail at once (no timeout wait) and
// accounting Start/Stop records go to the spool file; the spool survives a
// "restart" (closed and reopened) and delivers every record, once, to a
// server started later, with Acct-Delay-Time.
func TestFailoverAndSpool(t *testing.T) {
	users := []realpeer.RADIUSUser{{Name: "ops", Password: "ops-pw"}}
	fr1 := realpeer.StartFreeRADIUS(t, nil, realpeer.FreeRADIUSConfig{Users: users})
	fr2 := realpeer.StartFreeRADIUS(t, nil, realpeer.FreeRADIUSConfig{Users: users})
	c := New(Config{Auth: fr1.Auth, AuthServers: []string{fr2.Auth}, Acct: fr1.Acct, AcctServers: []string{fr2.Acct},
		Secret: []byte(fr1.Secret), Timeout: 600 * time.Millisecond, DeadTime: time.Second})
	ctx := context.Background()
	pap := Request{Method: MethodPAP, User: "ops", Password: "ops-pw"}
	auth := func(what string) {
		t.Helper()
		res, err := c.Authenticate(ctx, pap)
		if err != nil || !res.Accept {
			t.Fatalf("%s: %v %+v", what, err, res)
		}
	}
	auth("both up")
	fr1.Proc.Stop()
	auth("first stopped")
	if c.Stats.Failovers.Load() == 0 || c.Stats.ServerDead.Load() == 0 {
		t.Errorf("failovers %d, dead %d: want both > 0", c.Stats.Failovers.Load(), c.Stats.ServerDead.Load())
	}
	// The Accept came from fr2 (fr1 is gone); its debug log may lag.
	for deadline := time.Now().Add(5 * time.Second); !strings.Contains(fr2.Log(), `User-Name = "ops"`); time.Sleep(20 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Errorf("the second server's log never showed the request")
			break
		}
	}
	auth("first still dead, straight to the second")

	path := filepath.Join(t.TempDir(), "acct.db")
	sp, err := OpenSpool(c, path, 0, nil)
	if err != nil {
		t.Fatal(err)
	}
	runCtx, stopRun := context.WithCancel(ctx)
	ran := make(chan struct{})
	go func() { sp.Run(runCtx, 300*time.Millisecond); close(ran) }()
	fr2.Proc.Stop()
	for i := 1; i <= 3; i++ {
		for _, st := range []AcctStatus{AcctStart, AcctStop} {
			if err := sp.Submit(AcctRecord{Status: st, SessionID: fmt.Sprintf("gw1-test-%d", i), User: "ops", FramedIP: netip.MustParseAddr("10.10.0.9")}); err != nil {
				t.Fatal(err)
			}
		}
	}
	// Both dead: authentication fails fast once both are marked.
	deadline := time.Now().Add(10 * time.Second)
	for !errors.Is(func() error { _, err := c.Authenticate(ctx, pap); return err }(), ErrAllDead) {
		if time.Now().After(deadline) {
			t.Fatal("never reported every server dead")
		}
	}
	start := time.Now()
	if _, err := c.Authenticate(ctx, pap); err != nil && !errors.Is(err, ErrNoServer) {
		t.Fatalf("all dead: %v", err)
	}
	t.Logf("with both servers dead an Access-Request fails in %v", time.Since(start))
	time.Sleep(1500 * time.Millisecond) // records wait at least a second: Acct-Delay-Time > 0
	stopRun()
	<-ran
	if err := sp.Close(false); err != nil {
		t.Fatal(err)
	}
	if q := sp.Stats.Queued.Load(); q != 6 {
		t.Fatalf("queued before restart: %d, want 6 (delivered %d)", q, sp.Stats.Delivered.Load())
	}

	// "Restart": a new client and spool from the same file; a server is
	// back on the second server's ports.
	port := netip.MustParseAddrPort(fr2.Auth).Port()
	fr3 := realpeer.StartFreeRADIUS(t, nil, realpeer.FreeRADIUSConfig{Users: users, Port: int(port)})
	c2 := New(Config{Auth: fr1.Auth, AuthServers: []string{fr2.Auth}, Acct: fr1.Acct, AcctServers: []string{fr2.Acct},
		Secret: []byte(fr1.Secret), Timeout: 600 * time.Millisecond, DeadTime: time.Second})
	sp2, err := OpenSpool(c2, path, 0, nil)
	if err != nil {
		t.Fatal(err)
	}
	if q := sp2.Stats.Queued.Load(); q != 6 {
		t.Fatalf("queued after reopening: %d, want 6", q)
	}
	runCtx2, stopRun2 := context.WithCancel(ctx)
	ran2 := make(chan struct{})
	go func() { sp2.Run(runCtx2, time.Second); close(ran2) }()
	deadline = time.Now().Add(30 * time.Second)
	for sp2.Stats.Queued.Load() > 0 && time.Now().Before(deadline) {
		time.Sleep(50 * time.Millisecond)
	}
	stopRun2()
	<-ran2
	_ = sp2.Close(false)
	detail := fr3.Detail()
	for i := 1; i <= 3; i++ {
		if n := strings.Count(detail, fmt.Sprintf(`Acct-Session-Id = "gw1-test-%d"`, i)); n != 2 {
			t.Errorf("session %d: %d records in the detail file, want 2 (Start and Stop, once each)", i, n)
		}
	}
	delays := regexp.MustCompile(`Acct-Delay-Time = (\d+)`).FindAllStringSubmatch(detail, -1)
	if len(delays) != 6 {
		t.Fatalf("Acct-Delay-Time in %d records, want 6:\n%s", len(delays), detail)
	}
	for _, d := range delays {
		if d[1] == "0" {
			t.Errorf("a spooled record was sent with Acct-Delay-Time 0")
		}
	}
	if got := strings.Count(detail, "Acct-Status-Type = "); got != 6 {
		t.Errorf("%d records delivered, want 6", got)
	}
	t.Logf("6 spooled records delivered after the restart, Acct-Delay-Time %v s; delivered %d, lost 0", delays, sp2.Stats.Delivered.Load())
}

// TestDAE drives the RFC 5176 listener with FreeRADIUS's radclient: a
// Disconnect-Request for a known session gets Disconnect-ACK, an unknown
// one Disconnect-NAK; a CoA with Filter-Id goes to the handler; a wrong
// secret is ignored and counted; garbage and a request naming no session
// are counted (garbage dropped, the other NAKed).
func TestDAE(t *testing.T) {
	radclient := testenv.RequireBinary(t, "radclient")
	var ended atomic.Int32 // Disconnects that ended a session (handler runs on Serve's goroutine)
	logs := &lockedLog{}
	d, err := ListenDAE(DAEConfig{Listen: "127.0.0.1:0", Secret: []byte("dae-secret"), Clients: []netip.Prefix{netip.MustParsePrefix("127.0.0.0/8")},
		Logger: slog.New(slog.NewTextHandler(logs, nil)),
		Disconnect: func(m SessionMatch) int {
			if m.SessionID == "gw1-abcd-5" {
				ended.Add(1)
				return 1
			}
			return 0
		},
		CoA: func(m SessionMatch, filter string) (int, error) {
			if filter != "quarantine" {
				return 0, errors.New("no such policy")
			}
			return 1, nil
		}})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go d.Serve(ctx)
	addr := d.Addr().String()
	run := func(kind, secret, attrs string) string {
		cmd := exec.Command(radclient, "-t", "1", "-r", "1", "-x", addr, kind, secret)
		cmd.Stdin = strings.NewReader(attrs)
		out, _ := cmd.CombinedOutput()
		return string(out)
	}
	if out := run("disconnect", "dae-secret", "Acct-Session-Id = \"gw1-abcd-5\"\n"); !strings.Contains(out, "Disconnect-ACK") {
		t.Errorf("disconnect known session:\n%s", out)
	}
	if n := ended.Load(); n != 1 {
		t.Errorf("handler called %d times, want 1", n)
	}
	if out := run("disconnect", "dae-secret", "Acct-Session-Id = \"nope\"\n"); !strings.Contains(out, "Disconnect-NAK") || !strings.Contains(out, "Session-Context-Not-Found") {
		t.Errorf("disconnect unknown session:\n%s", out)
	}
	if out := run("coa", "dae-secret", "User-Name = \"ops\"\nFilter-Id = \"quarantine\"\n"); !strings.Contains(out, "CoA-ACK") {
		t.Errorf("coa:\n%s", out)
	}
	if out := run("coa", "dae-secret", "User-Name = \"ops\"\nFilter-Id = \"nope\"\n"); !strings.Contains(out, "CoA-NAK") {
		t.Errorf("coa with an unknown filter:\n%s", out)
	}
	if out := run("disconnect", "dae-secret", "NAS-Identifier = \"x\"\n"); !strings.Contains(out, "Missing-Attribute") {
		t.Errorf("disconnect naming no session:\n%s", out)
	}
	if out := run("disconnect", "wrong-secret", "Acct-Session-Id = \"gw1-abcd-5\"\n"); strings.Contains(out, "Disconnect-ACK") || strings.Contains(out, "Disconnect-NAK") {
		t.Errorf("a wrong secret got an answer:\n%s", out)
	}
	if ended.Load() != 1 {
		t.Errorf("a wrong-secret request ended a session")
	}
	conn, err := net.Dial("udp", addr)
	if err != nil {
		t.Fatal(err)
	}
	// The last one is a CoA-Request (code 43) whose Filter-Id attribute
	// claims length 1: malformed.
	badCoA := append([]byte{43, 9, 0, 23}, make([]byte, 16)...)
	badCoA = append(badCoA, 11, 1, 'x')
	for _, g := range [][]byte{{40, 1, 0, 3}, []byte("garbage that is long enough to look like a header"), append([]byte{40, 1, 0, 30}, make([]byte, 26)...), badCoA} {
		_, _ = conn.Write(g)
	}
	conn.Close()
	deadline := time.Now().Add(5 * time.Second)
	for d.Stats.Malformed.Load() < 4 && time.Now().Before(deadline) {
		time.Sleep(20 * time.Millisecond)
	}
	st := &d.Stats
	t.Logf("ack %d nak %d coa-ack %d coa-nak %d malformed %d bad-authenticator %d", st.DisconnectACK.Load(), st.DisconnectNAK.Load(), st.CoAACK.Load(), st.CoANAK.Load(), st.Malformed.Load(), st.BadAuthenticator.Load())
	if st.BadAuthenticator.Load() < 1 || st.Malformed.Load() != 4 {
		t.Errorf("bad authenticator %d (want >= 1), malformed %d (want 4: 3 garbage + 1 CoA)", st.BadAuthenticator.Load(), st.Malformed.Load())
	}
	// Logged, rate-limited: one line per kind within the second.
	// (Bounds, not exact counts: a stalled box may spread the datagrams
	// over more than the one-second window.)
	if n := logs.count("wrong secret?"); n < 1 {
		t.Error("wrong-secret request not logged")
	}
	if n := logs.count("malformed request dropped"); n < 1 || n >= 4 {
		t.Errorf("4 malformed requests logged %d times, want 1..3 (rate limit)", n)
	}
	if logs.count("dae-secret") != 0 {
		t.Error("the DAE secret is in the log")
	}
	if st.DisconnectACK.Load() != 1 || st.CoAACK.Load() != 1 || st.CoANAK.Load() != 1 || st.DisconnectNAK.Load() != 2 {
		t.Errorf("replies: %+v", st)
	}
}

// lockedLog is a log sink safe for the listener's goroutine.
type lockedLog struct {
	mu sync.Mutex
	b  strings.Builder
}

func (l *lockedLog) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedLog) count(s string) int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return strings.Count(l.b.String(), s)
}
