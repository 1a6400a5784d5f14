package l2tpipsec_test

import (
	"context"
	"fmt"
	"sync/atomic"
	"testing"
	"time"

	"github.com/fleetgate/fleetgate/internal/pkttest"
	"github.com/fleetgate/fleetgate/uplink/ike"
	"github.com/fleetgate/fleetgate/uplink/l2tpipsec"
	"github.com/fleetgate/fleetgate/uplink/l2tpipsec/l2tpipsectest"
)

// pump sends b.N packets of size bytes through write, at most window in
// flight (the receiver hands credits back), and reports received packets
// per second.
func pump(b *testing.B, size int, write func([]byte) error, setHandler func(func([]byte))) {
	const window = 256
	credits := make(chan struct{}, window)
	for range window {
		credits <- struct{}{}
	}
	var got atomic.Int64
	setHandler(func([]byte) {
		got.Add(1)
		select {
		case credits <- struct{}{}:
		default:
		}
	})
	pkt := pkttest.Tagged(l2tpipsectest.ClientAddr, l2tpipsectest.ServerAddr, 0, size)
	b.SetBytes(int64(size))
	b.ResetTimer()
	start := time.Now()
	for i := 0; i < b.N; i++ {
		select {
		case <-credits:
		case <-time.After(50 * time.Millisecond): // a lost packet's credit
		}
		if err := write(pkt); err != nil {
			b.Fatal(err)
		}
	}
	deadline := time.Now().Add(5 * time.Second)
	for got.Load() < int64(b.N) && time.Now().Before(deadline) {
		time.Sleep(100 * time.Microsecond)
	}
	el := time.Since(start)
	b.StopTimer()
	b.ReportMetric(float64(got.Load())/el.Seconds(), "pkts/s")
	b.ReportMetric(100*float64(int64(b.N)-got.Load())/float64(b.N), "%lost")
}

// BenchmarkThroughput: IPv4 packets from the client's WritePacket to the
// server session's handler through PPP, L2TP, ESP and UDP, in memory and
// over loopback UDP sockets.
func BenchmarkThroughput(b *testing.B) {
	for _, suite := range []string{"aes128gcm16", "aes128-sha1"} {
		for _, size := range []int{1400, 200} {
			b.Run(fmt.Sprintf("mem/%s/%d", suite, size), func(b *testing.B) {
				p := l2tpipsectest.NewPair(b, l2tpipsectest.Options{RealClock: true,
					Client: func(c *l2tpipsec.ClientConfig) { c.ESPProposals = suite }})
				pump(b, size, p.Client.WritePacket, p.Session.SetPacketHandler)
			})
			b.Run(fmt.Sprintf("loopback/%s/%d", suite, size), func(b *testing.B) {
				sessions := make(chan *l2tpipsec.ServerSession, 1)
				srv := loopbackServer(b, sessions)
				cfg := loopbackClient(srv, "site1", "pw1")
				cfg.ESPProposals = suite
				ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
				defer cancel()
				c, err := l2tpipsec.Dial(ctx, cfg)
				if err != nil {
					b.Fatal(err)
				}
				b.Cleanup(func() { c.Close() })
				ss := <-sessions
				pump(b, size, c.WritePacket, ss.SetPacketHandler)
			})
		}
	}
}

// BenchmarkSetup: complete set-ups (Main Mode, Quick Mode, L2TP tunnel and
// session, LCP, MS-CHAPv2, IPCP) per second in memory, one fresh server and
// client per set-up, with ECP-256 and MODP-2048 phase 1.
func BenchmarkSetup(b *testing.B) {
	for _, ike := range []string{"aes128-sha256-ecp256", "aes128-sha256-modp2048"} {
		b.Run(ike, func(b *testing.B) {
			opt := l2tpipsectest.Options{RealClock: true,
				Client: func(c *l2tpipsec.ClientConfig) { c.IKEProposals = ike },
				Server: func(c *l2tpipsec.ServerConfig) { c.IKEProposals = ike }}
			var el time.Duration
			for i := 0; i < b.N; i++ {
				start := time.Now()
				p, err := l2tpipsectest.Start(b, opt)
				if err != nil {
					b.Fatal(err)
				}
				el += time.Since(start)
				if p.Client.LocalAddr() != l2tpipsectest.ClientAddr {
					b.Fatalf("address %v", p.Client.LocalAddr())
				}
				b.StopTimer()
				p.Client.Close()
				p.Server.Close()
				b.StartTimer()
			}
			b.ReportMetric(float64(b.N)/el.Seconds(), "setups/s")
		})
	}
}

// BenchmarkSetupConcurrent: set-up capacity of one server over loopback
// UDP, 16 clients dialing at a time (each a complete IKE + L2TP + PPP
// set-up from its own ports), with ECP-256 and MODP-2048 phase 1.
func BenchmarkSetupConcurrent(b *testing.B) {
	for _, prop := range []string{"aes128-sha256-ecp256", "aes128-sha256-modp2048"} {
		b.Run(prop, func(b *testing.B) {
			sessions := make(chan *l2tpipsec.ServerSession, 64)
			srv := loopbackServer(b, sessions, func(c *l2tpipsec.ServerConfig) {
				c.IKEProposals = prop
				c.RatePerSource, c.BurstPerSource = 1e6, 1e6 // every client is 127.0.0.1
				c.OnSession = func(s *l2tpipsec.ServerSession) {}
			})
			cfg := loopbackClient(srv, "site1", "pw1")
			cfg.IKEProposals = prop
			sem := make(chan struct{}, 16)
			errs := make(chan error, b.N)
			tunnels := make(chan *l2tpipsec.Tunnel, b.N)
			b.ResetTimer()
			start := time.Now()
			for i := 0; i < b.N; i++ {
				sem <- struct{}{}
				go func() {
					defer func() { <-sem }()
					ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
					defer cancel()
					cfg := cfg
					// Own identities: INITIAL-CONTACT clears SAs of the same
					// identity from the same address.
					cfg.LocalID = &ike.Identification{Type: ike.IDFQDN, Data: []byte(fmt.Sprintf("site%d.bench", i))}
					c, err := l2tpipsec.Dial(ctx, cfg)
					if err != nil {
						errs <- err
						return
					}
					tunnels <- c
				}()
			}
			for range cap(sem) {
				sem <- struct{}{}
			}
			el := time.Since(start)
			b.StopTimer()
			close(errs)
			close(tunnels)
			for c := range tunnels {
				c.Close()
			}
			for err := range errs {
				b.Fatal(err)
			}
			b.ReportMetric(float64(b.N)/el.Seconds(), "setups/s")
		})
	}
}
