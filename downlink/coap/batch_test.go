package coap_test

import (
	"context"
	"net"
	"testing"
	"time"

	"github.com/pion/dtls/v3"
	coapdtls "github.com/plgd-dev/go-coap/v3/dtls"
	"github.com/plgd-dev/go-coap/v3/message/codes"

	"github.com/fleetgate/fleetgate/downlink/coap"
)

// TestListenIPv6: the guard reads its socket with recvmmsg through x/net's
// ipv6 PacketConn when the listener is IPv6 (ipv4's for IPv4, as in every
// other test): a device on ::1 handshakes (cookie exchange included) and
// gets its answer.
func TestListenIPv6(t *testing.T) {
	pc, err := net.ListenUDP("udp6", &net.UDPAddr{IP: net.IPv6loopback})
	if err != nil {
		t.Fatalf("no IPv6 loopback on this host: %v", err)
	}
	defer pc.Close()
	f := newFixture(t, func(c *coap.Config) { c.ListenAddr = "[::1]:0" })
	key := f.key
	dc, err := dtls.ClientWithOptions(pc, f.srv.Addr(), dtls.WithPSK(func([]byte) ([]byte, error) { return key, nil }),
		dtls.WithPSKIdentityHint([]byte("sensor-17")), dtls.WithCipherSuites(dtls.TLS_PSK_WITH_AES_128_CCM_8))
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	if err := dc.HandshakeContext(ctx); err != nil {
		t.Fatalf("handshake over IPv6: %v", err)
	}
	cc := coapdtls.Client(dc)
	defer cc.Close()
	resp, err := cc.Get(ctx, "/a")
	if err != nil {
		t.Fatalf("GET over IPv6: %v", err)
	}
	body, _ := resp.ReadBody()
	if resp.Code() != codes.Content || string(body) != "hello sensor-17" {
		t.Fatalf("got %v %q over IPv6", resp.Code(), body)
	}
	if n := f.srv.Stats.HelloVerifySent.Load(); n != 1 {
		t.Fatalf("HelloVerifySent %d, want 1 (one cookie exchange)", n)
	}
}
