package statuspage

import (
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/fleetgate/fleetgate/internal/fleetview"
)

func testPage(t *testing.T, listen, token string, actions map[string]Action) (*Page, http.Handler) {
	t.Helper()
	now := time.Date(2026, 12, 7, 12, 0, 0, 0, time.UTC)
	smp := NewSampler(time.Second, 3, SeriesSpec{"rx", "B/s"}, SeriesSpec{"sessions", "sessions"})
	for i := range 5 {
		smp.Add(now.Add(time.Duration(i)*time.Second), float64(i*100), 1)
	}
	p, err := New(Config{Kind: "gateway", Title: "gw1", Listen: listen, Token: token, Actions: actions, Now: func() time.Time { return now },
		Views: map[string]func() any{
			"sessions": func() any {
				return fleetview.Sessions{Now: now, Engine: "running", Sessions: []fleetview.Session{{ID: 7, Identity: "plant-a", VPNAddr: "10.10.0.2", Rekeys: -1}}}
			},
			"failures":    func() any { return fleetview.Failures{Capacity: 4} },
			"credentials": func() any { return fleetview.Credentials{} },
		},
		Charts: smp.Charts, ChartTitles: map[string]string{"B/s": "Throughput"}})
	if err != nil {
		t.Fatal(err)
	}
	mux := http.NewServeMux()
	p.Register(mux)
	return p, mux
}

func do(h http.Handler, method, path string, hdr map[string]string, body string) *httptest.ResponseRecorder {
	r := httptest.NewRequest(method, path, strings.NewReader(body))
	for k, v := range hdr {
		r.Header.Set(k, v)
	}
	w := httptest.NewRecorder()
	h.ServeHTTP(w, r)
	return w
}

func TestIsLoopback(t *testing.T) {
	for in, want := range map[string]bool{"127.0.0.1:9410": true, "[::1]:1": true, "localhost:80": true, "127.3.4.5:1": true,
		"0.0.0.0:9410": false, ":9410": false, "[::]:1": false, "192.0.2.1:80": false} {
		if got := IsLoopback(in); got != want {
			t.Errorf("IsLoopback(%q) = %v, want %v", in, got, want)
		}
	}
}

func TestAccess(t *testing.T) {
	// Loopback: open without a token.
	_, h := testPage(t, "127.0.0.1:9410", "", nil)
	if w := do(h, "GET", "/", nil, ""); w.Code != 200 || !strings.Contains(w.Body.String(), "plant-a") {
		t.Fatalf("loopback page: %d %q", w.Code, w.Body.String())
	}
	// Non-loopback, no token configured: refused, with the fix.
	p, h := testPage(t, "0.0.0.0:9410", "", nil)
	for _, path := range []string{"/", "/api/sessions", "/api/charts"} {
		if w := do(h, "GET", path, nil, ""); w.Code != http.StatusForbidden || !strings.Contains(w.Body.String(), "token_file") {
			t.Fatalf("%s without token config: %d %q, want 403 naming token_file", path, w.Code, w.Body.String())
		}
	}
	if got := p.Stats.Refused.Load(); got != 3 {
		t.Fatalf("Refused = %d, want 3", got)
	}
	// Non-loopback with a token: 401 without it, 200 with it (header or
	// the cookie of the login form).
	const tok = "s3cret-token-for-tests"
	p, h = testPage(t, "192.0.2.1:9410", tok, nil)
	if w := do(h, "GET", "/api/sessions", nil, ""); w.Code != http.StatusUnauthorized {
		t.Fatalf("no token: %d, want 401", w.Code)
	}
	if w := do(h, "GET", "/", map[string]string{"Authorization": "Bearer wrong"}, ""); w.Code != http.StatusUnauthorized || !strings.Contains(w.Body.String(), `name="token"`) {
		t.Fatalf("wrong token: %d, want 401 with the login form", w.Code)
	}
	if w := do(h, "GET", "/api/sessions", map[string]string{"Authorization": "Bearer " + tok}, ""); w.Code != 200 || !strings.Contains(w.Body.String(), `"identity": "plant-a"`) {
		t.Fatalf("bearer: %d %q", w.Code, w.Body.String())
	}
	form := map[string]string{"Content-Type": "application/x-www-form-urlencoded"}
	if w := do(h, "POST", "/login", form, "token=nope"); w.Code != http.StatusUnauthorized || p.Stats.LoginFailed.Load() != 1 {
		t.Fatalf("bad login: %d, failed %d", w.Code, p.Stats.LoginFailed.Load())
	}
	w := do(h, "POST", "/login", form, "token="+url.QueryEscape(tok))
	c := w.Result().Cookies()
	if w.Code != http.StatusSeeOther || len(c) != 1 || !c[0].HttpOnly || c[0].SameSite != http.SameSiteStrictMode {
		t.Fatalf("login: %d cookies %v", w.Code, c)
	}
	if w := do(h, "GET", "/", map[string]string{"Cookie": c[0].Name + "=" + c[0].Value}, ""); w.Code != 200 {
		t.Fatalf("cookie: %d", w.Code)
	}
	// Assets are public (no data in them).
	if w := do(h, "GET", "/assets/page.js", nil, ""); w.Code != 200 {
		t.Fatalf("asset: %d", w.Code)
	}
}

func TestActions(t *testing.T) {
	const tok = "another-token"
	var did []string
	acts := map[string]Action{"terminate": func(target string) (string, error) { did = append(did, target); return "closed " + target, nil }}
	if _, err := New(Config{Kind: "gateway", Actions: acts}); err == nil {
		t.Fatal("actions without a token accepted")
	}
	p, h := testPage(t, "127.0.0.1:1", tok, acts)
	hdr := map[string]string{"Authorization": "Bearer " + tok, "X-Fleetgate-Action": "1"}
	// Loopback still needs the token for actions, and the CSRF header.
	if w := do(h, "POST", "/api/actions/terminate?target=7", map[string]string{"X-Fleetgate-Action": "1"}, ""); w.Code != http.StatusUnauthorized {
		t.Fatalf("action without token: %d", w.Code)
	}
	if w := do(h, "POST", "/api/actions/terminate?target=7", map[string]string{"Authorization": "Bearer " + tok}, ""); w.Code != http.StatusForbidden {
		t.Fatalf("action without header: %d", w.Code)
	}
	if w := do(h, "POST", "/api/actions/remove?target=x", hdr, ""); w.Code != http.StatusForbidden {
		t.Fatalf("disabled action: %d", w.Code)
	}
	if w := do(h, "POST", "/api/actions/terminate?target=7", hdr, ""); w.Code != 200 || len(did) != 1 || did[0] != "7" {
		t.Fatalf("action: %d %v", w.Code, did)
	}
	if p.Stats.Actions.Load() != 1 || p.Stats.ActionsRefused.Load() != 3 {
		t.Fatalf("actions %d refused %d, want 1 and 3", p.Stats.Actions.Load(), p.Stats.ActionsRefused.Load())
	}
	// The button is shown only with the token.
	if w := do(h, "GET", "/", nil, ""); strings.Contains(w.Body.String(), "data-action") {
		t.Fatal("terminate button shown without the token")
	}
	if w := do(h, "GET", "/", hdr, ""); !strings.Contains(w.Body.String(), `data-action="terminate"`) {
		t.Fatal("terminate button missing with the token")
	}
}

func TestChartsBounded(t *testing.T) {
	_, h := testPage(t, "127.0.0.1:1", "", nil)
	w := do(h, "GET", "/", nil, "")
	body, _ := io.ReadAll(w.Body)
	// 5 samples added to a 3-point sampler: 3 points per series, 2 charts.
	if n := strings.Count(string(body), `data-points="3"`); n != 2 {
		t.Fatalf("charts with 3 points: %d, want 2\n%s", n, body)
	}
	if !strings.Contains(string(body), `points="0.0,90.0 300.0,60.0 600.0,30.0"`) {
		t.Fatalf("throughput polyline not as computed (200,300,400 on a 0..500 axis)\n%s", body)
	}
}

func TestRing(t *testing.T) {
	r := NewRing[int](3)
	for i := range 5 {
		r.Add(i)
	}
	got, total := r.Newest()
	if total != 5 || len(got) != 3 || got[0] != 4 || got[2] != 2 {
		t.Fatalf("Newest = %v, %d; want [4 3 2], 5", got, total)
	}
	if Rate(10, 5, time.Second) != 0 || Rate(0, 100, 2*time.Second) != 50 {
		t.Fatal("Rate")
	}
}
