package run

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"net"
	"net/netip"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/pion/dtls/v3"

	"github.com/fleetgate/fleetgate/downlink/coap"
	"github.com/fleetgate/fleetgate/downlink/device"
)

// dtlsWorkers handshakes run concurrently in one sample.
const dtlsWorkers = 4

// handshakes runs n client handshakes against addr (dtlsWorkers at a
// time), each on a fresh socket, and returns one sample.
func handshakes(n int, addr *net.UDPAddr, opts func() []dtls.ClientOption) (Sample, error) {
	var next atomic.Int64
	var firstErr error
	var mu sync.Mutex
	var wg sync.WaitGroup
	cpu0 := cpuTime()
	t0 := time.Now()
	for range dtlsWorkers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for next.Add(1) <= int64(n) {
				if err := oneHandshake(addr, opts()); err != nil {
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

func oneHandshake(addr *net.UDPAddr, opts []dtls.ClientOption) error {
	pc, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
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
		reg, err := device.Open("", netip.MustParsePrefix("10.10.8.0/24"))
		if err != nil {
			t.Fatal(err)
		}
		ca, err := device.LoadOrCreateCA(t.TempDir(), "bench")
		if err != nil {
			t.Fatal(err)
		}
		pp, err := device.Provision(reg, nil, device.Request{Name: "sensor-1"})
		if err != nil {
			t.Fatal(err)
		}
		pc, err := device.Provision(reg, ca, device.Request{Name: "sensor-2", Cert: true})
		if err != nil {
			t.Fatal(err)
		}
		devCert, err := tls.X509KeyPair(pc.CertPEM, pc.KeyPEM)
		if err != nil {
			t.Fatal(err)
		}
		srvCert, err := ca.IssueTLS("bridge", 1, "bridge", "127.0.0.1")
		if err != nil {
			t.Fatal(err)
		}
		srv, err := coap.New(coap.Config{ListenAddr: "127.0.0.1:0", Registry: reg, ClientCAs: ca.Pool, Certificate: &srvCert, Rate: -1, Logger: quietLog})
		if err != nil {
			t.Fatal(err)
		}
		go func() { _ = srv.Serve() }()
		t.Cleanup(srv.Close)
		psk, ident := pp.Endpoint.PSK, pp.Endpoint.PSKIdentity
		bare := bareDTLS(t, psk, &srvCert, ca.Pool)
		cases := []struct {
			name  string
			suite dtls.CipherSuiteID
			opts  func() []dtls.ClientOption
		}{
			{"PSK (TLS_PSK_WITH_AES_128_CCM_8)", dtls.TLS_PSK_WITH_AES_128_CCM_8, func() []dtls.ClientOption {
				return []dtls.ClientOption{dtls.WithPSK(func([]byte) ([]byte, error) { return psk, nil }),
					dtls.WithPSKIdentityHint([]byte(ident)), dtls.WithCipherSuites(dtls.TLS_PSK_WITH_AES_128_CCM_8),
					dtls.WithExtendedMasterSecret(dtls.RequestExtendedMasterSecret)}
			}},
			{"ECDHE-ECDSA P-256 (TLS_ECDHE_ECDSA_WITH_AES_128_CCM_8)", dtls.TLS_ECDHE_ECDSA_WITH_AES_128_CCM_8, func() []dtls.ClientOption {
				return []dtls.ClientOption{dtls.WithCertificates(devCert), dtls.WithRootCAs(ca.Pool), dtls.WithServerName("bridge"),
					dtls.WithCipherSuites(dtls.TLS_ECDHE_ECDSA_WITH_AES_128_CCM_8), dtls.WithExtendedMasterSecret(dtls.RequestExtendedMasterSecret)}
			}},
		}
		for _, c := range cases {
			title := "Bridge DTLS handshakes, " + c.name
			n := o.Handshakes
			rows := alternate(o.Reps, []string{"bridge (downlink/coap)", "bare pion/dtls v3"}, []func() (Sample, error){
				func() (Sample, error) { return handshakes(n, srv.Addr().(*net.UDPAddr), c.opts) },
				func() (Sample, error) { return handshakes(n, bare, c.opts) },
			})
			rep.add(title, "handshakes/s", rows)
			rep.ratio(title, "bridge / bare pion ("+c.name+")", rows, "bridge (downlink/coap)", "bare pion/dtls v3", 0.9)
		}
		rep.note("dtls: %d handshakes per sample, %d client workers, fresh client socket each, loopback; bridge counted %d OK, %d failed",
			o.Handshakes, dtlsWorkers, srv.Stats.HandshakesOK.Load(), srv.Stats.HandshakeFailures.Load())
	})
	if err != nil {
		rep.note("dtls failed: %v", err)
	} else if msg != "" {
		rep.note("dtls: %s", msg)
	}
}

// bareDTLS is a bare pion listener with the bridge's suites, PSK and
// certificate: it completes each handshake and closes.
func bareDTLS(t testing.TB, psk []byte, cert *tls.Certificate, cas *x509.CertPool) *net.UDPAddr {
	ln, err := dtls.ListenWithOptions("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)},
		dtls.WithPSK(func([]byte) ([]byte, error) { return psk, nil }),
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
				_ = c.(*dtls.Conn).HandshakeContext(ctx)
				_ = c.Close()
			}()
		}
	}()
	return ln.Addr().(*net.UDPAddr)
}
