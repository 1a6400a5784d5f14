package metrics

import (
	"net/http/httptest"
	"strings"
	"testing"
	"time"
)

func TestExposition(t *testing.T) {
	var r Registry
	now := time.Date(2026, 11, 23, 12, 0, 0, 0, time.UTC)
	g := &Gateway{Now: func() time.Time { return now }}
	r.Register(g.Collect)
	r.Register(func(w *Writer) {
		w.Add("fleetgate_sessions_active", Gauge, "Established sessions.", 2)
		w.Add("fleetgate_drops_total", Counter, "Dropped packets.", 3, "reason", "policy")
		w.Add("fleetgate_drops_total", Counter, "Dropped packets.", 1, "reason", `we"ird\`)
	})
	g.SetupOK("hall7")
	g.SetupOK("hall7")
	g.SetupFailed(PhaseAuth, "bad_password")
	g.Reconnect("hall7")
	now = now.Add(30 * time.Minute)
	g.Reconnect("hall7")
	now = now.Add(45 * time.Minute) // first reconnect is now older than an hour
	g.SetExpiries([]Expiry{{Name: "site-hall7", Type: "cert", NotAfter: time.Unix(1800000000, 0)}})

	rec := httptest.NewRecorder()
	r.ServeHTTP(rec, httptest.NewRequest("GET", "/metrics", nil))
	out := rec.Body.String()
	if ct := rec.Header().Get("Content-Type"); !strings.HasPrefix(ct, "text/plain; version=0.0.4") {
		t.Errorf("content type %q", ct)
	}
	for _, want := range []string{
		"# TYPE fleetgate_sessions_active gauge\nfleetgate_sessions_active 2\n",
		"# HELP fleetgate_drops_total Dropped packets.\n# TYPE fleetgate_drops_total counter\nfleetgate_drops_total{reason=\"policy\"} 3\nfleetgate_drops_total{reason=\"we\\\"ird\\\\\"} 1\n",
		`fleetgate_session_setups_total{identity="hall7"} 2`,
		`fleetgate_session_setup_failures_total{phase="ppp_auth",reason="bad_password"} 1`,
		`fleetgate_reconnects_total{identity="hall7"} 2`,
		`fleetgate_reconnects_last_hour{identity="hall7"} 1`,
		`fleetgate_credential_expiry_timestamp_seconds{name="site-hall7",type="cert"} 1.8e+09`,
	} {
		if !strings.Contains(out, want) {
			t.Errorf("exposition lacks %q:\n%s", want, out)
		}
	}
	if strings.Count(out, "# TYPE fleetgate_drops_total") != 1 {
		t.Error("family header repeated")
	}
}
