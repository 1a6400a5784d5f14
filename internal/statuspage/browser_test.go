package statuspage_test

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/chromedp/cdproto/cdp"
	"github.com/chromedp/cdproto/network"
	"github.com/chromedp/chromedp"
	"github.com/plgd-dev/go-coap/v3/message"
	"github.com/plgd-dev/go-coap/v3/message/codes"
	"github.com/plgd-dev/go-coap/v3/message/pool"

	bconfig "github.com/fleetgate/fleetgate/bridge/config"
	"github.com/fleetgate/fleetgate/bridge/daemon"
	"github.com/fleetgate/fleetgate/downlink/coap/coaptest"
	"github.com/fleetgate/fleetgate/downlink/registry"
	gconfig "github.com/fleetgate/fleetgate/gateway/config"
	"github.com/fleetgate/fleetgate/gateway/dataplane"
	"github.com/fleetgate/fleetgate/gateway/engine"
	"github.com/fleetgate/fleetgate/gateway/server"
	"github.com/fleetgate/fleetgate/internal/testenv"
	"github.com/fleetgate/fleetgate/uplink/l2tpipsec"
)

// TestStatusPagesInChromium: the real gateway (userspace data plane, its
// HTTP listener on 0.0.0.0 with a bearer token) and the real bridge (its
// HTTP listener on loopback) over an IKEv1/ESP/L2TP/PPP uplink on
// loopback, three DTLS sensors posting telemetry; headless Chromium opens
// both pages: the gateway's session and the bridge's endpoints appear,
// charts have points; a killed sensor turns quiet on the page; the
// gateway page is refused without the token. Screenshots at 1280×800 and
// 390×844 go to the test's artifact directory (go test -artifacts).
func TestStatusPagesInChromium(t *testing.T) {
	chromium := testenv.RequireBinary(t, "chromium")
	dir := t.TempDir()
	tokFile := filepath.Join(dir, "page.token")
	const token = "browser-test-token-0123456789abcdef"
	if err := os.WriteFile(tokFile, []byte(token+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	gw, eng := startGateway(t, tokFile)
	gwPort := mustPort(t, gw.HTTPAddr())
	sink := startSink(t, gw)
	_ = sink

	// The bridge, its page on loopback (no token), sensors quiet after 3 s.
	ts := eng.Tunnel()
	y := fmt.Sprintf(`site: plant-a
prefix: 10.10.8.0/24
bridge_address: 10.10.8.1
state_dir: %s
downlink: {coap_listen: "127.0.0.1:0"}
central_coap: 10.20.0.1:5683
http_listen: "127.0.0.1:0"
status_page: {quiet_after: 3s, sample_interval: 250ms}
uplink:
  mode: l2tp-ipsec
  gateways: [%q]
  nat_t_port: %d
  psk: browser-psk
  local_id: plant-a.sites.example
  ppp_user: plant-a
  ppp_password: pw-a
  esp_proposals: aes128gcm16
  min_backoff: 100ms
  max_backoff: 1s
`, filepath.Join(dir, "bridge"), ts.IKEAddr().String(), ts.NATTAddr().Port())
	cfg, err := bconfig.Parse([]byte(y))
	if err != nil {
		t.Fatal(err)
	}
	reg, ca, err := daemon.OpenRegistry(cfg)
	if err != nil {
		t.Fatal(err)
	}
	names := []string{"sensor-17", "sensor-18", "sensor-19"}
	keys := map[string][]byte{}
	for _, n := range names {
		prov, err := registry.Provision(reg, ca, registry.Request{Name: n})
		if err != nil {
			t.Fatal(err)
		}
		keys[n] = prov.Endpoint.PSK
	}
	site, err := daemon.New(cfg, slog.New(slog.NewTextHandler(io.Discard, nil)))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = site.Close() })
	site.Start()
	addrs := site.Addrs()
	bridgeURL := "http://" + addrs.HTTP.String() + "/"
	waitFor(t, 30*time.Second, "uplink up", func() bool { return site.UplinkView().State == "up" })

	// Sensors: a CoAP POST every 300 ms each until stopped.
	stops := map[string]func(){}
	for _, n := range names {
		d, err := coaptest.Dial(t, addrs.CoAP.String(), coaptest.Options{Identity: n, Key: keys[n]})
		if err != nil {
			t.Fatal(err)
		}
		ctx, cancel := context.WithCancel(context.Background())
		var wg sync.WaitGroup
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; ctx.Err() == nil; i++ {
				pctx, pc := context.WithTimeout(ctx, 5*time.Second)
				_, _ = d.Conn.Post(pctx, "/telemetry", message.TextPlain, bytes.NewReader([]byte(fmt.Sprintf(`{"t":%d}`, i))))
				pc()
				select {
				case <-ctx.Done():
				case <-time.After(300 * time.Millisecond):
				}
			}
		}()
		stops[n] = sync.OnceFunc(func() { cancel(); wg.Wait(); _ = d.Conn.Close() })
		t.Cleanup(stops[n])
	}

	// A site with the right PSK and a wrong PPP password: refused, and
	// the failure is on the gateway's page with its reason.
	bad, err := l2tpipsec.Dial(context.Background(), l2tpipsec.ClientConfig{Gateway: ts.IKEAddr().String(), NATTPort: ts.NATTAddr().Port(),
		LocalIKE: "127.0.0.1:0", LocalNATT: "127.0.0.1:0", PSK: []byte("browser-psk"), Username: "plant-a", Password: "wrong",
		IKEOptions: l2tpipsec.IKEOptions{ESPProposals: "aes128gcm16"}})
	if err == nil {
		bad.Close()
		t.Fatal("a wrong PPP password was accepted")
	}
	waitFor(t, 20*time.Second, "failure recorded", func() bool { return gw.FailuresView().Total > 0 })

	// Without the token the gateway's page and API are refused on its
	// non-loopback listener; the bridge's loopback page is open.
	gwHost := nonLoopbackAddr()
	gwURL := fmt.Sprintf("http://%s/", net.JoinHostPort(gwHost, gwPort))
	for _, u := range []string{gwURL, gwURL + "api/sessions"} {
		if code := get(t, u, ""); code != http.StatusUnauthorized {
			t.Fatalf("GET %s without token: %d, want 401", u, code)
		}
	}
	if code := get(t, gwURL+"api/sessions", token); code != http.StatusOK {
		t.Fatalf("GET %sapi/sessions with token: %d, want 200", gwURL, code)
	}

	// The browser.
	actx, acancel := chromedp.NewExecAllocator(context.Background(), append(chromedp.DefaultExecAllocatorOptions[:],
		chromedp.ExecPath(chromium), chromedp.NoSandbox, chromedp.WindowSize(1280, 800),
		chromedp.Flag("disable-dev-shm-usage", true), chromedp.UserDataDir(filepath.Join(dir, "chromium")))...)
	t.Cleanup(acancel)
	bctx, bcancel := chromedp.NewContext(actx)
	t.Cleanup(bcancel)
	out := t.ArtifactDir()
	shot := func(name string) chromedp.Action[chromedp.Void] {
		return chromedp.Func(func(ctx context.Context, tg *chromedp.Target) error {
			for _, vp := range []struct {
				suffix string
				w, h   int64
				opts   []chromedp.EmulateViewportOption
			}{{"1280x800", 1280, 800, nil}, {"phone", 390, 844, []chromedp.EmulateViewportOption{chromedp.EmulateMobile, chromedp.EmulateTouch, chromedp.EmulatePortrait}}} {
				if _, err := chromedp.EmulateViewport(vp.w, vp.h, vp.opts...)(ctx, tg); err != nil {
					return err
				}
				// Let the layout settle on the new width (a refresh
				// tick does no harm: the same content).
				if _, err := chromedp.WaitVisible(`main`)(ctx, tg); err != nil {
					return err
				}
				// Readable on a phone: the page itself never scrolls
				// sideways (wide tables scroll inside their box).
				w, err := chromedp.Evaluate[int](`document.documentElement.scrollWidth`)(ctx, tg)
				if err != nil {
					return err
				}
				if w > int(vp.w) {
					return fmt.Errorf("%s at %d px wide: the page is %d px wide", name, vp.w, w)
				}
				png, err := chromedp.FullScreenshot(100)(ctx, tg)
				if err != nil {
					return err
				}
				if err := os.WriteFile(filepath.Join(out, name+"-"+vp.suffix+".png"), png, 0o644); err != nil {
					return err
				}
			}
			_, err := chromedp.EmulateViewport(1280, 800)(ctx, tg)
			return err
		})
	}
	headers := func(h network.Headers) chromedp.Action[chromedp.Void] {
		return chromedp.Func(func(ctx context.Context, tg *chromedp.Target) error {
			if _, err := cdp.Call(ctx, tg, network.Enable, network.EnableParams{}); err != nil {
				return err
			}
			_, err := cdp.Call(ctx, tg, network.SetExtraHTTPHeaders, network.SetExtraHTTPHeadersParams{Headers: h})
			return err
		})
	}
	// Start the browser on a context without a deadline (its first Run
	// owns the browser's life), then bound every step by ctx.
	if err := chromedp.Do(bctx); err != nil {
		t.Fatalf("chromium: %v", err)
	}
	ctx, cancel := context.WithTimeout(bctx, 45*time.Second)
	defer cancel()

	// The gateway page refuses the browser without the token: the login
	// form, no session data.
	if err := chromedp.Do(ctx, chromedp.Navigate(gwURL), chromedp.WaitVisible(`input[name="token"]`)); err != nil {
		t.Fatalf("gateway page without token: %v", err)
	}
	body, err := chromedp.Run(ctx, chromedp.Text(`body`))
	if err != nil {
		t.Fatal(err)
	}
	if strings.Contains(body, "plant-a") {
		t.Fatalf("gateway page without token shows session data: %q", body)
	}
	// With the token: the session, and charts with points.
	var points, sessions int
	if err := chromedp.Do(ctx,
		headers(network.Headers{"Authorization": "Bearer " + token}),
		chromedp.Navigate(gwURL),
		chromedp.WaitVisible(`#sessions td.ident`),
		waitJS(`document.querySelectorAll('#sessions tbody tr[data-id]').length`, &sessions, 1),
		waitJS(chartMin, &points, 2),
		shot("gateway"),
	); err != nil {
		t.Fatalf("gateway page: %v", err)
	}
	if body, err = chromedp.Run(ctx, chromedp.Text(`#sessions tbody`)); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(body, "plant-a") || !strings.Contains(body, "10.10.0.") {
		t.Fatalf("gateway sessions table %q: want plant-a with its 10.10.0.x address", body)
	}
	fails, err := chromedp.Run(ctx, chromedp.Text(`#failures tbody`))
	if err != nil || !strings.Contains(fails, "PPP authentication failed (wrong password)") || !strings.Contains(fails, "plant-a") {
		t.Fatalf("gateway failures table %q (%v): want the wrong PPP password of plant-a", fails, err)
	}
	creds, err := chromedp.Run(ctx, chromedp.Text(`#credentials tbody`))
	if err != nil || !strings.Contains(creds, "shared") || !strings.Contains(creds, "psk") {
		t.Fatalf("gateway credentials table %q (%v): want the shared PSK expiring in 10 days", creds, err)
	}
	t.Logf("gateway page: %d session(s), every chart ≥ %d points", sessions, points)

	// The bridge page: three endpoints online, charts with points.
	var online int
	if err := chromedp.Do(ctx,
		headers(network.Headers{}),
		chromedp.Navigate(bridgeURL),
		chromedp.WaitVisible(`#endpoints`),
		waitJS(`document.querySelectorAll('#endpoints tr.online').length`, &online, 3),
		waitJS(chartMin, &points, 2),
	); err != nil {
		t.Fatalf("bridge page: %v", err)
	}
	if body, err = chromedp.Run(ctx, chromedp.Text(`#uplink-state`)); err != nil || body != "up" {
		t.Fatalf("bridge page uplink state %q (%v), want up", body, err)
	}
	// The search box filters the rows.
	var visible int
	if err := chromedp.Do(ctx,
		chromedp.SendKeys(`#search`, "sensor-18"),
		waitJS(`4 - document.querySelectorAll('#endpoints tbody tr:not(.hidden)').length`, &visible, 3),
		waitJS(`(s => (s.value = '', s.dispatchEvent(new Event('input')), document.querySelectorAll('#endpoints tbody tr:not(.hidden)').length))(document.getElementById('search'))`, &visible, 3),
	); err != nil {
		t.Fatalf("search: %v", err)
	}
	// Kill sensor-19: the page (refreshing itself) shows it quiet.
	stops["sensor-19"]()
	if err := chromedp.Do(ctx,
		chromedp.WaitVisible(`#endpoints tr.quiet[data-endpoint="sensor-19"]`),
		waitJS(`document.querySelectorAll('#endpoints tr.online:not(.quiet)').length`, &online, 2),
		shot("bridge"),
	); err != nil {
		t.Fatalf("bridge page after killing sensor-19: %v", err)
	}
	quiet, err := chromedp.Run(ctx, chromedp.Text(`#quiet`))
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(quiet, "sensor-19") || strings.Contains(quiet, "sensor-17") {
		t.Fatalf("went-quiet list %q: want sensor-19 only", quiet)
	}
	t.Logf("bridge page: sensor-19 quiet, %d endpoints online; screenshots in %s", online, out)
}

// chartMin is the fewest data points of any chart on the page.
const chartMin = `Math.min(...[...document.querySelectorAll('figure.chart')].map(f => +f.dataset.points))`

// waitJS evaluates expr until it is at least min, storing it in v.
func waitJS(expr string, v *int, min int) chromedp.Action[chromedp.Void] {
	return chromedp.Func(func(ctx context.Context, tg *chromedp.Target) error {
		for {
			n, err := chromedp.Evaluate[int](expr)(ctx, tg)
			if err != nil {
				return err
			}
			*v = n
			if n >= min {
				return nil
			}
			select {
			case <-ctx.Done():
				return fmt.Errorf("%s = %d, want ≥ %d: %w", expr, n, min, ctx.Err())
			case <-time.After(100 * time.Millisecond):
			}
		}
	})
}

const gwYAML = `
psk: {shared: browser-psk, shared_expires: %q}
pool: {prefix: 10.10.0.0/24}
metrics: {listen: "0.0.0.0:0"}
status_page: {token_file: %q, sample_interval: 250ms}
dataplane: {mode: userspace, addresses: [10.20.0.1/32]}
policies:
  central:
    allow:
      - {dst: 10.20.0.1/32}
identities:
  - {name: plant-a, ppp: {password: pw-a}, routes: [10.10.8.0/24], policy: central}
`

func startGateway(t *testing.T, tokFile string) (*server.Server, *engine.Engine) {
	t.Helper()
	soon := time.Now().Add(10 * 24 * time.Hour).Format("2006-01-02")
	cfg, err := gconfig.Parse("gw.yaml", []byte(fmt.Sprintf(gwYAML, soon, tokFile)))
	if err != nil {
		t.Fatal(err)
	}
	ike, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	natt, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	eng := engine.New(engine.Config{IKEConn: ike, NATTConn: natt})
	srv, err := server.New(cfg, server.Options{Engine: eng})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- srv.Run(ctx) }()
	t.Cleanup(func() { cancel(); <-done })
	select {
	case <-eng.Ready():
	case err := <-done:
		t.Fatalf("gateway stopped: %v", err)
	case <-time.After(20 * time.Second):
		t.Fatal("gateway engine not ready after 20s")
	}
	waitFor(t, 10*time.Second, "gateway HTTP listener", func() bool { return srv.HTTPAddr() != "" })
	return srv, eng
}

// startSink answers the sensors' telemetry at central 10.20.0.1:5683.
func startSink(t *testing.T, gw *server.Server) net.PacketConn {
	t.Helper()
	us, ok := gw.Host().(*dataplane.Userspace)
	if !ok {
		t.Fatalf("gateway host is %T, want userspace", gw.Host())
	}
	pc, err := us.Stack().ListenUDP(netip.MustParseAddrPort("10.20.0.1:5683"))
	if err != nil {
		t.Fatal(err)
	}
	coaptest.Serve(t, pc, func(m *pool.Message, _ net.Addr) [][]byte {
		return coaptest.Reply(m, codes.Changed, nil)
	})
	return pc
}

func get(t *testing.T, url, token string) int {
	t.Helper()
	req, _ := http.NewRequest(http.MethodGet, url, nil)
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	return resp.StatusCode
}

// nonLoopbackAddr returns one of this host's non-loopback IPv4
// addresses (the gateway listens on all of them), or 127.0.0.1 if it has
// none: the listener binds 0.0.0.0 either way, which is what needs the
// token.
func nonLoopbackAddr() string {
	as, _ := net.InterfaceAddrs()
	for _, a := range as {
		if n, ok := a.(*net.IPNet); ok && n.IP.To4() != nil && !n.IP.IsLoopback() {
			return n.IP.String()
		}
	}
	return "127.0.0.1"
}

func mustPort(t *testing.T, hostport string) string {
	t.Helper()
	_, p, err := net.SplitHostPort(hostport)
	if err != nil {
		t.Fatal(err)
	}
	return p
}

func waitFor(t *testing.T, d time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(d)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("%s: not within %v", what, d)
		}
		time.Sleep(50 * time.Millisecond)
	}
}
