package e2e

import (
	"context"
	"net/netip"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/fleetgate/fleetgate/internal/realpeer"
	"github.com/fleetgate/fleetgate/uplink/ike"
	"github.com/fleetgate/fleetgate/uplink/tunnel"
)

// TestRevokedSiteClosedOnSIGHUP (issue "one identity per session",
// finding 6): the real bridge is up with its certificate; `gateway pki
// revoke` and SIGHUP to the real gateway close the live session (and its
// IKE SA) within 2 s, with the log line and the counter; the site cannot
// come back.
func TestRevokedSiteClosedOnSIGHUP(t *testing.T) {
	e := Setup(t, Options{UplinkCert: true})
	e.mustRun(nil, Bin(t, "gateway"), "pki", "revoke", siteName, "--dir", filepath.Join(e.Dir, "pki"))
	t0 := time.Now()
	t.Logf("revoking %s, then SIGHUP", siteName)
	if err := syscall.Kill(e.GatewayProc().PID, syscall.SIGHUP); err != nil {
		t.Fatal(err)
	}
	if !Poll(2*time.Second, func() bool {
		v, ok := MetricValue(e.GatewayMetrics(), "fleetgate_sessions_active")
		return ok && v == 0
	}) {
		t.Fatalf("revoked site still has a session 2 s after SIGHUP:\n%s", e.Log("gateway", 1))
	}
	t.Logf("revoked site's session closed %v after SIGHUP", time.Since(t0).Round(time.Millisecond))
	if !Poll(5*time.Second, func() bool {
		v, _ := MetricValue(e.GatewayMetrics(), `fleetgate_security_refusals_total{check="revoked_session_closed"}`)
		return v == 1
	}) {
		t.Errorf("no revoked_session_closed count:\n%s", e.GatewayMetrics())
	}
	log := e.Log("gateway", 1)
	for _, want := range []string{"closing the session of a revoked certificate", `"revoked_closed":1`} {
		if !strings.Contains(log, want) {
			t.Errorf("gateway log lacks %q", want)
		}
	}
	// The bridge retries; the revoked certificate is refused in phase 1.
	time.Sleep(3 * time.Second)
	if v, _ := MetricValue(e.GatewayMetrics(), "fleetgate_sessions_active"); v != 0 {
		t.Fatalf("revoked site came back: %v sessions", v)
	}
}

// TestCharonClientConfigIPsec (finding 7): the real gateway listens on
// 0.0.0.0; strongSwan (the starter reading ipsec.conf, charon's stroke
// plugin reading ipsec.secrets) configured with exactly what the real
// `gateway client-config --format ipsec` prints, from the site's box
// behind the NAT, completes Main Mode — accepting the gateway's ID, the
// address it dialled, which used to be "::" — and Quick Mode, then fails
// to install the SA, as this kernel has no ESP (LIBRARY-FACTS).
func TestCharonClientConfigIPsec(t *testing.T) {
	e := Setup(t, Options{NoStart: true})
	e.StartGateway()
	out := e.mustRun(nil, Bin(t, "gateway"), "client-config", siteName, "--format", "ipsec",
		"--gateway", GatewayPublic.String(), "-c", e.GatewayConfig)
	conf, secrets := ipsecParts(t, out)
	ch := realpeer.StartCharonIPsecConf(t, e.Edge, conf, secrets)
	log := ch.WaitLog(t, 30*time.Second, "IKE_SA fleetgate[1] established", "unable to install")
	if strings.Contains(log, "does not match") {
		t.Fatalf("charon refused the gateway's ID:\n%s", log)
	}
	for _, l := range strings.Split(log, "\n") {
		if strings.Contains(l, "IKE_SA fleetgate[1] established") || strings.Contains(l, "unable to install") {
			t.Log(strings.TrimSpace(l))
		}
	}
}

// ipsecParts cuts the ipsec.conf and ipsec.secrets sections out of the
// client-config output.
func ipsecParts(t *testing.T, out string) (conf, secrets string) {
	t.Helper()
	const confMark, secMark = "# ---- /etc/ipsec.conf ----", "# ---- /etc/ipsec.secrets ----"
	i, j := strings.Index(out, confMark), strings.Index(out, secMark)
	if i < 0 || j < i {
		t.Fatalf("no ipsec.conf/ipsec.secrets sections in:\n%s", out)
	}
	conf = out[i+len(confMark) : j]
	secrets = out[j+len(secMark):]
	if k := strings.Index(secrets, "\n# ----"); k >= 0 {
		secrets = secrets[:k]
	}
	return "config setup\n\n" + conf, secrets
}

// TestSharedPSKCannotBecomeSite (findings 1, 3, 4 against the real
// binaries): the real bridge is up with its certificate. An attacker on
// the WAN holding the shared PSK and the site's PPP credentials, using the
// project's own client, (1) logs in over PPP as the site after a phase 1
// with its own ID: refused (log line with both identities, counter), its
// IKE SA deleted; (2) presents the site's ID with the shared PSK plus
// INITIAL-CONTACT: refused in phase 1 (a certificate identity takes no
// PSK), the site's SAs untouched. The site keeps its session throughout.
func TestSharedPSKCannotBecomeSite(t *testing.T) {
	e := Setup(t, Options{UplinkCert: true})
	dial := func(localID string) error {
		ic, err := e.WAN.ListenPacket("udp4", e.WAN.Addr.String()+":0")
		if err != nil {
			t.Fatal(err)
		}
		nc, err := e.WAN.ListenPacket("udp4", e.WAN.Addr.String()+":0")
		if err != nil {
			t.Fatal(err)
		}
		ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
		defer cancel()
		tn, err := tunnel.Dial(ctx, tunnel.ClientConfig{
			Gateway: netip.AddrPortFrom(GatewayPublic, 500).String(), NATTPort: 4500,
			IKEConn: ic, NATTConn: nc, PSK: []byte(sitePSK),
			LocalID:  &ike.Identification{Type: ike.IDFQDN, Data: []byte(localID)},
			Username: pppUser, Password: pppPass,
		})
		if err == nil {
			_ = tn.Close()
		}
		return err
	}
	siteUp := func() bool {
		v, ok := MetricValue(e.GatewayMetrics(), "fleetgate_sessions_active")
		return ok && v == 1
	}
	// No identity may follow this phase 1 (the only one is a certificate
	// site): the session is refused before PPP authentication even starts.
	if err := dial("attacker.example.net"); err == nil || tunnel.PhaseOf(err) < tunnel.PhaseL2TP {
		t.Fatalf("attacker as %s over the shared PSK: got %v (phase %v), want a refusal after phase 1", pppUser, err, tunnel.PhaseOf(err))
	}
	if !Poll(5*time.Second, func() bool {
		v, _ := MetricValue(e.GatewayMetrics(), `fleetgate_security_refusals_total{check="ppp_identity_mismatch"}`)
		return v == 1
	}) {
		t.Errorf("refusal not counted:\n%s", e.GatewayMetrics())
	}
	log := e.Log("gateway", 1)
	if !strings.Contains(log, "L2TP session refused: no identity may log in after this phase 1 identity") || !strings.Contains(log, `"peer_id":"attacker.example.net"`) {
		t.Errorf("gateway log lacks the refusal naming the phase 1 identity")
	}
	if err := dial(siteID); tunnel.PhaseOf(err) != tunnel.PhaseIKE {
		t.Fatalf("attacker with the site's ID and the shared PSK: got %v, want a phase 1 failure", err)
	}
	if !Poll(5*time.Second, func() bool {
		v, _ := MetricValue(e.GatewayMetrics(), `fleetgate_security_refusals_total{check="psk_not_bound"}`)
		return v == 1
	}) {
		t.Errorf("psk_not_bound not counted:\n%s", e.GatewayMetrics())
	}
	time.Sleep(time.Second)
	if !siteUp() {
		t.Fatalf("the site lost its session:\n%s", e.GatewayMetrics())
	}
	if v, _ := MetricValue(e.GatewayMetrics(), `fleetgate_session_setups_total{identity="`+siteName+`"}`); v != 1 {
		t.Errorf("site set up %v times, want 1 (never evicted)", v)
	}
}
