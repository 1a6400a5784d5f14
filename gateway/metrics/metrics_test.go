package metrics

import (
	"net/http/httptest"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/fleetgate/fleetgate/internal/testenv"
)

func scrape(t *testing.T, r *prometheus.Registry) string {
	t.Helper()
	rec := httptest.NewRecorder()
	promhttp.HandlerFor(r, promhttp.HandlerOpts{}).ServeHTTP(rec, httptest.NewRequest("GET", "/metrics", nil))
	if rec.Code != 200 {
		t.Fatalf("scrape: HTTP %d: %s", rec.Code, rec.Body)
	}
	return rec.Body.String()
}

func TestExposition(t *testing.T) {
	now := time.Date(2026, 11, 23, 12, 0, 0, 0, time.UTC)
	g := NewGateway(func() time.Time { return now })
	r := prometheus.NewRegistry()
	r.MustRegister(g)
	g.SetupOK("hall7")
	g.SetupOK("hall7")
	g.SetupOK("bad\xffname") // a peer's user name need not be UTF-8
	g.SetupFailed(PhaseAuth, "bad_password")
	g.Reconnect("hall7")
	now = now.Add(30 * time.Minute)
	g.Reconnect("hall7")
	now = now.Add(45 * time.Minute) // first reconnect is now older than an hour
	g.SetExpiries([]Expiry{{Name: "site-hall7", Type: "cert", NotAfter: time.Unix(1800000000, 0)}})
	g.Rekey(RekeyIKE)
	g.Rekey(RekeyIPsec)
	g.Rekey(RekeyIPsec)
	g.SetupDuration(3 * time.Millisecond)
	g.SetupDuration(700 * time.Millisecond)
	g.SetupDuration(-time.Second) // ignored

	out := scrape(t, r)
	for _, want := range []string{
		`fleetgate_session_setups_total{identity="hall7"} 2`,
		`fleetgate_session_setups_total{identity="bad` + "\uFFFD" + `name"} 1`,
		`fleetgate_session_setup_failures_total{phase="ppp_auth",reason="bad_password"} 1`,
		`fleetgate_reconnects_total{identity="hall7"} 2`,
		`fleetgate_reconnects_last_hour{identity="hall7"} 1`,
		`fleetgate_credential_expiry_timestamp_seconds{name="site-hall7",type="cert"} 1.8e+09`,
		`fleetgate_rekeys_total{kind="ike"} 1`,
		`fleetgate_rekeys_total{kind="ipsec"} 2`,
		"# TYPE fleetgate_session_setup_duration_seconds histogram",
		`fleetgate_session_setup_duration_seconds_bucket{le="0.005"} 1`,
		`fleetgate_session_setup_duration_seconds_bucket{le="0.5"} 1`,
		`fleetgate_session_setup_duration_seconds_bucket{le="1"} 2`,
		`fleetgate_session_setup_duration_seconds_count 2`,
	} {
		if !strings.Contains(out, want) {
			t.Errorf("exposition lacks %q:\n%s", want, out)
		}
	}
	if strings.Count(out, "# TYPE fleetgate_rekeys_total") != 1 {
		t.Error("family header repeated")
	}
	promtool(t, out)
}

// promtool runs `promtool check metrics` (Debian's prometheus package) on
// an exposition: names, types, HELP and the counter _total convention.
func promtool(t *testing.T, exposition string) {
	t.Helper()
	pt := testenv.RequireBinary(t, "promtool")
	cmd := exec.Command(pt, "check", "metrics")
	cmd.Stdin = strings.NewReader(exposition)
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Errorf("promtool check metrics: %v\n%s", err, out)
	}
}
