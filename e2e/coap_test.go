package e2e

// CoAP end to end (issue 6) with the real daemons in namespaces: devices in
// sensors speak DTLS/CoAP to the bridge on 172.16.1.1:5684; the bridge
// forwards their requests through the L2TP/IPsec uplink, from each
// endpoint's own 10.10.8.N address, to a CoAP service in central
// (10.200.0.2:5683), and relays plain CoAP from central to the devices.
//
// The central service is either a small CoAP responder on a real UDP
// socket in central that records each request's source address, or
// libcoap's coap-server (whose debug log shows the source). The devices are
// libcoap's coap-client-openssl/-gnutls (PSK and certificates, GnuTLS
// restricted to CCM_8 via its system overrides) and a pion DTLS + go-coap
// device in sensors (CCM_8-only suites, serving central → device requests,
// keeping its socket across a NAT rebinding). Central → device requests
// come from libcoap's coap-client-notls in central.
//
// Every test builds its own topology and runs in parallel with the others;
// the two longest (the 60 s WAN outage, and the wrong-PSK failure that the
// bridge counts only at its 45 s handshake timeout) come first.

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"fmt"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/pion/dtls/v3"
	coapdtls "github.com/plgd-dev/go-coap/v3/dtls"
	"github.com/plgd-dev/go-coap/v3/message"
	"github.com/plgd-dev/go-coap/v3/message/codes"
	"github.com/plgd-dev/go-coap/v3/message/pool"
	"github.com/plgd-dev/go-coap/v3/net/responsewriter"
	"github.com/plgd-dev/go-coap/v3/options"
	udpclient "github.com/plgd-dev/go-coap/v3/udp/client"
	"github.com/plgd-dev/go-coap/v3/udp/coder"

	"github.com/fleetgate/fleetgate/internal/netns"
	"github.com/fleetgate/fleetgate/internal/realpeer"
)

// bridgeURI is the bridge's coaps:// base as devices see it.
var bridgeURI = fmt.Sprintf("coaps://%s:%d", BridgeLAN, CoAPSPort)

// coapReq is one request the central service received.
type coapReq struct {
	From    netip.AddrPort
	Method  codes.Code
	Path    string
	Payload string
}

// coapSink is the central CoAP service: it answers every request with
// 2.05 "src=<source> <path> <payload>" and records it.
type coapSink struct {
	pc   net.PacketConn
	mu   sync.Mutex
	reqs []coapReq
}

func startCoapSink(t *testing.T, env *Env) *coapSink {
	t.Helper()
	pc, err := env.Central.ListenPacket("udp4", netip.AddrPortFrom(CentralAddr, 5683).String())
	if err != nil {
		t.Fatal(err)
	}
	s := &coapSink{pc: pc}
	done := make(chan struct{})
	go func() { defer close(done); s.serve() }()
	t.Cleanup(func() { pc.Close(); <-done })
	return s
}

func (s *coapSink) serve() {
	buf := make([]byte, 2048)
	for {
		n, from, err := s.pc.ReadFrom(buf)
		if err != nil {
			return
		}
		m := pool.NewMessage(context.Background())
		if _, err := m.UnmarshalWithDecoder(coder.DefaultCoder, buf[:n]); err != nil || m.Code() < codes.GET || m.Code() > codes.DELETE {
			continue
		}
		path, _ := m.Path()
		body, _ := m.ReadBody()
		src := from.(*net.UDPAddr).AddrPort()
		s.mu.Lock()
		s.reqs = append(s.reqs, coapReq{From: netip.AddrPortFrom(src.Addr().Unmap(), src.Port()), Method: m.Code(), Path: path, Payload: string(body)})
		s.mu.Unlock()
		r := pool.NewMessage(context.Background())
		r.SetType(message.Acknowledgement)
		if m.Type() == message.NonConfirmable {
			r.SetType(message.NonConfirmable)
		}
		r.SetMessageID(m.MessageID())
		r.SetToken(m.Token())
		r.SetCode(codes.Content)
		r.SetContentFormat(message.TextPlain)
		r.SetBody(bytes.NewReader(fmt.Appendf(nil, "src=%s %s %s", from, path, body)))
		if b, err := r.MarshalWithEncoder(coder.DefaultCoder); err == nil {
			_, _ = s.pc.WriteTo(b, from)
		}
	}
}

// find returns the first recorded request for path.
func (s *coapSink) find(path string) (coapReq, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, r := range s.reqs {
		if r.Path == path {
			return r, true
		}
	}
	return coapReq{}, false
}

// dtlsDevice is a pion DTLS + go-coap device with its UDP socket in sensors.
type dtlsDevice struct {
	Conn *udpclient.Conn
	DTLS *dtls.Conn
}

// dialDevice connects a simulated device for ep to the bridge (Connection
// ID on, suites as given or CCM_8 + GCM); handler serves central → device
// requests.
func dialDevice(t *testing.T, env *Env, ep *Endpoint, suites []dtls.CipherSuiteID, handler udpclient.HandlerFunc) *dtlsDevice {
	t.Helper()
	pc, err := env.Sensors.ListenPacket("udp4", "0.0.0.0:0")
	if err != nil {
		t.Fatal(err)
	}
	opts := []dtls.ClientOption{
		dtls.WithConnectionIDGenerator(dtls.OnlySendCIDGenerator()),
		dtls.WithFlightInterval(300 * time.Millisecond),
	}
	if ep.CertFile != "" {
		cert, err := tls.LoadX509KeyPair(ep.CertFile, ep.KeyFile)
		if err != nil {
			t.Fatal(err)
		}
		caPEM, err := os.ReadFile(ep.CAFile)
		if err != nil {
			t.Fatal(err)
		}
		roots := x509.NewCertPool()
		if !roots.AppendCertsFromPEM(caPEM) {
			t.Fatalf("no CA in %s", ep.CAFile)
		}
		if suites == nil {
			suites = []dtls.CipherSuiteID{dtls.TLS_ECDHE_ECDSA_WITH_AES_128_CCM_8, dtls.TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256}
		}
		// The site certificate names bridge.<site> and the advertised
		// address; the device verifies it against the site CA.
		opts = append(opts, dtls.WithCertificates(cert), dtls.WithRootCAs(roots),
			dtls.WithServerName("bridge."+siteName), dtls.WithCipherSuites(suites...))
	} else {
		if suites == nil {
			suites = []dtls.CipherSuiteID{dtls.TLS_PSK_WITH_AES_128_CCM_8, dtls.TLS_PSK_WITH_AES_128_GCM_SHA256}
		}
		key := []byte(ep.PSK)
		opts = append(opts, dtls.WithPSK(func([]byte) ([]byte, error) { return key, nil }),
			dtls.WithPSKIdentityHint([]byte(ep.Identity)), dtls.WithCipherSuites(suites...))
	}
	dc, err := dtls.ClientWithOptions(pc, net.UDPAddrFromAddrPort(netip.AddrPortFrom(BridgeLAN, CoAPSPort)), opts...)
	if err != nil {
		pc.Close()
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
	defer cancel()
	if err := dc.HandshakeContext(ctx); err != nil {
		dc.Close()
		pc.Close()
		t.Fatalf("device %s: DTLS handshake with the bridge: %v", ep.Name, err)
	}
	var cc *udpclient.Conn
	if handler != nil {
		cc = coapdtls.Client(dc, options.WithHandlerFunc(handler))
	} else {
		cc = coapdtls.Client(dc)
	}
	t.Cleanup(func() {
		_ = cc.Close()
		pc.Close()
		<-cc.Done()
	})
	return &dtlsDevice{Conn: cc, DTLS: dc}
}

// post sends a CON POST and returns the response code and body.
func (d *dtlsDevice) post(t *testing.T, path, payload string) (codes.Code, string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	resp, err := d.Conn.Post(ctx, path, message.TextPlain, strings.NewReader(payload))
	if err != nil {
		t.Fatalf("device POST %s: %v", path, err)
	}
	body, _ := resp.ReadBody()
	return resp.Code(), string(body)
}

// answer is a device handler replying 2.05 "<name> <path>".
func coapAnswer(name string) udpclient.HandlerFunc {
	return func(w *responsewriter.ResponseWriter[*udpclient.Conn], r *pool.Message) {
		p, _ := r.Path()
		_ = w.SetResponse(codes.Content, message.TextPlain, strings.NewReader(name+" "+p))
	}
}

// centralGet runs libcoap's coap-client-notls in central: a plain CoAP GET
// to coap://addr/path.
func centralCoapGet(t *testing.T, env *Env, addr netip.Addr, path string) (string, error) {
	t.Helper()
	return realpeer.CoAPClient(t.Context(), env.Central, realpeer.CoAPRequest{
		Backend: "notls", URI: fmt.Sprintf("coap://%s%s", addr, path), Timeout: 15 * time.Second})
}

// counters reads the bridge's CoAP counters.
func coapCounters(t *testing.T, env *Env) (handshakes, failures, rebinds float64) {
	t.Helper()
	m := env.Metrics()
	get := func(s string) float64 {
		v, ok := MetricValue(m, s)
		if !ok {
			t.Fatalf("bridge /metrics: no %s", s)
		}
		return v
	}
	return get("coap_handshakes_ok_total"), get("coap_handshake_failures_total"), get("coap_rebinds_total")
}

// The two longest tests come first, so that with -parallel 2 they overlap
// each other and the rest.

// uplinkLogLine is one "uplink …" line of the bridge's JSON log.
type uplinkLogLine struct {
	Time  time.Time `json:"time"`
	Msg   string    `json:"msg"`
	Phase string    `json:"phase"`
}

// TestCoapUplinkRecovery: the WAN is dropped for 60 s and the gateway
// daemon restarted meanwhile; the bridge notices (DPD / LCP echo), keeps
// retrying with backoff, reconnects once the WAN is back, endpoints keep
// their addresses, the device's DTLS session survives and central → device
// and device → central work again.
func TestCoapUplinkRecovery(t *testing.T) {
	t.Parallel() // own namespaces; the outage test mostly waits
	env := Setup(t, Options{
		Endpoints:  []EndpointSpec{{Name: "sensor-17"}, {Name: "sensor-20", Cert: true}},
		UplinkYAML: "  dpd_interval: 3s\n  lcp_echo_interval: 2s\n  lcp_echo_failures: 3\n",
	})
	sink := startCoapSink(t, env)
	ep := env.Endpoint("sensor-17")
	d := dialDevice(t, env, ep, nil, coapAnswer("sensor-17"))
	if code, _ := d.post(t, "/before", "1"); code != codes.Content {
		t.Fatalf("before outage: %v", code)
	}
	if out, err := centralCoapGet(t, env, ep.Addr, "/temp"); err != nil || !strings.Contains(out, "sensor-17 /temp") {
		t.Fatalf("central → device before outage: %q, %v", out, err)
	}
	addrs := func() map[string]string {
		m := map[string]string{}
		for _, e := range env.Status().Endpoints {
			m[e.Name] = e.Addr
		}
		return m
	}
	before := addrs()
	att0 := env.Metric("uplink_attempts_total")

	cut := time.Now()
	env.Topo.CutWAN(t)
	if !Poll(30*time.Second, func() bool { return !strings.HasPrefix(env.Status().Uplink, "up") }) {
		t.Fatalf("uplink still up 30 s into the outage: %s", env.Status().Uplink)
	}
	t.Logf("uplink down after %v: %s", time.Since(cut).Round(time.Second), env.Status().Uplink)
	env.RestartGateway()
	time.Sleep(time.Until(cut.Add(60 * time.Second)))
	env.Topo.RestoreWAN(t)
	restored := time.Now()
	st := env.WaitUplinkUp(60 * time.Second)
	t.Logf("uplink up %v after the WAN came back: %s", time.Since(restored).Round(100*time.Millisecond), st.Uplink)

	// One attempt may span the whole outage (an attempt is bounded by
	// the tunnel's 90 s set-up timeout and IKE retransmits inside it), so
	// at least one more attempt and exactly one more connect.
	att1 := env.Metric("uplink_attempts_total")
	if c := env.Metric("uplink_connects_total"); c != 2 || att1-att0 < 1 {
		t.Errorf("uplink: connects %v (want 2), attempts %v → %v (want more)", c, att0, att1)
	}
	var events []string
	for _, l := range strings.Split(env.Log("bridge", 1), "\n") {
		var u uplinkLogLine
		if json.Unmarshal([]byte(l), &u) != nil || !strings.HasPrefix(u.Msg, "uplink ") || u.Time.Before(cut) {
			continue
		}
		events = append(events, fmt.Sprintf("+%v %s %s", u.Time.Sub(cut).Round(100*time.Millisecond), u.Msg, u.Phase))
	}
	t.Logf("bridge: attempts %v → %v; uplink events since the cut: %v", att0, att1, events)
	if after := addrs(); after["sensor-17"] != before["sensor-17"] || after["sensor-20"] != before["sensor-20"] || after["sensor-17"] != ep.Addr.String() {
		t.Errorf("endpoint addresses: before %v, after %v", before, after)
	}
	// The device's DTLS session to the bridge survived; both directions
	// work again through the new uplink and the restarted gateway.
	if code, body := d.post(t, "/after", "2"); code != codes.Content || !strings.HasPrefix(body, "src="+ep.Addr.String()+":") {
		t.Fatalf("device → central after recovery: %v %q", code, body)
	}
	if got, ok := sink.find("/after"); !ok || got.From.Addr() != ep.Addr {
		t.Fatalf("after recovery: central saw %+v (found %v)", got, ok)
	}
	out, err := centralCoapGet(t, env, ep.Addr, "/temp")
	if err != nil || !strings.Contains(out, "sensor-17 /temp") {
		t.Fatalf("central → device after recovery: %q, %v", out, err)
	}
	if hs, _, _ := coapCounters(t, env); hs != 1 {
		t.Errorf("coap_handshakes_ok_total = %v, want 1 (the device kept its session)", hs)
	}
}

// TestCoapBadCredentials: a wrong PSK, an unknown identity and garbage
// datagrams are refused and counted; a valid device still gets through
// afterwards and no secret appears in the bridge's log.
func TestCoapBadCredentials(t *testing.T) {
	t.Parallel()
	env := Setup(t, Options{Endpoints: []EndpointSpec{{Name: "sensor-17"}}})
	sink := startCoapSink(t, env)
	ep := env.Endpoint("sensor-17")
	_, fail0, _ := coapCounters(t, env)
	unknown0 := env.Metric("coap_unknown_identity_total")
	for _, c := range []struct{ what, id, key string }{
		{"wrong PSK", ep.Identity, "not-the-right-key-0123456789"},
		{"unknown identity", "nobody-at-all", ep.PSK},
	} {
		out, err := realpeer.CoAPClient(t.Context(), env.Sensors, realpeer.CoAPRequest{
			Backend: "openssl", URI: bridgeURI + "/bad", Identity: c.id, PSK: c.key, Timeout: 6 * time.Second})
		if err == nil || strings.Contains(out, "src=") {
			t.Errorf("%s: coap-client got through: %q", c.what, out)
		}
	}
	// Garbage: random bytes and a truncated DTLS record header.
	pc, err := env.Sensors.ListenPacket("udp4", "0.0.0.0:0")
	if err != nil {
		t.Fatal(err)
	}
	dst := net.UDPAddrFromAddrPort(netip.AddrPortFrom(BridgeLAN, CoAPSPort))
	for _, b := range [][]byte{[]byte("garbage, not DTLS"), {22, 0xfe, 0xfd, 0, 0}, bytes.Repeat([]byte{0x17}, 1400)} {
		if _, err := pc.WriteTo(b, dst); err != nil {
			t.Fatal(err)
		}
	}
	pc.Close()
	out, err := realpeer.CoAPClient(t.Context(), env.Sensors, realpeer.CoAPRequest{
		Backend: "gnutls", URI: bridgeURI + "/good", Identity: ep.Identity, PSK: ep.PSK, Timeout: 10 * time.Second})
	if err != nil || !strings.Contains(out, "src="+ep.Addr.String()+":") {
		t.Fatalf("valid device after bad input: %q, %v", out, err)
	}
	if _, ok := sink.find("/bad"); ok {
		t.Error("central saw a request from a refused device")
	}
	// A wrong PSK shows only as undecryptable Finished records, which
	// DTLS discards silently: the bridge counts the failure when its
	// handshake timeout (45 s) expires.
	var fail1, unknown1 float64
	Poll(60*time.Second, func() bool {
		_, fail1, _ = coapCounters(t, env)
		unknown1 = env.Metric("coap_unknown_identity_total")
		return fail1-fail0 >= 2 && unknown1-unknown0 >= 1
	})
	if fail1-fail0 < 2 || unknown1-unknown0 < 1 {
		t.Errorf("counters: handshake failures %v → %v (want +2), unknown identities %v → %v (want +1)", fail0, fail1, unknown0, unknown1)
	}
	log := env.Log("bridge", 1)
	if strings.Contains(log, ep.PSK) || strings.Contains(log, "not-the-right-key") {
		t.Error("bridge log contains a PSK")
	}
	t.Logf("handshake failures %v → %v, unknown identities %v → %v", fail0, fail1, unknown0, unknown1)
}

// TestCoapRealDevices: libcoap coap-client-openssl and -gnutls in sensors,
// with a PSK and with a certificate, GET and POST through the bridge; the
// central service sees each request arrive from the endpoint's own
// 10.10.8.N address. A device restricted to the CCM_8 suites (PSK and
// ECDHE-ECDSA, as tinydtls offers) gets through and lands on CCM_8.
func TestCoapRealDevices(t *testing.T) {
	t.Parallel() // own namespaces; the outage test mostly waits
	env := Setup(t, Options{Endpoints: []EndpointSpec{{Name: "sensor-17"}, {Name: "sensor-20", Cert: true}}})
	sink := startCoapSink(t, env)
	psk, cert := env.Endpoint("sensor-17"), env.Endpoint("sensor-20")
	runs := 0
	for _, backend := range []string{"openssl", "gnutls"} {
		for _, ep := range []*Endpoint{psk, cert} {
			kind := "psk"
			if ep.CertFile != "" {
				kind = "cert"
			}
			for _, method := range []string{"get", "post"} {
				path := fmt.Sprintf("/data/%s-%s-%s", backend, kind, method)
				req := realpeer.CoAPRequest{Backend: backend, Method: method, URI: bridgeURI + path, Timeout: 15 * time.Second}
				if kind == "psk" {
					req.Identity, req.PSK = ep.Identity, ep.PSK
				} else {
					req.Extra = []string{"-c", ep.CertFile, "-j", ep.KeyFile, "-C", ep.CAFile}
				}
				if method == "post" {
					req.Payload = "t=21.5"
				}
				out, err := realpeer.CoAPClient(t.Context(), env.Sensors, req)
				runs++
				if err != nil {
					t.Errorf("%s %s %s: %v", backend, kind, method, err)
					continue
				}
				wantSrc := "src=" + ep.Addr.String() + ":"
				if !strings.Contains(out, wantSrc) {
					t.Errorf("%s %s %s: response %q, want the central answer %q…", backend, kind, method, out, wantSrc)
				}
				got, ok := sink.find(path)
				if !ok {
					t.Errorf("%s %s %s: central saw no request for %s", backend, kind, method, path)
					continue
				}
				wantPayload := req.Payload
				if got.From.Addr() != ep.Addr || got.Method.String() != strings.ToUpper(method) || got.Payload != wantPayload {
					t.Errorf("%s %s %s: central saw %+v, want %s from %s payload %q", backend, kind, method, got, strings.ToUpper(method), ep.Addr, wantPayload)
				}
				t.Logf("%s %s %s: central saw %s from %s", backend, kind, method, got.Method, got.From)
			}
		}
	}
	hs, fails, _ := coapCounters(t, env)
	if hs != float64(runs) || fails != 0 {
		t.Errorf("bridge counters: handshakes %v failures %v, want %d and 0 (one session per coap-client run)", hs, fails, runs)
	}

	// Devices offering only CCM_8 (PSK, then ECDHE-ECDSA).
	for _, c := range []struct {
		ep    *Endpoint
		suite dtls.CipherSuiteID
	}{{psk, dtls.TLS_PSK_WITH_AES_128_CCM_8}, {cert, dtls.TLS_ECDHE_ECDSA_WITH_AES_128_CCM_8}} {
		d := dialDevice(t, env, c.ep, []dtls.CipherSuiteID{c.suite}, nil)
		path := "/ccm8/" + c.ep.Name
		code, body := d.post(t, path, "ccm8")
		st, _ := d.DTLS.ConnectionState()
		if code != codes.Content || !strings.HasPrefix(body, "src="+c.ep.Addr.String()+":") || st.CipherSuiteID != c.suite {
			t.Errorf("CCM_8-only %s: got %v %q over suite %v, want 2.05 from %s over %v", c.ep.Name, code, body, st.CipherSuiteID, c.ep.Addr, c.suite)
		}
		if got, ok := sink.find(path); !ok || got.From.Addr() != c.ep.Addr {
			t.Errorf("CCM_8-only %s: central saw %+v (found %v), want source %s", c.ep.Name, got, ok, c.ep.Addr)
		}
		t.Logf("CCM_8-only %s: %v %q over %v", c.ep.Name, code, body, st.CipherSuiteID)
	}
}

// TestCoapCentralToDevice: a plain CoAP GET from central (libcoap's
// coap-client-notls) to an endpoint's VPN address is relayed over the
// device's DTLS session and answered by the device, for a PSK and a
// certificate device.
func TestCoapCentralToDevice(t *testing.T) {
	t.Parallel() // own namespaces; the outage test mostly waits
	env := Setup(t, Options{Endpoints: []EndpointSpec{{Name: "sensor-17"}, {Name: "sensor-20", Cert: true}}})
	sink := startCoapSink(t, env)
	for _, name := range []string{"sensor-17", "sensor-20"} {
		ep := env.Endpoint(name)
		d := dialDevice(t, env, ep, nil, coapAnswer(name))
		// The device talks first (as firmware does on boot), so the
		// bridge knows its session.
		if code, body := d.post(t, "/hello/"+name, "boot"); code != codes.Content || !strings.HasPrefix(body, "src="+ep.Addr.String()+":") {
			t.Fatalf("%s → central: %v %q", name, code, body)
		}
		out, err := centralCoapGet(t, env, ep.Addr, "/temp")
		if err != nil {
			t.Fatalf("central → %s: %v", name, err)
		}
		if want := name + " /temp"; !strings.Contains(out, want) {
			t.Fatalf("central → %s (%s): got %q, want %q", name, ep.Addr, out, want)
		}
		t.Logf("central GET coap://%s/temp → %q", ep.Addr, strings.TrimSpace(out))
	}
	if _, ok := sink.find("/hello/sensor-20"); !ok {
		t.Fatal("central saw no /hello/sensor-20")
	}
	if v := env.Metric("proxy_downstream_total"); v < 2 {
		t.Fatalf("proxy_downstream_total = %v, want ≥ 2", v)
	}
}

// nftIn loads an nftables script in h.
func nftIn(t *testing.T, h *netns.Host, script string) {
	t.Helper()
	cmd := h.Command("nft", "-f", "-")
	cmd.Stdin = strings.NewReader(script)
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("nft: %v: %s\n%s", err, out, script)
	}
}

// natSensorsDTLS makes sensors masquerade its DTLS traffic to the bridge into
// port block base..base+999 (a home router in front of the device).
func natSensorsDTLS(t *testing.T, env *Env, base int) {
	t.Helper()
	_, _ = env.Sensors.Run(t.Context(), "nft", "delete", "table", "ip", "fgdevnat")
	nftIn(t, env.Sensors, fmt.Sprintf(`table ip fgdevnat {
	chain post {
		type nat hook postrouting priority srcnat; policy accept;
		oifname "edge" udp dport %d masquerade to :%d-%d
	}
}
`, CoAPSPort, base, base+999))
}

// TestCoapNATRebinding: the device's NAT mapping changes mid-session (the
// masquerade port block in sensors moves and its connection tracking is
// flushed); the DTLS session continues via Connection ID without a new
// handshake: the bridge counts one rebind and no handshake, and the device's
// next request still arrives centrally from its own address.
func TestCoapNATRebinding(t *testing.T) {
	t.Parallel() // own namespaces; the outage test mostly waits
	env := Setup(t, Options{Endpoints: []EndpointSpec{{Name: "sensor-17"}}})
	sink := startCoapSink(t, env)
	ep := env.Endpoint("sensor-17")
	natSensorsDTLS(t, env, 41000)
	// edge records the source ports its DTLS listener receives from.
	nftIn(t, env.Edge, fmt.Sprintf(`table ip fgseen {
	set ports { type inet_service; flags dynamic; }
	chain in {
		type filter hook input priority 0; policy accept;
		udp dport %d add @ports { udp sport }
	}
}
`, CoAPSPort))
	seenPorts := func() string {
		out, _ := env.Edge.Run(t.Context(), "nft", "list", "set", "ip", "fgseen", "ports")
		if i := strings.Index(out, "elements = {"); i >= 0 {
			return strings.TrimSpace(strings.SplitN(out[i+len("elements = {"):], "}", 2)[0])
		}
		return ""
	}
	d := dialDevice(t, env, ep, nil, coapAnswer("sensor-17"))
	if code, body := d.post(t, "/before", "1"); code != codes.Content || !strings.HasPrefix(body, "src="+ep.Addr.String()+":") {
		t.Fatalf("before rebinding: %v %q", code, body)
	}
	hs0, _, rb0 := coapCounters(t, env)
	ports0 := seenPorts()
	if !strings.HasPrefix(ports0, "41") || strings.Contains(ports0, ",") {
		t.Fatalf("source ports at the bridge before rebinding: %q, want one in 41000-41999", ports0)
	}

	// The NAT reboots: new port block, mappings forgotten (removing the
	// address drops masqueraded connection-tracking entries through it).
	natSensorsDTLS(t, env, 42000)
	addr := env.Sensors.Ifaces["edge"].String()
	env.mustRun(env.Sensors, "ip", "addr", "del", addr, "dev", "edge")
	env.mustRun(env.Sensors, "ip", "addr", "add", addr, "dev", "edge")
	env.mustRun(env.Sensors, "ip", "route", "replace", "default", "via", BridgeLAN.String())

	if code, body := d.post(t, "/after", "2"); code != codes.Content || !strings.HasPrefix(body, "src="+ep.Addr.String()+":") {
		t.Fatalf("after rebinding: %v %q", code, body)
	}
	got, ok := sink.find("/after")
	if !ok || got.From.Addr() != ep.Addr {
		t.Fatalf("after rebinding: central saw %+v (found %v), want source %s", got, ok, ep.Addr)
	}
	// Central → device also follows the new mapping.
	if out, err := centralCoapGet(t, env, ep.Addr, "/temp"); err != nil || !strings.Contains(out, "sensor-17 /temp") {
		t.Fatalf("central → device after rebinding: %q, %v", out, err)
	}
	hs1, _, rb1 := coapCounters(t, env)
	if hs1 != hs0 || rb1 != rb0+1 {
		t.Fatalf("bridge counters: handshakes %v → %v, rebinds %v → %v; want handshakes unchanged, rebinds +1", hs0, hs1, rb0, rb1)
	}
	// The bridge saw the device from a port of the new block.
	ports1 := seenPorts()
	if !strings.Contains(ports1, ", 42") && !strings.HasPrefix(ports1, "42") {
		t.Fatalf("source ports at the bridge after rebinding: %q, want one in 42000-42999 too", ports1)
	}
	t.Logf("handshakes %v, rebinds %v → %v; source ports seen by the bridge: %s", hs1, rb0, rb1, ports1)
}

// TestCoapLibcoapCentral: the central service is libcoap's own
// coap-server; its debug log shows each request's session from the
// endpoint's VPN address (PSK and certificate devices, libcoap clients).
func TestCoapLibcoapCentral(t *testing.T) {
	t.Parallel()
	env := Setup(t, Options{Endpoints: []EndpointSpec{{Name: "sensor-17"}, {Name: "sensor-20", Cert: true}}})
	// (-k only because the launcher waits for the DTLS port; the bridge
	// speaks plain CoAP to it.)
	srv := realpeer.StartCoAPServer(t, env.Central, realpeer.CoAPServerConfig{Listen: CentralAddr, Port: 5683, PSK: "unused", Extra: []string{"-v", "7"}})
	psk, cert := env.Endpoint("sensor-17"), env.Endpoint("sensor-20")
	for _, c := range []struct {
		ep      *Endpoint
		backend string
		req     realpeer.CoAPRequest
	}{
		{psk, "openssl", realpeer.CoAPRequest{Identity: psk.Identity, PSK: psk.PSK}},
		{cert, "gnutls", realpeer.CoAPRequest{Extra: []string{"-c", cert.CertFile, "-j", cert.KeyFile, "-C", cert.CAFile}}},
	} {
		req := c.req
		req.Backend, req.URI, req.Timeout = c.backend, bridgeURI+"/time", 15*time.Second
		out, err := realpeer.CoAPClient(t.Context(), env.Sensors, req)
		if err != nil {
			t.Fatalf("%s GET /time: %v", c.ep.Name, err)
		}
		// libcoap's /time answers the current time ("Nov 23 23:52:37").
		if !reTimeOfDay.MatchString(out) {
			t.Errorf("%s GET /time: got %q, want libcoap's time of day", c.ep.Name, out)
		}
		want := "<-> " + c.ep.Addr.String() + ":"
		if !Poll(5*time.Second, func() bool { return strings.Contains(srv.Proc.Output(), want) }) {
			t.Errorf("%s: coap-server log has no session %q…", c.ep.Name, want)
		}
		t.Logf("%s via %s: %q; coap-server saw a session from %s", c.ep.Name, c.backend, strings.TrimSpace(out), c.ep.Addr)
	}
}

// TestCoapSleepingDevice: queue mode through the real daemons. Central's
// GET to a device with no session waits in the bridge's queue; it is
// delivered when the device next talks, and one for a device that never
// wakes is answered 5.04 Gateway Timeout after queue_ttl (20 s here).
func TestCoapSleepingDevice(t *testing.T) {
	t.Parallel()
	env := Setup(t, Options{Endpoints: []EndpointSpec{{Name: "sensor-17"}, {Name: "sensor-18"}}})
	startCoapSink(t, env)
	type result struct {
		out string
		err error
	}
	get := func(ep *Endpoint) chan result {
		ch := make(chan result, 1)
		go func() {
			out, err := realpeer.CoAPClient(t.Context(), env.Central, realpeer.CoAPRequest{
				Backend: "notls", URI: fmt.Sprintf("coap://%s/temp", ep.Addr), Timeout: 40 * time.Second})
			ch <- result{out, err}
		}()
		return ch
	}
	wake, sleeper := env.Endpoint("sensor-17"), env.Endpoint("sensor-18")
	wakeRes, sleepRes := get(wake), get(sleeper)
	queued := func(name string) int {
		st, ok := env.EndpointStatus(name)
		if !ok {
			return -1
		}
		return st.Queued
	}
	if !Poll(20*time.Second, func() bool { return queued("sensor-17") == 1 && queued("sensor-18") == 1 }) {
		t.Fatalf("queued: sensor-17 %d, sensor-18 %d; want 1 each", queued("sensor-17"), queued("sensor-18"))
	}
	d := dialDevice(t, env, wake, nil, coapAnswer("sensor-17"))
	if code, _ := d.post(t, "/wake", "1"); code != codes.Content {
		t.Fatalf("wake POST: %v", code)
	}
	select {
	case r := <-wakeRes:
		if r.err != nil || !strings.Contains(r.out, "sensor-17 /temp") {
			t.Fatalf("queued GET to the woken device: %q, %v; want sensor-17 /temp", r.out, r.err)
		}
		t.Logf("queued GET delivered on wake: %q", strings.TrimSpace(r.out))
	case <-time.After(30 * time.Second):
		t.Fatal("queued GET to the woken device: no answer within 30 s")
	}
	select {
	case r := <-sleepRes:
		if !strings.Contains(r.out, "5.04") {
			t.Fatalf("GET to a device that never woke: %q, %v; want 5.04", r.out, r.err)
		}
		t.Logf("GET to the sleeper: %q", strings.TrimSpace(r.out))
	case <-time.After(45 * time.Second):
		t.Fatal("GET to the sleeper: no answer within 45 s")
	}
	if v := env.Metric("proxy_expired_total"); v != 1 {
		t.Errorf("proxy_expired_total = %v, want 1", v)
	}
}

var reTimeOfDay = regexp.MustCompile(`[A-Z][a-z]{2} +\d+ \d\d:\d\d:\d\d`)

// TestCoapObserveBlockwise: libcoap devices through the real daemons to
// libcoap's coap-server in central — observe (-s) of the server's /time
// relayed notification by notification, and block-wise (-b 64) PUT and GET
// of a 3000-byte resource.
func TestCoapObserveBlockwise(t *testing.T) {
	t.Parallel()
	env := Setup(t, Options{Endpoints: []EndpointSpec{{Name: "sensor-17"}}})
	realpeer.StartCoAPServer(t, env.Central, realpeer.CoAPServerConfig{Listen: CentralAddr, Port: 5683, PSK: "unused"})
	ep := env.Endpoint("sensor-17")
	req := func(backend, method, path, payload string, extra ...string) (string, error) {
		return realpeer.CoAPClient(t.Context(), env.Sensors, realpeer.CoAPRequest{Backend: backend, Method: method,
			URI: bridgeURI + path, Identity: ep.Identity, PSK: ep.PSK, Payload: payload, Extra: extra, Timeout: 20 * time.Second})
	}
	// Observe /time for 5 s: libcoap's server notifies every second.
	out, err := req("openssl", "get", "/time", "", "-s", "5")
	if err != nil {
		t.Fatalf("observe /time: %v", err)
	}
	// libcoap prints the payloads back to back: "Nov 24 00:04:20Nov 24 …".
	seen := map[string]bool{}
	for _, m := range reTimeOfDay.FindAllString(out, -1) {
		seen[m] = true
	}
	if len(seen) < 3 {
		t.Fatalf("observe /time for 5 s: %d distinct notifications %q, want ≥ 3", len(seen), out)
	}
	t.Logf("observe: %d distinct notifications relayed", len(seen))

	// Block-wise both ways with 64-byte blocks.
	payload := strings.Repeat("0123456789abcdef", 3000/16) + "0123456789ab"
	if _, err := req("gnutls", "put", "/example_data", payload, "-b", "64"); err != nil {
		t.Fatalf("block-wise PUT: %v", err)
	}
	got, err := req("openssl", "get", "/example_data", "", "-b", "64")
	if err != nil {
		t.Fatalf("block-wise GET: %v", err)
	}
	if strings.TrimSpace(got) != payload {
		t.Fatalf("block-wise GET: got %d bytes %.80q…, want the %d bytes put", len(strings.TrimSpace(got)), got, len(payload))
	}
	t.Logf("block-wise: PUT and GET of %d bytes in 64-byte blocks", len(payload))
}

// TestCoapFlood: a device flooding requests is answered 4.29 beyond its
// rate (20/s, burst 40 by default) and counted, while another device on
// the same bridge is still served.
func TestCoapFlood(t *testing.T) {
	t.Parallel()
	env := Setup(t, Options{Endpoints: []EndpointSpec{{Name: "sensor-17"}, {Name: "sensor-18"}}})
	startCoapSink(t, env)
	flooder := dialDevice(t, env, env.Endpoint("sensor-17"), nil, nil)
	other := dialDevice(t, env, env.Endpoint("sensor-18"), nil, nil)
	rl0 := env.Metric("coap_rate_limited_total")
	// 8 concurrent senders, 200 requests: fast enough that the refill
	// (20/s) cannot keep up even on a loaded machine.
	var mu sync.Mutex
	var ok, limited int
	var wg sync.WaitGroup
	errs := make(chan error, 200)
	for w := range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range 25 {
				ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
				resp, err := flooder.Conn.Post(ctx, fmt.Sprintf("/flood/%d/%d", w, i), message.TextPlain, strings.NewReader("x"))
				cancel()
				if err != nil {
					errs <- err
					return
				}
				mu.Lock()
				switch resp.Code() {
				case codes.Content:
					ok++
				case codes.TooManyRequests:
					limited++
				default:
					errs <- fmt.Errorf("flood request: %v", resp.Code())
				}
				mu.Unlock()
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	rl1 := env.Metric("coap_rate_limited_total")
	if limited == 0 || ok < 40 || rl1-rl0 != float64(limited) {
		t.Fatalf("flood of 200: %d answered, %d got 4.29, coap_rate_limited_total %v → %v; want ≥ 40 answered, some 4.29, all counted", ok, limited, rl0, rl1)
	}
	if code, body := other.post(t, "/calm", "1"); code != codes.Content || !strings.HasPrefix(body, "src=10.10.8.18:") {
		t.Fatalf("other device during the flood: %v %q", code, body)
	}
	t.Logf("flood of 200: %d answered, %d answered 4.29 (counted %v)", ok, limited, rl1-rl0)
}

// TestCoapBridgeRestart: the bridge is killed (SIGKILL, no goodbye to the
// gateway) and started again: its new login replaces the stale session at
// the gateway, endpoints keep their addresses (persisted registry), the
// device handshakes again and both directions work.
func TestCoapBridgeRestart(t *testing.T) {
	t.Parallel()
	env := Setup(t, Options{Endpoints: []EndpointSpec{{Name: "sensor-17"}, {Name: "sensor-20", Cert: true}}})
	sink := startCoapSink(t, env)
	ep := env.Endpoint("sensor-20")
	d := dialDevice(t, env, ep, nil, coapAnswer("sensor-20"))
	if code, _ := d.post(t, "/before", "1"); code != codes.Content {
		t.Fatalf("before restart: %v", code)
	}
	env.KillBridge()
	restart := time.Now()
	env.StartBridge()
	st := env.WaitUplinkUp(60 * time.Second)
	t.Logf("uplink up %v after the restart", time.Since(restart).Round(100*time.Millisecond))
	addrs := map[string]string{}
	for _, e := range st.Endpoints {
		addrs[e.Name] = e.Addr
	}
	if addrs["sensor-17"] != "10.10.8.17" || addrs["sensor-20"] != "10.10.8.20" {
		t.Fatalf("endpoint addresses after restart: %v", addrs)
	}
	// The old DTLS session died with the process: the device dials again.
	d2 := dialDevice(t, env, ep, nil, coapAnswer("sensor-20"))
	if code, body := d2.post(t, "/after", "2"); code != codes.Content || !strings.HasPrefix(body, "src=10.10.8.20:") {
		t.Fatalf("device → central after restart: %v %q", code, body)
	}
	if got, ok := sink.find("/after"); !ok || got.From.Addr() != ep.Addr {
		t.Fatalf("after restart: central saw %+v (found %v)", got, ok)
	}
	if out, err := centralCoapGet(t, env, ep.Addr, "/temp"); err != nil || !strings.Contains(out, "sensor-20 /temp") {
		t.Fatalf("central → device after restart: %q, %v", out, err)
	}
	if v := env.Metric("coap_handshakes_ok_total"); v != 1 {
		t.Errorf("new bridge: coap_handshakes_ok_total = %v, want 1", v)
	}
	t.Logf("after SIGKILL and restart: %s; addresses %v", st.Uplink, addrs)
}

// gnutlsCCM8Only is a GnuTLS system configuration whose overrides disable
// every cipher but AES-128-CCM-8, for all priority strings (libcoap's
// "NORMAL:+ECDHE-PSK:+PSK:..." included): a real libcoap client that
// offers only the CCM_8 suites, as tinydtls devices do.
const gnutlsCCM8Only = `[overrides]
tls-disabled-cipher = AES-128-GCM
tls-disabled-cipher = AES-256-GCM
tls-disabled-cipher = AES-128-CBC
tls-disabled-cipher = AES-256-CBC
tls-disabled-cipher = AES-128-CCM
tls-disabled-cipher = AES-256-CCM
tls-disabled-cipher = CHACHA20-POLY1305
tls-disabled-cipher = CAMELLIA-128-CBC
tls-disabled-cipher = CAMELLIA-256-CBC
tls-disabled-cipher = 3DES-CBC
`

// sessionSuites returns endpoint → suites of the bridge's "session
// established" log lines, in order.
func sessionSuites(log string) map[string][]string {
	m := map[string][]string{}
	for _, l := range strings.Split(log, "\n") {
		var x struct{ Msg, Endpoint, Suite string }
		if json.Unmarshal([]byte(l), &x) == nil && x.Msg == "session established" && x.Endpoint != "" {
			m[x.Endpoint] = append(m[x.Endpoint], x.Suite)
		}
	}
	return m
}

// TestCoapLibcoapCCM8: coap-client-gnutls restricted to the CCM_8 suites
// (GnuTLS system overrides) gets through with a PSK and with a certificate
// and the bridge logs the CCM_8 suite for those sessions; unrestricted, the
// same client lands on another suite (so the restriction is what decided).
func TestCoapLibcoapCCM8(t *testing.T) {
	t.Parallel()
	env := Setup(t, Options{Endpoints: []EndpointSpec{{Name: "sensor-17"}, {Name: "sensor-20", Cert: true}}})
	startCoapSink(t, env)
	cfg := filepath.Join(env.Dir, "gnutls-ccm8.cfg")
	if err := os.WriteFile(cfg, []byte(gnutlsCCM8Only), 0o644); err != nil {
		t.Fatal(err)
	}
	psk, cert := env.Endpoint("sensor-17"), env.Endpoint("sensor-20")
	run := func(ep *Endpoint, restricted bool) {
		t.Helper()
		args := []string{"-m", "get", "-B", "10"}
		if ep.CertFile != "" {
			args = append(args, "-c", ep.CertFile, "-j", ep.KeyFile, "-C", ep.CAFile)
		} else {
			args = append(args, "-u", ep.Identity, "-k", ep.PSK)
		}
		args = append(args, bridgeURI+"/ccm8")
		ctx, cancel := context.WithTimeout(t.Context(), 20*time.Second)
		defer cancel()
		cmd := env.Sensors.CommandContext(ctx, "coap-client-gnutls", args...)
		if restricted {
			cmd.Env = append(os.Environ(), "GNUTLS_SYSTEM_PRIORITY_FILE="+cfg)
		}
		out, err := cmd.CombinedOutput()
		if err != nil || !strings.Contains(string(out), "src="+ep.Addr.String()+":") {
			t.Fatalf("%s (CCM_8 only: %v): %q, %v", ep.Name, restricted, out, err)
		}
	}
	want := map[string]string{"sensor-17": "TLS_PSK_WITH_AES_128_CCM_8", "sensor-20": "TLS_ECDHE_ECDSA_WITH_AES_128_CCM_8"}
	for _, ep := range []*Endpoint{psk, cert} {
		run(ep, false)
		run(ep, true)
	}
	var suites map[string][]string
	Poll(5*time.Second, func() bool {
		suites = sessionSuites(env.Log("bridge", 1))
		return len(suites["sensor-17"]) == 2 && len(suites["sensor-20"]) == 2
	})
	for name, w := range want {
		s := suites[name]
		if len(s) != 2 || s[0] == w || s[1] != w {
			t.Errorf("%s: bridge sessions with suites %v, want [<not CCM_8> %s] (unrestricted, then CCM_8 only)", name, s, w)
		}
	}
	t.Logf("suites per session (unrestricted, CCM_8 only): %v", suites)
}
