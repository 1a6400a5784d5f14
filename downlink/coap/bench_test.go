package coap_test

import (
	"context"
	"net"
	"testing"
	"time"

	"github.com/pion/dtls/v3"

	"github.com/fleetgate/fleetgate/downlink/coap/coaptest"
)

// BenchmarkHandshakePSKBridge: full PSK handshake + first CoAP GET against
// the bridge's DTLS/CoAP server (registry lookup, CID, authentication).
func BenchmarkHandshakePSKBridge(b *testing.B) {
	f := newFixture(b, nil)
	benchBridge(b, f, coaptest.Options{Identity: "sensor-17", Key: f.key, Suites: []dtls.CipherSuiteID{dtls.TLS_PSK_WITH_AES_128_CCM_8}})
}

// BenchmarkHandshakeECDSABridge: the same with ECDHE-ECDSA certificates.
func BenchmarkHandshakeECDSABridge(b *testing.B) {
	f := newFixture(b, nil)
	benchBridge(b, f, coaptest.Options{Cert: &f.cert, RootCAs: f.ca.Pool, Suites: []dtls.CipherSuiteID{dtls.TLS_ECDHE_ECDSA_WITH_AES_128_CCM_8}})
}

func benchBridge(b *testing.B, f *fixture, o coaptest.Options) {
	for b.Loop() {
		d, err := coaptest.Dial(b, f.srv.Addr().String(), o)
		if err != nil {
			b.Fatal(err)
		}
		_ = d.Conn.Close()
	}
}

// BenchmarkHandshakePSKBarePion: bare pion listener + client, same suite.
func BenchmarkHandshakePSKBarePion(b *testing.B) {
	psk := func([]byte) ([]byte, error) { return []byte("0123456789abcdef0123456789abcdef"), nil }
	ln, err := dtls.ListenWithOptions("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)},
		dtls.WithPSK(psk), dtls.WithCipherSuites(dtls.TLS_PSK_WITH_AES_128_CCM_8))
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
				defer cancel()
				_ = c.(*dtls.Conn).HandshakeContext(ctx)
				_ = c.Close()
			}()
		}
	}()
	raddr := ln.Addr().(*net.UDPAddr)
	for b.Loop() {
		pc, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
		if err != nil {
			b.Fatal(err)
		}
		c, err := dtls.ClientWithOptions(pc, raddr, dtls.WithPSK(psk), dtls.WithPSKIdentityHint([]byte("x")), dtls.WithCipherSuites(dtls.TLS_PSK_WITH_AES_128_CCM_8))
		if err != nil {
			b.Fatal(err)
		}
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		if err := c.HandshakeContext(ctx); err != nil {
			b.Fatal(err)
		}
		cancel()
		c.Close()
		pc.Close()
	}
}
