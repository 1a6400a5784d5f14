package suite

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"runtime/pprof"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/pion/dtls/v3"

	"github.com/fleetgate/fleetgate/downlink/coap"
	"github.com/fleetgate/fleetgate/downlink/registry"
)

// dtlsWorkers handshakes run concurrently in one sample.
const dtlsWorkers = 4

// handshakes runs n client handshakes against addr (dtlsWorkers at a
// time), each on a fresh socket, and returns one sample.
func handshakes(n int, addr *net.UDPAddr, opts func(worker int) []dtls.ClientOption) (Sample, error) {
	var next atomic.Int64
	var firstErr error
	var mu sync.Mutex
	var wg sync.WaitGroup
	cpu0 := cpuTime()
	t0 := time.Now()
	for w := range dtlsWorkers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for next.Add(1) <= int64(n) {
				if err := oneHandshake(addr, opts(w)); err != nil {
					mu.Lock()
					if firstErr == nil {
						firstErr = err
					}
					mu.Unlock()
					return
				}
			}
		}()
	}
	wg.Wait()
	el := time.Since(t0)
	if firstErr != nil {
		return Sample{}, firstErr
	}
	return Sample{Rate: float64(n) / el.Seconds(), CPUPerOp: (cpuTime() - cpu0) / time.Duration(n)}, nil
}

// srcSeq numbers client handshakes: each binds its own loopback source
// address, so no 4-tuple is reused while the server still holds the
// previous session on it (a reused ephemeral port sent the new
// ClientHello into the old session about once in a few hundred
// handshakes and failed the sample).
var srcSeq atomic.Uint32

func oneHandshake(addr *net.UDPAddr, opts []dtls.ClientOption) error {
	k := srcSeq.Add(1)
	src := net.IPv4(127, 3, byte(k/250%250), byte(k%250+1))
	pc, err := net.ListenUDP("udp4", &net.UDPAddr{IP: src})
	if err != nil {
		return err
	}
	defer pc.Close()
	c, err := dtls.ClientWithOptions(pc, addr, opts...)
	if err != nil {
		return err
	}
	defer c.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	return c.HandshakeContext(ctx)
}

// benchDTLS is measurement 4: DTLS 1.2 handshakes/s through the bridge's
// DTLS/CoAP server (downlink/coap: registry lookup, CID, session
// bookkeeping) vs a bare pion/dtls v3 listener with the same suite,
// credentials and client, on loopback.
func benchDTLS(o *Options, rep *Report) {
	_, msg, err := runScoped("dtls", func(t testing.TB) {
		reg, err := registry.Open("", netip.MustParsePrefix("10.10.8.0/24"))
		if err != nil {
			t.Fatal(err)
		}
		ca, err := registry.LoadOrCreateCA(t.TempDir(), "bench")
		if err != nil {
			t.Fatal(err)
		}
		// One endpoint per client worker: the bridge keeps one session per
		// endpoint and closes the previous one when a new one comes up, so
		// workers sharing an identity cut each other's handshakes short.
		var psks []registry.Endpoint
		var devCerts []tls.Certificate
		for w := range dtlsWorkers {
			pp, err := registry.Provision(reg, nil, registry.Request{Name: fmt.Sprintf("sensor-%d", 1+w)})
			if err != nil {
				t.Fatal(err)
			}
			psks = append(psks, pp.Endpoint)
			pc, err := registry.Provision(reg, ca, registry.Request{Name: fmt.Sprintf("sensor-%d", 11+w), Cert: true})
			if err != nil {
				t.Fatal(err)
			}
			devCert, err := tls.X509KeyPair(pc.CertPEM, pc.KeyPEM)
			if err != nil {
				t.Fatal(err)
			}
			devCerts = append(devCerts, devCert)
		}
		srvCert, err := ca.IssueTLS("bridge", 1, "bridge", "127.0.0.1")
		if err != nil {
			t.Fatal(err)
		}
		// pprof labels side=bridge / side=bare (inherited by every
		// goroutine the servers start) and client=… let a -cpuprofile of
		// this pair be split per side: go tool pprof -tagfocus side=bridge.
		var srv *coap.Server
		pprof.Do(context.Background(), pprof.Labels("side", "bridge"), func(context.Context) {
			srv, err = coap.New(coap.Config{ListenAddr: "127.0.0.1:0", Registry: reg, ClientCAs: ca.Pool, Certificate: &srvCert, Rate: -1, Logger: quietLog})
			if err == nil {
				go func() { _ = srv.Serve() }()
			}
		})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(srv.Close)
		var bare *net.UDPAddr
		pprof.Do(context.Background(), pprof.Labels("side", "bare"), func(context.Context) {
			bare = bareDTLS(t, reg, &srvCert, ca.Pool)
		})
		cases := []struct {
			name  string
			suite dtls.CipherSuiteID
			opts  func(w int) []dtls.ClientOption
		}{
			{"PSK (TLS_PSK_WITH_AES_128_CCM_8)", dtls.TLS_PSK_WITH_AES_128_CCM_8, func(w int) []dtls.ClientOption {
				psk := psks[w].PSK
				return []dtls.ClientOption{dtls.WithPSK(func([]byte) ([]byte, error) { return psk, nil }),
					dtls.WithPSKIdentityHint([]byte(psks[w].PSKIdentity)), dtls.WithCipherSuites(dtls.TLS_PSK_WITH_AES_128_CCM_8),
					dtls.WithExtendedMasterSecret(dtls.RequestExtendedMasterSecret)}
			}},
			{"ECDHE-ECDSA P-256 (TLS_ECDHE_ECDSA_WITH_AES_128_CCM_8)", dtls.TLS_ECDHE_ECDSA_WITH_AES_128_CCM_8, func(w int) []dtls.ClientOption {
				return []dtls.ClientOption{dtls.WithCertificates(devCerts[w]), dtls.WithRootCAs(ca.Pool), dtls.WithServerName("bridge"),
					dtls.WithCipherSuites(dtls.TLS_ECDHE_ECDSA_WITH_AES_128_CCM_8), dtls.WithExtendedMasterSecret(dtls.RequestExtendedMasterSecret)}
			}},
		}
		for i, c := range cases {
			if !strings.Contains(o.DTLSCases, []string{"psk", "ecdsa"}[i]) {
				continue
			}
			title := "Bridge DTLS handshakes, " + c.name
			n := o.Handshakes
			rows := alternate(o.Reps, []string{"bridge (downlink/coap)", "bare pion/dtls v3"}, []func() (Sample, error){
				func() (s Sample, err error) {
					pprof.Do(context.Background(), pprof.Labels("client", "bridge"), func(context.Context) {
						s, err = handshakes(n, srv.Addr().(*net.UDPAddr), c.opts)
					})
					return s, err
				},
				func() (s Sample, err error) {
					pprof.Do(context.Background(), pprof.Labels("client", "bare"), func(context.Context) {
						s, err = handshakes(n, bare, c.opts)
					})
					return s, err
				},
			})
			rep.add(title, "handshakes/s", rows)
			goal := 0.0
			if i == 0 {
				goal = 0.95 // issue 19's goal is for PSK handshakes
			}
			rep.ratio(title, "bridge / bare pion ("+c.name+")", rows, "bridge (downlink/coap)", "bare pion/dtls v3", goal)
			if b, p := medianRate(rows, "bridge (downlink/coap)"), medianRate(rows, "bare pion/dtls v3"); goal > 0 && p > 0 && b/p < goal {
				// Missed: where each server's CPU goes (its goroutines only, by
				// their pprof label; the garbage collector is not counted).
				for _, side := range []struct {
					label, name string
					addr        *net.UDPAddr
				}{
					{"side=bridge", "bridge", srv.Addr().(*net.UDPAddr)}, {"side=bare", "bare pion", bare}} {
					areas, err := profileAreas(side.label, func() { _, _ = handshakes(n, side.addr, c.opts) })
					if err != nil {
						rep.note("dtls %s: no profile: %v", c.name, err)
						break
					}
					rep.note("dtls %s, goal missed: where the %s server's CPU goes (one more sample, profiled): %s", c.name, side.name, describeAreas(areas))
				}
			}
		}
		rep.note("dtls: %d handshakes per sample, %d client workers, fresh client socket each, loopback; bridge counted %d OK, %d failed, %d hellos deferred by the CPU budget",
			o.Handshakes, dtlsWorkers, srv.Stats.HandshakesOK.Load(), srv.Stats.HandshakeFailures.Load(), srv.Stats.BudgetDeferred.Load())
	})
	if err != nil {
		rep.note("dtls failed: %v", err)
	} else if msg != "" {
		rep.note("dtls: %s", msg)
	}
}

// bareDTLS is a bare pion listener with the bridge's suites, PSKs (looked
// up by identity in the same registry) and certificate: it completes each handshake and holds the session until
// the client closes it.
func bareDTLS(t testing.TB, reg *registry.Registry, cert *tls.Certificate, cas *x509.CertPool) *net.UDPAddr {
	ln, err := dtls.ListenWithOptions("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)},
		dtls.WithPSK(func(id []byte) ([]byte, error) {
			if k, ok := reg.PSK(string(id)); ok {
				return k, nil
			}
			return nil, errors.New("unknown identity")
		}),
		dtls.WithCipherSuites(dtls.TLS_PSK_WITH_AES_128_CCM_8, dtls.TLS_ECDHE_ECDSA_WITH_AES_128_CCM_8),
		dtls.WithCertificates(*cert), dtls.WithClientCAs(cas), dtls.WithClientAuth(dtls.VerifyClientCertIfGiven),
		dtls.WithExtendedMasterSecret(dtls.RequestExtendedMasterSecret))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
				defer cancel()
				if c.(*dtls.Conn).HandshakeContext(ctx) == nil {
					// Hold the session until the client closes it, as the
					// bridge does (closing at once raced the client's end
					// of the handshake: it saw close_notify first).
					buf := make([]byte, 1500)
					for {
						if _, err := c.Read(buf); err != nil {
							break
						}
					}
				}
				_ = c.Close()
			}()
		}
	}()
	return ln.Addr().(*net.UDPAddr)
}
