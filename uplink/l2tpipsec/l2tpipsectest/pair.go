// Package l2tpipsectest brings up a client and a server uplink (l2tpipsec.Dial and
// l2tpipsec.NewServer) connected by in-memory pipes (stacktest.Pipe dressed up as
// UDP sockets with esptest.Wrap), on a fake clock by default, for the tests
// of the packages built on the uplink (gateway, bridge).
package l2tpipsectest

import (
	"context"
	"net"
	"net/netip"
	"sync/atomic"
	"testing"
	"time"

	"github.com/fleetgate/fleetgate/internal/stacktest"
	"github.com/fleetgate/fleetgate/uplink/clock"
	"github.com/fleetgate/fleetgate/uplink/esp/esptest"
	"github.com/fleetgate/fleetgate/uplink/l2tpipsec"
	"github.com/fleetgate/fleetgate/uplink/ppp"
)

// Addresses the pair uses: TEST-NET outer addresses, VPN addresses inside.
var (
	ClientOuter = netip.MustParseAddr("192.0.2.10")
	ServerOuter = netip.MustParseAddr("203.0.113.1")
	ClientAddr  = netip.MustParseAddr("10.10.8.17")
	ServerAddr  = netip.MustParseAddr("10.10.0.1")
	DNS         = netip.MustParseAddr("10.10.0.53")
)

// Credentials the pair uses.
const (
	PSK      = "l2tpipsectest-psk"
	User     = "site1"
	Password = "pw-site1"
)

// Options shape a pair. The zero value gives a lossless pipe, a fake clock,
// PSK authentication, ECP-256 phase 1 and MS-CHAPv2.
type Options struct {
	// RealClock runs the pair on clock.System instead of a fake clock.
	RealClock bool
	// Impairment applies to both directions of both pipes.
	Impairment stacktest.Impairment
	// Seed is the impairment PRNG seed.
	Seed uint64
	// Client and Server edit the configurations before use.
	Client func(*l2tpipsec.ClientConfig)
	Server func(*l2tpipsec.ServerConfig)
}

// Pair is a client tunnel and the server it is connected to.
type Pair struct {
	Client *l2tpipsec.Tunnel
	Server *l2tpipsec.Server
	// Session is the server's side of the client's session.
	Session *l2tpipsec.ServerSession
	// Clock is the fake clock (nil with RealClock).
	Clock *stacktest.Clock
	// Link can cut the pipes (both directions) to simulate a dead peer.
	Link *Link
	// ClientConfig and ServerConfig are what was used.
	ClientConfig l2tpipsec.ClientConfig
	ServerConfig l2tpipsec.ServerConfig
	// Sessions receives every server session that reaches IPCP.
	Sessions chan *l2tpipsec.ServerSession
}

// Link drops every datagram written while it is down.
type Link struct{ down atomic.Bool }

// SetDown cuts (true) or restores (false) the link.
func (l *Link) SetDown(down bool) { l.down.Store(down) }

type cutConn struct {
	net.PacketConn
	l *Link
}

func (c cutConn) WriteTo(b []byte, a net.Addr) (int, error) {
	if c.l.down.Load() {
		return len(b), nil
	}
	return c.PacketConn.WriteTo(b, a)
}

// NewPair starts a server and dials it; it fails the test if the client
// does not reach IPCP Opened. Everything is closed in t.Cleanup.
func NewPair(t testing.TB, o Options) *Pair {
	t.Helper()
	p, err := Start(t, o)
	if err != nil {
		t.Fatalf("l2tpipsectest: dial: %v", err)
	}
	select {
	case p.Session = <-p.Sessions:
	case <-time.After(30 * time.Second):
		t.Fatal("l2tpipsectest: server session never reached IPCP")
	}
	return p
}

// Start is NewPair without the success requirement: it returns the Dial
// error (Client is nil then) so tests can check failures.
func Start(t testing.TB, o Options) (*Pair, error) {
	t.Helper()
	p := &Pair{Link: &Link{}, Sessions: make(chan *l2tpipsec.ServerSession, 16)}
	var clock clock.Clock = clock.System
	if !o.RealClock {
		p.Clock = stacktest.NewClock()
		clock = p.Clock
	}
	pc := stacktest.PipeConfig{AtoB: o.Impairment, BtoA: o.Impairment, Seed: o.Seed}
	ikePipe, nattPipe := stacktest.NewPipe(pc), stacktest.NewPipe(pc)
	cIKE, cNATT := netip.AddrPortFrom(ClientOuter, 500), netip.AddrPortFrom(ClientOuter, 4500)
	sIKE, sNATT := netip.AddrPortFrom(ServerOuter, 500), netip.AddrPortFrom(ServerOuter, 4500)

	p.ServerConfig = l2tpipsec.ServerConfig{
		IKEConn:  esptest.Wrap(cutConn{ikePipe.B, p.Link}, sIKE, cIKE),
		NATTConn: esptest.Wrap(cutConn{nattPipe.B, p.Link}, sNATT, cNATT),
		PSK:      func(netip.Addr) ([]byte, bool) { return []byte(PSK), true },
		IKEOptions: l2tpipsec.IKEOptions{
			IKEProposals: "aes256-sha256-ecp256,aes256-sha256-modp2048",
		},
		Authenticator: ppp.LocalUsers{User: Password},
		AddressFunc: func(context.Context, string) (ppp.Assignment, error) {
			return ppp.Assignment{Addr: ClientAddr, DNS: [2]netip.Addr{DNS}}, nil
		},
		LocalAddr: ServerAddr,
		HostName:  "l2tpipsectest-gw",
		OnSession: func(s *l2tpipsec.ServerSession) { p.Sessions <- s },
		Clock:     clock,
	}
	if o.Server != nil {
		o.Server(&p.ServerConfig)
	}
	srv, err := l2tpipsec.NewServer(p.ServerConfig)
	if err != nil {
		t.Fatalf("l2tpipsectest: server: %v", err)
	}
	p.Server = srv
	t.Cleanup(func() { srv.Close() })

	p.ClientConfig = l2tpipsec.ClientConfig{
		Gateway:  sIKE.String(),
		IKEConn:  esptest.Wrap(cutConn{ikePipe.A, p.Link}, cIKE, sIKE),
		NATTConn: esptest.Wrap(cutConn{nattPipe.A, p.Link}, cNATT, sNATT),
		PSK:      []byte(PSK),
		IKEOptions: l2tpipsec.IKEOptions{
			IKEProposals: "aes256-sha256-ecp256",
		},
		Username: User, Password: Password,
		HostName: "l2tpipsectest-site",
		Clock:    clock,
	}
	if o.Client != nil {
		o.Client(&p.ClientConfig)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	type result struct {
		c   *l2tpipsec.Tunnel
		err error
	}
	ch := make(chan result, 1)
	go func() {
		c, err := l2tpipsec.Dial(ctx, p.ClientConfig)
		ch <- result{c, err}
	}()
	var r result
	if p.Clock != nil {
		// Time must pass for retransmissions (a PPP Configure-Request can
		// arrive before the far end's frame handler is set), but slowly
		// enough (about 10x) that set-up timeouts cannot fire on a busy box.
	drive:
		for {
			select {
			case r = <-ch:
				break drive
			default:
				p.Clock.Advance(10 * time.Millisecond)
				time.Sleep(time.Millisecond) // let the stacks run between ticks
			}
		}
	} else {
		r = <-ch
	}
	if r.err != nil {
		return p, r.err
	}
	p.Client = r.c
	t.Cleanup(func() { CloseDriven(p.Clock, r.c.Close) })
	return p, nil
}

// CloseDriven runs closeFn while advancing clock (if not nil), so that a
// graceful close whose peer went quiet still runs out its retransmissions.
func CloseDriven(clock *stacktest.Clock, closeFn func() error) {
	done := make(chan struct{})
	go func() { _ = closeFn(); close(done) }()
	if clock == nil {
		<-done
		return
	}
	for {
		select {
		case <-done:
			return
		case <-time.After(2 * time.Millisecond):
			clock.Advance(100 * time.Millisecond)
		}
	}
}

// Drive advances clock by step until cond holds, failing the test after
// timeout of real time.
func Drive(t testing.TB, clock *stacktest.Clock, step, timeout time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("l2tpipsectest: timed out waiting for %s", what)
		}
		if clock != nil {
			clock.Advance(step)
		}
		time.Sleep(time.Millisecond) // let the stacks react to the tick
	}
}
