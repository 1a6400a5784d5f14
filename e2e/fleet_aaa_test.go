package e2e

import (
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/fleetgate/fleetgate/internal/netns"
	"github.com/fleetgate/fleetgate/internal/realpeer"
	"github.com/fleetgate/fleetgate/internal/testenv"
)

const (
	fleetGatewayID = "gw.fleet.e2e" // a SAN of both gateways' certificates
	radiusUser     = "plant-a-r"    // the site's RADIUS-only PPP user
	radiusSecret   = "e2e-radius-secret"
)

// TestFleetAAA: the fleet's shared AAA and revocation source with real
// peers, on the fleet topology (two gateways running the real binary,
// the site authenticating by certificate):
//   - FreeRADIUS r1 (core) and r2 (central) in both gateways' pools; the
//     bridge's PPP user exists only in RADIUS (bound to the site
//     certificate by Filter-Id). r1 stopped + radclient disconnect: the
//     next login is authenticated by r2.
//   - both stopped: the site logs in with its identity from the gateway's
//     own config; accounting is spooled; a FreeRADIUS r3 started where r2
//     was receives the rest: every Start and Stop of the test's sessions
//     is in exactly one detail file exactly once (counted by
//     Acct-Session-Id).
//   - `gateway pki revoke`: the gateways ask `gateway pki serve-crl`'s
//     OCSP responder (pki.ocsp_url, ocsp_refresh 3s): the live session
//     ends within the refresh interval and both gateways refuse the
//     site's certificate afterwards.
//   - before that, the responder down (stopped, every cached answer stale:
//     --ocsp-validity and ocsp_refresh 3 s): gw2 (pki.ocsp_fail: closed)
//     refuses the site's login, gw1 (open) accepts it; each logs the
//     decision and counts it (fleetgate_ocsp_fail_policy_total).
func TestFleetAAA(t *testing.T) {
	t.Parallel() // own namespaces; mostly waits
	testenv.RequireRoot(t)
	for _, b := range []string{"nft", "ip", "ss", "radclient", "freeradius"} {
		testenv.RequireBinary(t, b)
	}
	Bin(t, "bridge")
	t0 := time.Now()
	e, gws := newFleet(t)
	topo := e.Topo
	core, central := topo.Host("core"), e.Central
	gwBin := Bin(t, "gateway")
	pkiDir := filepath.Join(e.Dir, "pki")
	e.mustRun(nil, gwBin, "pki", "init", "--dir", pkiDir)
	for _, g := range gws {
		e.mustRun(nil, gwBin, "pki", "issue", g.name, "--dir", pkiDir, "--kind", "gateway", "--san", g.public, "--san", fleetGatewayID)
	}
	e.mustRun(nil, gwBin, "pki", "issue", siteName, "--dir", pkiDir, "--kind", "site", "--san", siteID)
	e.mustRun(nil, gwBin, "pki", "crl", "--dir", pkiDir)
	const ocspAddr = "10.200.0.1:8089"
	// Answers valid 3 s (= ocsp_refresh): with the responder down, no
	// cached answer decides a login for long.
	const ocspValidity = 3 * time.Second
	startResponder := func() *netns.Proc {
		p := e.startDaemon(core, "gateway", "pki", "serve-crl", "--dir", pkiDir, "--listen", ocspAddr, "--ocsp-validity", ocspValidity.String())
		e.waitFor("OCSP responder", 10*time.Second, p, func() bool { return e.get(core, ocspAddr, "/crl.pem") != nil })
		return p
	}
	responder := startResponder()

	user := realpeer.RADIUSUser{Name: radiusUser, Password: pppPass, Reply: []string{
		fmt.Sprintf("Filter-Id = %q", siteID), "Framed-IP-Address = 10.10.0.9", fmt.Sprintf("Framed-Route = %q", SitePrefix.String())}}
	r1 := realpeer.StartFreeRADIUS(t, core, realpeer.FreeRADIUSConfig{Users: []realpeer.RADIUSUser{user}, Secret: radiusSecret})
	r2 := realpeer.StartFreeRADIUS(t, central, realpeer.FreeRADIUSConfig{Users: []realpeer.RADIUSUser{user}, Secret: radiusSecret})

	for i, g := range gws {
		c := gatewayConfig(e.Dir, Options{UplinkCert: true})
		c = strings.Replace(c, "pool: {prefix: 10.10.0.0/24, gateway: 10.10.0.1}", "pool: {prefix: 10.10.0.0/24, gateway: 10.10.0.1, slice: "+[]string{"10.10.0.64/26", "10.10.0.128/26"}[i]+"}", 1)
		c = strings.Replace(c, "    routes: ["+SitePrefix.String()+"]", "    address: 10.10.0.7\n    routes: ["+SitePrefix.String()+"]", 1)
		c = strings.Replace(c, "cert: certs/gw1.crt, key: certs/gw1.key, crl: crl.pem}",
			fmt.Sprintf("cert: certs/%s.crt, key: certs/%s.key, ocsp_url: \"http://%s/ocsp\", ocsp_refresh: 3s}", g.name, g.name, ocspAddr), 1)
		// Responder down: gw1 accepts logins (open), gw2 refuses them (closed).
		c = strings.Replace(c, "ocsp_refresh: 3s}", "ocsp_refresh: 3s, ocsp_fail: "+[]string{"open", "closed"}[i]+"}", 1)
		c += "gateway_id: " + fleetGatewayID + "\n"
		c += fmt.Sprintf(`radius:
  auth: %q
  acct: %q
  auth_servers: [%q]
  acct_servers: [%q]
  secret: %s
  timeout: 1s
  dead_time: 5s
  acct_spool: %s
  phase1_id_attribute: Filter-Id
  nas_identifier: %s
  dae_listen: "%s:3799"
  dae_clients: [10.201.0.0/16]
`, r1.Auth, r1.Acct, r2.Auth, r2.Acct, radiusSecret, filepath.Join(e.Dir, g.name+"-acct.db"), g.name, g.core)
		g.config = filepath.Join(e.Dir, g.name+".yaml")
		e.write(g.config, c)
		e.mustRun(nil, gwBin, "--check-config", g.config)
	}
	logs := map[string]string{} // gateway name -> its log file
	for _, g := range gws {
		g.proc = e.startDaemon(g.host, "gateway", "run", "-c", g.config)
		e.mu.Lock()
		logs[g.name] = filepath.Join(e.Dir, fmt.Sprintf("gateway-%d.log", e.starts["gateway"]))
		e.mu.Unlock()
		h := g.host
		e.waitFor(g.name+" listening", 20*time.Second, g.proc, func() bool {
			out, _ := h.Command("ss", "-Hlun").Output()
			return strings.Contains(string(out), ":4500 ") && e.get(h, gatewayHTTP, "/metrics") != nil
		})
	}
	bridgeYAML := func(pppUserName string) string {
		bc := bridgeConfig(e.Dir, Options{UplinkCert: true})
		bc = strings.Replace(bc, `gateways: ["203.0.113.2:500"]`, `gateways: ["203.0.113.2:500", "192.0.2.2:500"]`, 1)
		bc = strings.Replace(bc, "gateway_id: "+GatewayPublic.String(), "gateway_id: "+fleetGatewayID, 1)
		return strings.Replace(bc, "ppp_user: "+pppUser+"\n", "ppp_user: "+pppUserName+"\n", 1)
	}
	e.BridgeConfig = filepath.Join(e.Dir, "bridge.yaml")
	e.write(e.BridgeConfig, bridgeYAML(radiusUser))
	e.mustRun(nil, Bin(t, "bridge"), "--check-config", e.BridgeConfig)
	e.StartBridge()
	st := e.WaitUplinkUp(60 * time.Second)
	holder := func(s Status) *fleetGW {
		for _, g := range gws {
			if strings.Contains(s.Uplink, "gateway="+g.public+":") {
				return g
			}
		}
		t.Fatalf("uplink on no known gateway: %s", s.Uplink)
		return nil
	}
	g := holder(st)
	if !strings.Contains(st.Uplink, "addr=10.10.0.9") {
		t.Errorf("uplink %s: want the RADIUS Framed-IP-Address 10.10.0.9", st.Uplink)
	}
	accepts := func(r *realpeer.FreeRADIUS) int { return strings.Count(r.Log(), "Sent Access-Accept") }
	if accepts(r1) != 1 || accepts(r2) != 0 {
		t.Errorf("Access-Accepts r1 %d r2 %d, want 1 0", accepts(r1), accepts(r2))
	}
	t.Logf("%v: bridge up on %s as RADIUS user %s (r1 accepted)", time.Since(t0).Round(100*time.Millisecond), g.name, radiusUser)

	// disconnect ends the session with radclient (from core) and waits
	// for the bridge to be up again.
	disconnect := func(g *fleetGW, user string) (*fleetGW, time.Duration) {
		t.Helper()
		connects := func() float64 {
			v, _ := MetricValue(string(e.get(e.Edge, bridgeHTTP, "/metrics")), "uplink_connects_total")
			return v
		}
		before := connects()
		rc := core.Command("radclient", "-t", "3", "-r", "1", "-x", g.core+":3799", "disconnect", radiusSecret)
		rc.Stdin = strings.NewReader(fmt.Sprintf("User-Name = %q\n", user))
		out, _ := rc.CombinedOutput()
		if !strings.Contains(string(out), "Disconnect-ACK") {
			t.Fatalf("radclient disconnect %s → %s:\n%s", user, g.name, out)
		}
		at := time.Now()
		var s Status
		if !Poll(40*time.Second, func() bool {
			var err error
			s, err = e.status()
			return err == nil && strings.HasPrefix(s.Uplink, "up") && connects() > before
		}) {
			t.Fatalf("bridge not up again within 40 s of the Disconnect-ACK: %+v", s)
		}
		return holder(s), time.Since(at)
	}

	// r1 stopped: the next login goes to r2.
	r1.Proc.Stop()
	g, d := disconnect(g, radiusUser)
	if accepts(r2) != 1 {
		t.Errorf("r2 Access-Accepts %d after r1 stopped, want 1", accepts(r2))
	}
	t.Logf("r1 stopped, radclient disconnect: bridge up again on %s after %v, authenticated by r2", g.name, d.Round(100*time.Millisecond))

	// Both stopped: the site logs in with the gateway's own identity
	// (ppp user plant-a, local password); accounting waits in the spool.
	r2.Proc.Stop()
	e.write(e.BridgeConfig, bridgeYAML(pppUser))
	e.StopBridge()
	restarted := time.Now()
	e.StartBridge()
	st = e.WaitUplinkUp(60 * time.Second)
	g = holder(st)
	t.Logf("both RADIUS servers stopped: bridge restarted as local identity %s, up on %s after %v", pppUser, g.name, time.Since(restarted).Round(100*time.Millisecond))
	g, d = disconnect(g, pppUser)
	t.Logf("radclient disconnect (no RADIUS server): up again on %s after %v", g.name, d.Round(100*time.Millisecond))
	spooled := 0.0
	for _, x := range gws {
		v, _ := MetricValue(string(e.get(x.host, gatewayHTTP, "/metrics")), "fleetgate_radius_acct_spool_records")
		spooled += v
	}
	if spooled == 0 {
		t.Error("no accounting record waiting in the gateways' spools with both servers down")
	}

	// r3 where r2 was: the spools drain into it.
	r3 := realpeer.StartFreeRADIUS(t, central, realpeer.FreeRADIUSConfig{Users: []realpeer.RADIUSUser{user}, Secret: radiusSecret})
	back := time.Now()
	// Sessions so far: 1 (r1), 2 (r2), 3 and 4 local; 1-3 ended.
	var starts, stops map[string]int
	var delayed int
	count := func() {
		starts, stops, delayed = map[string]int{}, map[string]int{}, 0
		for _, r := range []*realpeer.FreeRADIUS{r1, r2, r3} {
			for _, rec := range strings.Split(r.Detail(), "\n\n") {
				id := detailAttr(rec, "Acct-Session-Id")
				switch detailAttr(rec, "Acct-Status-Type") {
				case "Start":
					starts[id]++
				case "Stop":
					stops[id]++
				default:
					continue
				}
				if v := detailAttr(rec, "Acct-Delay-Time"); v != "" && v != "0" && r == r3 {
					delayed++
				}
			}
		}
	}
	if !Poll(30*time.Second, func() bool { count(); return len(starts) >= 4 && len(stops) >= 3 }) {
		t.Fatalf("accounting after r3 started: starts %v stops %v", starts, stops)
	}
	for id, n := range starts {
		if n != 1 {
			t.Errorf("session %s: %d Starts", id, n)
		}
	}
	for id, n := range stops {
		if n != 1 || starts[id] != 1 {
			t.Errorf("session %s: %d Stops, %d Starts", id, n, starts[id])
		}
	}
	if len(starts) != 4 || len(stops) != 3 {
		t.Errorf("sessions: %d Starts, %d Stops, want 4 and 3", len(starts), len(stops))
	}
	t.Logf("accounting: %d Starts and %d Stops over r1/r2/r3, each once; %d records reached r3 with Acct-Delay-Time > 0, all within %v of r3 starting",
		len(starts), len(stops), delayed, time.Since(back).Round(100*time.Millisecond))

	logLen := map[string]int{}
	readLog := func(x *fleetGW) string { b, _ := os.ReadFile(logs[x.name]); return string(b) }
	markLogs := func() {
		for _, x := range gws {
			logLen[x.name] = len(readLog(x))
		}
	}

	// OCSP responder down: the configured policy decides, logged and
	// counted. The bridge restarts with gw2 (closed) first: refused there,
	// then accepted by gw1 (open).
	policy := func(x *fleetGW, decision string) float64 {
		v, _ := MetricValue(string(e.get(x.host, gatewayHTTP, "/metrics")), `fleetgate_ocsp_fail_policy_total{decision="`+decision+`"}`)
		return v
	}
	phase := time.Now()
	markLogs()
	refused0, accepted0 := policy(gws[1], "refused"), policy(gws[0], "accepted")
	downAt := time.Now()
	e.StopBridge()
	responder.Stop()
	// Every answer a gateway holds predates the stop, so it is stale
	// (older than ocsp_refresh, past its nextUpdate) ocspValidity later:
	// a wait for the protocol's validity, not for an event.
	time.Sleep(time.Until(downAt.Add(ocspValidity + 200*time.Millisecond)))
	e.write(e.BridgeConfig, strings.Replace(bridgeYAML(pppUser), `gateways: ["203.0.113.2:500", "192.0.2.2:500"]`, `gateways: ["192.0.2.2:500", "203.0.113.2:500"]`, 1))
	e.StartBridge()
	st = e.WaitUplinkUp(60 * time.Second)
	if g = holder(st); g != gws[0] {
		t.Errorf("responder down: bridge up on %s, want gw1 (ocsp_fail: open)", g.name)
	}
	const openLine, closedLine = "login accepted (pki.ocsp_fail: open)", "login refused (pki.ocsp_fail: closed)"
	if !Poll(10*time.Second, func() bool {
		return strings.Contains(readLog(gws[1])[logLen["gw2"]:], closedLine) && strings.Contains(readLog(gws[0])[logLen["gw1"]:], openLine)
	}) {
		t.Errorf("responder down: gw2 logged %q: %v; gw1 logged %q: %v", closedLine, strings.Contains(readLog(gws[1])[logLen["gw2"]:], closedLine),
			openLine, strings.Contains(readLog(gws[0])[logLen["gw1"]:], openLine))
	}
	refused, accepted := policy(gws[1], "refused")-refused0, policy(gws[0], "accepted")-accepted0
	if refused < 1 || accepted < 1 {
		t.Errorf("responder down: gw2 refused %v logins, gw1 accepted %v; want >= 1 each", refused, accepted)
	}
	if n := policy(gws[0], "refused") + policy(gws[1], "accepted"); n != 0 {
		t.Errorf("responder down: %v decisions against the configured policy (gw1 refused + gw2 accepted)", n)
	}
	up := time.Since(downAt)
	startResponder() // back for the revocation below
	t.Logf("OCSP responder down: gw2 (closed) refused %v login(s), gw1 (open) accepted %v, both logged; bridge up on %s %v after the responder stopped; phase %v",
		refused, accepted, g.name, up.Round(100*time.Millisecond), time.Since(phase).Round(100*time.Millisecond))

	// Revocation through OCSP.
	markLogs()
	e.mustRun(nil, gwBin, "pki", "revoke", siteName, "--dir", pkiDir)
	revoked := time.Now()
	if !Poll(20*time.Second, func() bool { s, err := e.status(); return err == nil && !strings.HasPrefix(s.Uplink, "up") }) {
		t.Fatalf("the revoked site's session on %s is still up 20 s after the revocation", g.name)
	}
	ended := time.Since(revoked)
	refusedBy := func(x *fleetGW) bool {
		return strings.Contains(readLog(x)[logLen[x.name]:], "certificate is revoked")
	}
	if !Poll(40*time.Second, func() bool { return refusedBy(gws[0]) && refusedBy(gws[1]) }) {
		t.Errorf("after the revocation gw1 refused %v, gw2 refused %v (40 s)", refusedBy(gws[0]), refusedBy(gws[1]))
	}
	if s, _ := e.status(); strings.HasPrefix(s.Uplink, "up") {
		t.Errorf("revoked site up again: %s", s.Uplink)
	}
	t.Logf("revoked at the CA: live session on %s ended after %v (ocsp_refresh 3s); both gateways refuse the certificate (%v after the revocation); test %v",
		g.name, ended.Round(100*time.Millisecond), time.Since(revoked).Round(100*time.Millisecond), time.Since(t0).Round(time.Second))
	if ended > 3*time.Second+2*time.Second {
		t.Logf("NOTE: session ended %v after the revocation, more than ocsp_refresh (3 s) + 2 s", ended)
	}
}

var detailRE = regexp.MustCompile(`(?m)^\s*([A-Za-z0-9-]+) = "?([^"\n]*)"?$`)

// detailAttr returns an attribute's value in one detail-file record.
func detailAttr(rec, name string) string {
	for _, m := range detailRE.FindAllStringSubmatch(rec, -1) {
		if m[1] == name {
			return m[2]
		}
	}
	return ""
}
