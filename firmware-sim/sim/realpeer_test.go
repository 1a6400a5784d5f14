package sim

import (
	"context"
	"crypto/tls"
	"fmt"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/fleetgate/fleetgate/firmware-sim/collector"
	"github.com/fleetgate/fleetgate/firmware-sim/creds"
	"github.com/fleetgate/fleetgate/firmware-sim/scenario"
	"github.com/fleetgate/fleetgate/internal/realpeer"
)

// TestRealCoAPServerPSK runs DTLS-PSK devices (CCM_8 and GCM, with and
// without a CID request) against libcoap's coap-server, OpenSSL and GnuTLS
// builds.
func TestRealCoAPServerPSK(t *testing.T) {
	for _, backend := range []string{"openssl", "gnutls"} {
		t.Run("coap-server-"+backend, func(t *testing.T) { testRealCoAPServer(t, backend) })
	}
}

func testRealCoAPServer(t *testing.T, backend string) {
	const key = "fleet-test-key"
	srv := realpeer.StartCoAPServer(t, nil, realpeer.CoAPServerConfig{Backend: backend, PSK: key, Extra: []string{"-d", "20"}})
	port := int(srv.Addr.Port())
	sc, err := scenario.Parse(strings.NewReader(fmt.Sprintf(`
name: libcoap
duration: 3s
target: {coap: "127.0.0.1:%d", coap_path: /telemetry, coap_method: put}
groups:
  - {name: ccm8-cid, count: 2, protocol: coap, suite: ccm8, cid: true, format: cbor, interval: 300ms}
  - {name: gcm, count: 2, protocol: coap, suite: gcm, format: json, interval: 300ms}
`, port+1)))
	if err != nil {
		t.Fatal(err)
	}
	// libcoap's -k is one text key for every identity.
	set := creds.NewSet()
	for _, n := range Names(sc) {
		if err := set.Add(creds.Entry{Name: n, Kind: creds.KindPSK, Identity: n, Secret: []byte(key)}); err != nil {
			t.Fatal(err)
		}
	}
	// StartCoAPServer returned once the DTLS port was open; a handshake
	// failure shows in the counters below.
	rep, err := Run(context.Background(), sc, Options{Creds: set, AckTimeout: 500 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	for _, d := range rep.PerDevice {
		if d.Acked < 3 || d.Unacked != 0 || d.Handshakes != 1 {
			t.Errorf("%s (%s): acked %d unacked %d handshakes %d, want >= 3, 0, 1; errors %v", d.Name, d.Group, d.Acked, d.Unacked, d.Handshakes, rep.Errors)
		}
	}
	t.Logf("coap-server-%s: sent %d acked %d p50 %.2fms p99 %.2fms", backend, rep.Totals.Sent, rep.Totals.Acked, rep.Totals.Latency.P50Ms, rep.Totals.Latency.P99Ms)
}

// TestRealMosquittoTLS runs MQTT-over-TLS devices with passwords against
// mosquitto, with the collector subscribed to the same broker over TLS.
func TestRealMosquittoTLS(t *testing.T) {
	dir := t.TempDir()
	ca, err := creds.NewCA("mqtt-test-ca")
	if err != nil {
		t.Fatal(err)
	}
	srv, err := ca.Issue("broker.test", "broker.test", "127.0.0.1")
	if err != nil {
		t.Fatal(err)
	}
	certPEM, keyPEM, err := creds.PEM(srv)
	if err != nil {
		t.Fatal(err)
	}
	cafile := writeFile(t, dir, "ca.pem", ca.CertPEM(), 0o600)
	certfile := writeFile(t, dir, "server.pem", certPEM, 0o600)
	keyfile := writeFile(t, dir, "server.key", keyPEM, 0o600)

	port := realpeer.FreePort(t)
	sc, err := scenario.Parse(strings.NewReader(fmt.Sprintf(`
name: mosquitto
duration: 3s
target: {mqtt: "127.0.0.1:%d", server_name: broker.test}
groups:
  - {name: mqtt-json, count: 2, protocol: mqtt, format: json, interval: 300ms}
  - {name: mqtt-cbor, count: 1, protocol: mqtt, format: cbor, interval: 300ms}
`, port)))
	if err != nil {
		t.Fatal(err)
	}
	f, err := NewFleet(sc, Options{RootCAs: ca.Pool})
	if err != nil {
		t.Fatal(err)
	}
	users := map[string]string{"collector": "collector-pw"}
	for _, n := range f.Creds().Names() {
		e, _ := f.Creds().Get(n)
		users[e.Identity] = string(e.Secret)
	}
	// TLS with the fleet CA's certificate for broker.test, passwords only.
	realpeer.StartMosquitto(t, nil, realpeer.MosquittoConfig{
		Listen: netip.AddrPortFrom(netip.MustParseAddr("127.0.0.1"), uint16(port)),
		Users:  users,
		Extra:  fmt.Sprintf("cafile %s\ncertfile %s\nkeyfile %s\nrequire_certificate false\n", cafile, certfile, keyfile),
	})

	col := collector.New(collector.Config{})
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	if err := col.SubscribeMQTT(ctx, collector.MQTTConfig{Topic: "telemetry/#",
		Broker: fmt.Sprintf("tls://127.0.0.1:%d", port), Username: "collector", Password: "collector-pw",
		TLS: &tls.Config{RootCAs: ca.Pool, ServerName: "broker.test", MinVersion: tls.VersionTLS12},
	}); err != nil {
		t.Fatal(err)
	}
	f, err = NewFleet(sc, Options{RootCAs: ca.Pool, Creds: f.Creds(), Collector: col})
	if err != nil {
		t.Fatal(err)
	}
	rep, err := f.Run(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	// QoS 1: the broker's PUBACK may precede its delivery to the
	// subscriber; give the last messages a moment to arrive.
	deadline := time.Now().Add(5 * time.Second)
	for col.Total().Unique < rep.Totals.Acked && time.Now().Before(deadline) {
		time.Sleep(20 * time.Millisecond)
	}
	rep = f.Report()
	for _, d := range rep.PerDevice {
		if d.Acked < 3 || d.Unacked != 0 || d.Handshakes != 1 {
			t.Errorf("%s: acked %d unacked %d handshakes %d, want >= 3, 0, 1; errors %v", d.Name, d.Acked, d.Unacked, d.Handshakes, rep.Errors)
		}
		if d.Collected == nil || d.Collected.Unique != d.Acked || d.Collected.Gaps != 0 {
			t.Errorf("%s: collector saw %+v, want unique == acked %d and no gaps", d.Name, d.Collected, d.Acked)
		}
	}
	if rep.Lost != 0 || rep.LossSource != "collector" {
		t.Errorf("lost %d (%s), want 0 from the collector", rep.Lost, rep.LossSource)
	}
	t.Logf("mosquitto: sent %d acked %d collector unique %d p50 %.2fms p99 %.2fms", rep.Totals.Sent, rep.Totals.Acked, rep.Collected.Unique, rep.Totals.Latency.P50Ms, rep.Totals.Latency.P99Ms)
}

// TestRealCoAPServerCert runs ECDSA P-256 certificate devices (CCM_8 and
// GCM) against coap-server-openssl, which verifies their certificates
// against the fleet CA.
func TestRealCoAPServerCert(t *testing.T) {
	dir := t.TempDir()
	port := realpeer.FreePort(t) // coap-server's DTLS port is port + 1
	sc, err := scenario.Parse(strings.NewReader(fmt.Sprintf(`
name: libcoap-cert
duration: 3s
target: {coap: "127.0.0.1:%d", coap_path: /telemetry, coap_method: put, server_name: coap.test}
groups:
  - {name: cert-ccm8, count: 2, protocol: coap, auth: cert, suite: ccm8, format: cbor, interval: 300ms}
  - {name: cert-gcm, count: 1, protocol: coap, auth: cert, suite: gcm, format: json, interval: 300ms}
`, port+1)))
	if err != nil {
		t.Fatal(err)
	}
	f, err := NewFleet(sc, Options{AckTimeout: 500 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	srv, err := f.CA().Issue("coap.test", "coap.test", "127.0.0.1")
	if err != nil {
		t.Fatal(err)
	}
	certPEM, keyPEM, err := creds.PEM(srv)
	if err != nil {
		t.Fatal(err)
	}
	cafile := writeFile(t, dir, "ca.pem", f.CA().CertPEM(), 0o600)
	certfile := writeFile(t, dir, "server.pem", certPEM, 0o600)
	keyfile := writeFile(t, dir, "server.key", keyPEM, 0o600)
	realpeer.StartCoAPServer(t, nil, realpeer.CoAPServerConfig{Port: port,
		Extra: []string{"-c", certfile, "-j", keyfile, "-C", cafile, "-d", "20"}})
	rep, err := f.Run(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	for _, d := range rep.PerDevice {
		if d.Acked < 3 || d.Unacked != 0 || d.Handshakes != 1 {
			t.Errorf("%s (%s): acked %d unacked %d handshakes %d, want >= 3, 0, 1; errors %v", d.Name, d.Group, d.Acked, d.Unacked, d.Handshakes, rep.Errors)
		}
	}
	// A device whose certificate comes from another CA must be refused.
	rogue, err := creds.NewCA("rogue")
	if err != nil {
		t.Fatal(err)
	}
	set := creds.NewSet()
	if err := rogue.IssueFleet(set, Names(sc)); err != nil {
		t.Fatal(err)
	}
	sc.Duration = 1500 * time.Millisecond
	rep, err = Run(context.Background(), sc, Options{Creds: set, RootCAs: f.CA().Pool, AckTimeout: 500 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	if rep.Totals.Acked != 0 || rep.Totals.Handshakes != 0 || rep.Totals.HandshakeFailures == 0 {
		t.Errorf("rogue certificates: acked %d handshakes %d failures %d, want 0, 0, > 0", rep.Totals.Acked, rep.Totals.Handshakes, rep.Totals.HandshakeFailures)
	}
}
