package l2tpipsec_test

import (
	"bytes"
	"encoding/json"
	"errors"
	"log/slog"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/fleetgate/fleetgate/internal/stacktest"
	"github.com/fleetgate/fleetgate/uplink/ike"
	"github.com/fleetgate/fleetgate/uplink/l2tp"
	"github.com/fleetgate/fleetgate/uplink/l2tpipsec"
	"github.com/fleetgate/fleetgate/uplink/l2tpipsec/l2tpipsectest"
	"github.com/fleetgate/fleetgate/uplink/ppp"
)

// TestDialFailurePhases: a wrong PSK fails in IKE phase 1, a wrong PPP
// password in PPP authentication, an ESP proposal the server refuses in
// Quick Mode; the server counts each.
func TestDialFailurePhases(t *testing.T) {
	tests := []struct {
		name    string
		client  func(*l2tpipsec.ClientConfig)
		phase   l2tpipsec.Phase
		wantErr error
		alt     l2tpipsec.Phase // also acceptable
		notify  ike.NotifyType  // the peer's notify the error must carry, if set
	}{
		{"wrong PSK", func(c *l2tpipsec.ClientConfig) { c.PSK = []byte("not-the-psk") }, l2tpipsec.PhaseIKE, nil, 0, 0},
		{"wrong password", func(c *l2tpipsec.ClientConfig) { c.Password = "wrong" }, l2tpipsec.PhasePPPAuth, ppp.ErrAuthFailed, 0, 0},
		// The server does not offer PAP: LCP cannot agree on a method. The
		// client sees either its own refusal or the server's CDN.
		{"PAP only, server refuses PAP", func(c *l2tpipsec.ClientConfig) { c.AuthMethods = []ppp.AuthMethod{ppp.AuthPAP} }, l2tpipsec.PhasePPPAuth, nil, l2tpipsec.PhasePPP, 0},
		// The gateway's NO-PROPOSAL-CHOSEN ends the set-up at once (IKE's
		// EventChildFailed), long before the default QuickModeTimeout.
		{"no common ESP proposal", func(c *l2tpipsec.ClientConfig) {
			c.ESPProposals = "aes128-sha1"
		}, l2tpipsec.PhaseQuickMode, nil, 0, ike.NotifyNoProposalChosen},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			stacktest.CheckGoroutines(t)
			p, err := l2tpipsectest.Start(t, l2tpipsectest.Options{
				Client: tt.client,
				Server: func(c *l2tpipsec.ServerConfig) { c.ESPProposals = "aes128gcm16,aes256-sha256" },
			})
			if err == nil {
				t.Fatalf("Dial succeeded, want a failure in %v", tt.phase)
			}
			if got := l2tpipsec.PhaseOf(err); got != tt.phase && (tt.alt == l2tpipsec.PhaseNone || got != tt.alt) {
				t.Fatalf("failed in phase %v (%v), want %v", got, err, tt.phase)
			}
			if tt.wantErr != nil && !errors.Is(err, tt.wantErr) {
				t.Fatalf("error %v, want %v", err, tt.wantErr)
			}
			if ne := (*ike.NotifyError)(nil); tt.notify != 0 && (!errors.As(err, &ne) || ne.Type != tt.notify) {
				t.Fatalf("error %v, want the peer's notify %d", err, tt.notify)
			}
			t.Logf("%s: %v", tt.name, err)
			st := p.Server.Stats()
			switch tt.phase {
			case l2tpipsec.PhaseIKE:
				l2tpipsectest.Drive(t, p.Clock, 100*time.Millisecond, 10*time.Second, "server counts the auth failure",
					func() bool { return st.IKE.AuthFailures.Load() > 0 })
			case l2tpipsec.PhasePPPAuth:
				l2tpipsectest.Drive(t, p.Clock, 100*time.Millisecond, 10*time.Second, "server counts the PPP failure",
					func() bool { return st.PPP.AuthFailures.Load() > 0 || st.PPP.LinksDown.Load() > 0 })
			}
		})
	}
}

// TestDeadPeerDetected: with the link cut, DPD (RFC 3706) or LCP echo
// ends the client's tunnel with the layer that noticed, and the server
// drops its session as well.
func TestDeadPeerDetected(t *testing.T) {
	tests := []struct {
		name   string
		client func(*l2tpipsec.ClientConfig)
		phase  l2tpipsec.Phase
		want   error
	}{
		{"DPD", func(c *l2tpipsec.ClientConfig) {
			c.DPDInterval, c.DPDTimeout = 10*time.Second, 30*time.Second
			c.EchoInterval = time.Hour
		}, l2tpipsec.PhaseIPsec, ike.ErrDeadPeer},
		{"LCP echo", func(c *l2tpipsec.ClientConfig) {
			c.DPDInterval = -1
			c.EchoInterval, c.EchoFailures = 5*time.Second, 3
		}, l2tpipsec.PhasePPP, ppp.ErrEchoTimeout},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			stacktest.CheckGoroutines(t)
			p := l2tpipsectest.NewPair(t, l2tpipsectest.Options{
				Client: tt.client,
				Server: func(c *l2tpipsec.ServerConfig) { c.EchoInterval, c.EchoFailures = 10*time.Second, 3 },
			})
			exchange(t, p, 0, 10)
			p.Link.SetDown(true)
			l2tpipsectest.Drive(t, p.Clock, 500*time.Millisecond, 20*time.Second, "client notices", func() bool {
				select {
				case <-p.Client.Done():
					return true
				default:
					return false
				}
			})
			err := p.Client.Err()
			if l2tpipsec.PhaseOf(err) != tt.phase || !errors.Is(err, tt.want) {
				t.Fatalf("client ended with %v, want phase %v and %v", err, tt.phase, tt.want)
			}
			l2tpipsectest.Drive(t, p.Clock, 500*time.Millisecond, 20*time.Second, "server session ends", func() bool {
				select {
				case <-p.Session.Done():
					return true
				default:
					return false
				}
			})
			t.Logf("client: %v; server session: %v", err, p.Session.Err())
		})
	}
}

// TestServerCloseTellsClient: Server.Close sends StopCCN and IKE Delete,
// so the client ends at once (no timeout) and can reconnect.
func TestServerCloseTellsClient(t *testing.T) {
	stacktest.CheckGoroutines(t)
	p := l2tpipsectest.NewPair(t, l2tpipsectest.Options{})
	exchange(t, p, 0, 10)
	p.Server.Close()
	select {
	case <-p.Client.Done():
	case <-time.After(10 * time.Second): // real time; the fake clock stands still
		t.Fatal("client did not notice the server's close without timers")
	}
	err := p.Client.Err()
	if !errors.Is(err, l2tp.ErrPeerStop) && !errors.Is(err, l2tpipsec.ErrIPsecLost) && !errors.Is(err, ppp.ErrPeerTerminated) {
		t.Fatalf("client ended with %v, want StopCCN or IPsec Delete", err)
	}
	t.Logf("client: %v", err)
	<-p.Session.Done()
}

// TestCloseDeadPeerBounded: Close with the peer gone quiet does not wait
// out PPP's and L2TP's retransmissions (about half a minute) but gives up
// after CloseTimeout.
func TestCloseDeadPeerBounded(t *testing.T) {
	stacktest.CheckGoroutines(t)
	p := l2tpipsectest.NewPair(t, l2tpipsectest.Options{})
	p.Link.SetDown(true)
	start := p.Clock.Now()
	l2tpipsectest.CloseDriven(p.Clock, p.Client.Close)
	if took := p.Clock.Now().Sub(start); took > 8*time.Second {
		t.Fatalf("Close took %v of clock time with a dead peer, want about %v", took, l2tpipsec.CloseTimeout)
	}
	if !errors.Is(p.Client.Err(), l2tpipsec.ErrClosed) {
		t.Fatalf("Err after Close: %v", p.Client.Err())
	}
}

// TestServerSessionCloseDeadClientBounded: the gateway kicking a session
// whose client went quiet returns after about CloseTimeout.
func TestServerSessionCloseDeadClientBounded(t *testing.T) {
	stacktest.CheckGoroutines(t)
	p := l2tpipsectest.NewPair(t, l2tpipsectest.Options{})
	p.Link.SetDown(true)
	start := p.Clock.Now()
	l2tpipsectest.CloseDriven(p.Clock, p.Session.Close)
	if took := p.Clock.Now().Sub(start); took > 8*time.Second {
		t.Fatalf("ServerSession.Close took %v of clock time with a dead client", took)
	}
	if p.Session.Err() == nil {
		t.Fatal("session has no end reason")
	}
	p.Link.SetDown(false)
}

// syncBuffer is a bytes.Buffer a logger and the test share.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// TestFailedLoginDuration: a session whose PPP login fails never came up;
// its "session closed" line says so and gives the time since the L2TP
// session arrived, not the time since year 1 ("duration":
// 9223372036854775807, the issue-22 trap). Real clock: with the fake
// one, driven fast while the stacks starve on a loaded machine, a set-up
// timeout could fire before the login and leave no session to log (once,
// three make test runs side by side).
func TestFailedLoginDuration(t *testing.T) {
	var logs syncBuffer
	_, err := l2tpipsectest.Start(t, l2tpipsectest.Options{RealClock: true,
		Client: func(c *l2tpipsec.ClientConfig) { c.Password = "wrong" },
		Server: func(c *l2tpipsec.ServerConfig) {
			c.Logger = slog.New(slog.NewJSONHandler(&logs, &slog.HandlerOptions{Level: slog.LevelInfo}))
		},
	})
	if err == nil {
		t.Fatal("Dial with a wrong password succeeded")
	}
	if got := l2tpipsec.PhaseOf(err); got != l2tpipsec.PhasePPPAuth {
		t.Fatalf("Dial failed in phase %v (%v), want %v; server log:\n%s", got, err, l2tpipsec.PhasePPPAuth, logs.String())
	}
	var line map[string]any
	closed := func() bool {
		for _, l := range strings.Split(logs.String(), "\n") {
			// The tunnel server's line (L2TP logs its own, with "layer").
			if strings.Contains(l, `"msg":"session closed"`) && !strings.Contains(l, `"layer"`) {
				return json.Unmarshal([]byte(l), &line) == nil
			}
		}
		return false
	}
	for deadline := time.Now().Add(20 * time.Second); !closed(); time.Sleep(5 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("no \"session closed\" line 20 s after the failed login (%v); server log:\n%s", err, logs.String())
		}
	}
	d, ok := line["duration"].(float64) // slog's JSON writes a Duration in nanoseconds
	if !ok || d < 0 || time.Duration(d) > time.Hour {
		t.Fatalf("failed login logged duration %v, want the (fake-clock) time since the session arrived; line %v", line["duration"], line)
	}
	if line["established"] != false {
		t.Fatalf("failed login logged established=%v, want false; line %v", line["established"], line)
	}
	t.Logf("failed login: duration %v", time.Duration(d))
}
