package sim

import (
	"context"
	"net/netip"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/plgd-dev/go-coap/v3/message"
	"github.com/plgd-dev/go-coap/v3/message/codes"
	"github.com/plgd-dev/go-coap/v3/message/pool"
	"github.com/plgd-dev/go-coap/v3/net/responsewriter"
	udpclient "github.com/plgd-dev/go-coap/v3/udp/client"

	dlcoap "github.com/fleetgate/fleetgate/downlink/coap"
	"github.com/fleetgate/fleetgate/downlink/registry"
	"github.com/fleetgate/fleetgate/firmware-sim/collector"
	"github.com/fleetgate/fleetgate/firmware-sim/device"
	"github.com/fleetgate/fleetgate/firmware-sim/report"
	"github.com/fleetgate/fleetgate/firmware-sim/scenario"
	"github.com/fleetgate/fleetgate/firmware-sim/senml"
)

// TestAgainstBridgeDownlink runs simulated devices against the bridge's own
// DTLS/CoAP termination (downlink/coap with a downlink/registry):
// PSK CCM_8 with CID and GCM without, ECDSA certificates with CID and NAT
// rebinding (the session must survive), telemetry handed to the collector by
// the server's Handler, then a bridge → device GET over one device's
// session — the path of the demo's central → device round trip.
func TestAgainstBridgeDownlink(t *testing.T) {
	sc, err := scenario.Parse(strings.NewReader(`
name: bridge
duration: 2s
target: {coap: "127.0.0.1:1", server_name: bridge.local}
groups:
  - {name: ccm8-cid, count: 3, protocol: coap, suite: ccm8, cid: true, format: cbor, interval: 200ms}
  - {name: gcm, count: 2, protocol: coap, suite: gcm, format: json, interval: 200ms}
  - {name: cert-cid-rebind, count: 2, protocol: coap, auth: cert, suite: ccm8, cid: true, format: cbor, interval: 200ms, faults: {rebind_every: 500ms}}
`))
	if err != nil {
		t.Fatal(err)
	}
	f, err := NewFleet(sc, Options{})
	if err != nil {
		t.Fatal(err)
	}
	reg, err := registry.Open(filepath.Join(t.TempDir(), "endpoints.json"), netip.MustParsePrefix("10.10.8.0/24"))
	if err != nil {
		t.Fatal(err)
	}
	for _, n := range f.Creds().Names() {
		e, _ := f.Creds().Get(n)
		ep := registry.Endpoint{Name: n, Protocol: registry.CoAP, PSKIdentity: e.Identity, PSK: e.Secret}
		if e.Cert != nil {
			ep = registry.Endpoint{Name: n, Protocol: registry.CoAP, CertCN: e.Identity}
		}
		if _, err := reg.Add(ep); err != nil {
			t.Fatal(err)
		}
	}
	col := collector.New(collector.Config{})
	srvCert, err := f.CA().Issue("bridge.local", "bridge.local")
	if err != nil {
		t.Fatal(err)
	}
	srv, err := dlcoap.New(dlcoap.Config{
		ListenAddr: "127.0.0.1:0", Registry: reg, Rate: -1, ClientCAs: f.CA().Pool, Certificate: srvCert,
		Handler: func(s *dlcoap.Session, w *responsewriter.ResponseWriter[*udpclient.Conn], r *pool.Message) {
			body, _ := r.ReadBody()
			cf, _ := r.ContentFormat()
			ff, err := senml.FormatFromContentFormat(uint16(cf))
			if err == nil {
				_, err = col.Handle("bridge", s.Endpoint.Name, body, ff)
			}
			if err != nil {
				_ = w.SetResponse(codes.BadRequest, message.TextPlain, nil)
				return
			}
			_ = w.SetResponse(codes.Changed, message.TextPlain, nil)
		},
	})
	if err != nil {
		t.Fatal(err)
	}
	go func() { _ = srv.Serve() }()
	t.Cleanup(func() { srv.Close(); srv.Wait() })

	f, err = NewFleet(sc, Options{Creds: f.Creds(), CA: f.CA(), Collector: col, CoAPTarget: srv.Addr().String(), AckTimeout: 500 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	type result struct {
		rep *report.Report
		err error
	}
	runDone := make(chan result, 1)
	go func() {
		rep, err := f.Run(context.Background())
		runDone <- result{rep, err}
	}()
	t.Cleanup(func() { <-runDone })
	// Bridge → device: GET /sensors/temp over sensor-1's DTLS session.
	var sess *dlcoap.Session
	deadline := time.Now().Add(5 * time.Second)
	for sess == nil && time.Now().Before(deadline) {
		if sess = srv.Session("sensor-1"); sess == nil {
			time.Sleep(20 * time.Millisecond)
		}
	}
	if sess == nil {
		t.Fatal("sensor-1 has no session at the bridge")
	}
	gctx, gcancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer gcancel()
	req, err := sess.Conn.NewGetRequest(gctx, device.PathTemp)
	if err != nil {
		t.Fatal(err)
	}
	resp, err := sess.Do(req)
	if err != nil {
		t.Fatalf("GET %s: %v", device.PathTemp, err)
	}
	body, _ := resp.ReadBody()
	p, err := senml.Decode(body, senml.FormatCBOR)
	if err != nil || resp.Code() != codes.Content {
		t.Fatalf("GET: code %v body %q: %v", resp.Code(), body, err)
	}
	rs, _ := p.Resolve()
	if rs[0].Name != "sensor-1/temp" {
		t.Errorf("GET: got %q, want sensor-1/temp", rs[0].Name)
	}
	res := <-runDone
	runDone <- res
	if res.err != nil {
		t.Fatal(res.err)
	}
	rep := res.rep
	for _, d := range rep.PerDevice {
		if d.Acked < 3 || d.Unacked != 0 || d.Collected.Unique != d.Acked || d.Collected.Gaps != 0 {
			t.Errorf("%s (%s): acked %d unacked %d collected %+v; errors %v", d.Name, d.Group, d.Acked, d.Unacked, d.Collected, rep.Errors)
		}
	}
	if srv.Stats.Rebinds.Load() == 0 || rep.Totals.Rebinds == 0 {
		t.Errorf("NAT rebinding: device rebinds %d, bridge saw %d address changes; want both > 0", rep.Totals.Rebinds, srv.Stats.Rebinds.Load())
	}
	// One DTLS handshake per device. (The bridge's Stats.HandshakesOK is not
	// checked: go-coap calls HandshakeContext before every write, and
	// downlink/coap counts each call.)
	for _, d := range rep.PerDevice {
		if d.Handshakes != 1 || d.Reconnects != 0 {
			t.Errorf("%s: handshakes %d reconnects %d, want 1 and 0", d.Name, d.Handshakes, d.Reconnects)
		}
	}
}
