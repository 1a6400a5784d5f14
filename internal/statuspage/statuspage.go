// Package statuspage serves the fleet status page of a daemon (gateway or
// bridge) on its existing HTTP listener: server-side rendered with
// html/template, a little plain JavaScript that refreshes the page and
// filters tables, every asset embedded (nothing fetched at run time), and
// the JSON API behind it under /api/ (views of internal/fleetview).
//
// Access: on a loopback listener anyone local may read; on any other
// address the bearer token is required (Authorization: Bearer, or the
// cookie the login form sets), and with no token configured the page is
// refused there (no default credential). Actions (terminate a session,
// remove an endpoint) exist only when the daemon enables them, always need
// the token, even on loopback, and are logged.
package statuspage

import (
	"bytes"
	"embed"
	"encoding/json"
	"fmt"
	"html/template"
	"io/fs"
	"log/slog"
	"net/http"
	"sort"
	"strings"
	"sync/atomic"
	"time"

	"github.com/fleetgate/fleetgate/internal/fleetview"
)

//go:embed assets
var assets embed.FS

// Action performs one operator action on target (a session ID, an
// endpoint name) and returns what it did, for the log and the reply.
type Action func(target string) (string, error)

// Config configures a Page.
type Config struct {
	// Kind selects the template: "gateway" or "bridge".
	Kind string
	// Title heads the page (the gateway's or site's name).
	Title string
	// Listen is the HTTP listener's configured address: loopback means
	// reading needs no token.
	Listen string
	// Token is the bearer token ("" none: without ClientCerts the page
	// is refused on a non-loopback listener).
	Token string
	// ClientCerts: the listener is TLS and asks for client certificates
	// of a configured CA (ServerTLS); a verified one counts as a
	// credential like the token.
	ClientCerts bool
	// Views are the JSON views by name, served as GET /api/<name> and
	// given to the template as .Views.<name>.
	Views map[string]func() any
	// Charts returns the chart series (GET /api/charts); nil: none.
	Charts func() fleetview.Charts
	// ChartTitles titles the charts by unit ("B/s": "Throughput").
	ChartTitles map[string]string
	// Actions are the enabled actions by name (POST
	// /api/actions/<name>?target=...); nil: read-only.
	Actions map[string]Action
	// Now is the clock (default time.Now).
	Now func() time.Time
	// Logger; nil discards.
	Logger *slog.Logger
}

// Stats count what the page refused and did.
type Stats struct {
	// Refused counts requests refused for want of the token.
	Refused atomic.Uint64
	// LoginFailed counts wrong tokens given to the login form.
	LoginFailed atomic.Uint64
	// Actions counts actions performed; ActionsRefused those refused.
	Actions        atomic.Uint64
	ActionsRefused atomic.Uint64
}

// Page is a daemon's status page.
type Page struct {
	cfg    Config
	acc    access
	certs  bool
	log    *slog.Logger
	tmpl   *template.Template
	static http.Handler
	// Stats are the page's counters.
	Stats Stats
}

// New returns the page for cfg.
func New(cfg Config) (*Page, error) {
	if cfg.Kind != "gateway" && cfg.Kind != "bridge" {
		return nil, fmt.Errorf("statuspage: unknown kind %q", cfg.Kind)
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if cfg.Token == "" && !cfg.ClientCerts && len(cfg.Actions) > 0 {
		return nil, fmt.Errorf("statuspage: actions need a token or client certificates")
	}
	log := cfg.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	t, err := template.New("page").Funcs(funcs).ParseFS(assets, "assets/layout.html", "assets/"+cfg.Kind+".html")
	if err != nil {
		return nil, fmt.Errorf("statuspage: %w", err)
	}
	sub, err := fs.Sub(assets, "assets")
	if err != nil {
		return nil, err
	}
	return &Page{cfg: cfg, acc: newAccess(cfg.Listen, cfg.Token), certs: cfg.ClientCerts, log: log, tmpl: t,
		static: http.StripPrefix("/assets/", http.FileServerFS(sub))}, nil
}

// Register adds the page's routes to mux: / (the page), /login, /assets/,
// /api/<view>, /api/charts and /api/actions/.
func (p *Page) Register(mux *http.ServeMux) {
	mux.HandleFunc("GET /{$}", p.page)
	mux.HandleFunc("POST /login", p.login)
	mux.Handle("GET /assets/", p.static)
	mux.HandleFunc("GET /api/{view}", p.api)
	mux.HandleFunc("POST /api/actions/{action}", p.action)
}

// refuse answers a request without the token.
func (p *Page) refuse(w http.ResponseWriter, r *http.Request, html bool) {
	p.Stats.Refused.Add(1)
	if p.acc.token == "" && !p.certs {
		msg := "status page refused: this listener is not loopback and neither status_page.token_file nor status_page.client_ca is configured (set one, or listen on 127.0.0.1)"
		http.Error(w, msg, http.StatusForbidden)
		return
	}
	if p.acc.token == "" {
		http.Error(w, "status page: a client certificate of the configured CA is required", http.StatusUnauthorized)
		return
	}
	w.Header().Set("WWW-Authenticate", `Bearer realm="fleetgate"`)
	if !html {
		http.Error(w, "status page: bearer token required", http.StatusUnauthorized)
		return
	}
	w.Header().Set("Content-Type", "text/html; charset=utf-8")
	w.WriteHeader(http.StatusUnauthorized)
	_ = p.tmpl.ExecuteTemplate(w, "login", p.base(r))
}

func (p *Page) login(w http.ResponseWriter, r *http.Request) {
	r.Body = http.MaxBytesReader(w, r.Body, 4096)
	tok := r.PostFormValue("token")
	probe := r.Clone(r.Context())
	probe.Header = http.Header{"Authorization": {"Bearer " + tok}}
	if !p.acc.hasToken(probe) {
		p.Stats.LoginFailed.Add(1)
		p.log.Warn("status page: wrong token at login", "peer", r.RemoteAddr)
		p.refuse(w, r, true)
		return
	}
	setCookie(w, r, tok)
	http.Redirect(w, r, "/", http.StatusSeeOther)
}

// data is what the templates get.
type data struct {
	Title   string
	Kind    string
	Now     time.Time
	Views   map[string]any
	Charts  []chart
	Actions map[string]bool
	// CanAct: actions are enabled and this request carries the token.
	CanAct bool
}

func (p *Page) base(r *http.Request) data {
	d := data{Title: p.cfg.Title, Kind: p.cfg.Kind, Now: p.cfg.Now(), Actions: map[string]bool{}}
	for n := range p.cfg.Actions {
		d.Actions[n] = true
	}
	d.CanAct = len(d.Actions) > 0 && p.acc.authed(r)
	return d
}

func (p *Page) page(w http.ResponseWriter, r *http.Request) {
	if !p.acc.canRead(r) {
		p.refuse(w, r, true)
		return
	}
	d := p.base(r)
	d.Views = map[string]any{}
	for n, f := range p.cfg.Views {
		d.Views[n] = f()
	}
	if p.cfg.Charts != nil {
		d.Charts = renderCharts(p.cfg.Charts(), p.cfg.ChartTitles)
	}
	var b bytes.Buffer
	if err := p.tmpl.ExecuteTemplate(&b, "layout", d); err != nil {
		p.log.Error("status page: render", "err", err)
		http.Error(w, "status page: render failed", http.StatusInternalServerError)
		return
	}
	w.Header().Set("Content-Type", "text/html; charset=utf-8")
	w.Header().Set("Cache-Control", "no-store")
	// Everything is same-origin and embedded: nothing else may load.
	w.Header().Set("Content-Security-Policy", "default-src 'self'; img-src 'self' data:; frame-ancestors 'none'")
	w.Header().Set("X-Content-Type-Options", "nosniff")
	_, _ = w.Write(b.Bytes())
}

func (p *Page) api(w http.ResponseWriter, r *http.Request) {
	if !p.acc.canRead(r) {
		p.refuse(w, r, false)
		return
	}
	name := r.PathValue("view")
	var v any
	switch f, ok := p.cfg.Views[name]; {
	case ok:
		v = f()
	case name == "charts" && p.cfg.Charts != nil:
		v = p.cfg.Charts()
	default:
		http.Error(w, "status page: no view "+name, http.StatusNotFound)
		return
	}
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	_ = enc.Encode(v)
}

// action runs an enabled action. It needs the token on every listener,
// and the X-Fleetgate-Action header, which a cross-site form cannot send
// (a CSRF guard on top of the SameSite cookie).
func (p *Page) action(w http.ResponseWriter, r *http.Request) {
	name, target := r.PathValue("action"), r.URL.Query().Get("target")
	fn, ok := p.cfg.Actions[name]
	switch {
	case !ok:
		p.Stats.ActionsRefused.Add(1)
		http.Error(w, "status page: action "+name+" is not enabled (status_page.actions)", http.StatusForbidden)
		return
	case !p.acc.authed(r):
		p.Stats.ActionsRefused.Add(1)
		p.Stats.Refused.Add(1)
		p.log.Warn("status page: action refused without the token or a client certificate", "action", name, "target", target, "peer", r.RemoteAddr)
		http.Error(w, "status page: actions need the bearer token or a client certificate", http.StatusUnauthorized)
		return
	case r.Header.Get("X-Fleetgate-Action") == "":
		p.Stats.ActionsRefused.Add(1)
		http.Error(w, "status page: missing X-Fleetgate-Action header", http.StatusForbidden)
		return
	case target == "" || len(target) > 256:
		http.Error(w, "status page: target required", http.StatusBadRequest)
		return
	}
	res, err := fn(target)
	if err != nil {
		p.log.Warn("status page action failed", "action", name, "target", target, "peer", r.RemoteAddr, "err", err)
		http.Error(w, err.Error(), http.StatusConflict)
		return
	}
	p.Stats.Actions.Add(1)
	p.log.Info("status page action", "action", name, "target", target, "peer", r.RemoteAddr, "result", res)
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	_, _ = fmt.Fprintln(w, res)
}

// chart is one server-rendered SVG chart: series of one unit.
type chart struct {
	Title  string
	Unit   string
	Max    float64
	Lines  []line
	Points int // total data points drawn
}

type line struct {
	Name   string
	Class  string
	Points string // SVG polyline points
	Last   float64
	N      int
}

// Chart geometry (SVG user units; the SVG scales to its box).
const (
	chartW = 600.0
	chartH = 150.0
)

func renderCharts(c fleetview.Charts, titles map[string]string) []chart {
	var units []string
	by := map[string][]fleetview.Series{}
	for _, s := range c.Series {
		if _, ok := by[s.Unit]; !ok {
			units = append(units, s.Unit)
		}
		by[s.Unit] = append(by[s.Unit], s)
	}
	var out []chart
	for _, u := range units {
		ss := by[u]
		ch := chart{Title: titles[u], Unit: u}
		if ch.Title == "" {
			ch.Title = u
		}
		var t0, t1 int64
		for _, s := range ss {
			for _, pt := range s.Points {
				if t0 == 0 || pt.T < t0 {
					t0 = pt.T
				}
				if pt.T > t1 {
					t1 = pt.T
				}
				if pt.V > ch.Max {
					ch.Max = pt.V
				}
			}
		}
		ymax := niceMax(ch.Max)
		for i, s := range ss {
			var b strings.Builder
			for j, pt := range s.Points {
				x := chartW
				if t1 > t0 {
					x = float64(pt.T-t0) / float64(t1-t0) * chartW
				}
				y := chartH - pt.V/ymax*chartH
				if j > 0 {
					b.WriteByte(' ')
				}
				fmt.Fprintf(&b, "%.1f,%.1f", x, y)
			}
			l := line{Name: s.Name, Class: fmt.Sprintf("s%d", i), Points: b.String(), N: len(s.Points)}
			if n := len(s.Points); n > 0 {
				l.Last = s.Points[n-1].V
			}
			ch.Points += l.N
			ch.Lines = append(ch.Lines, l)
		}
		ch.Max = ymax
		out = append(out, ch)
	}
	sort.SliceStable(out, func(i, j int) bool { return out[i].Title < out[j].Title })
	return out
}

// niceMax rounds the axis top up to 1, 2 or 5 times a power of ten.
func niceMax(v float64) float64 {
	if v <= 0 {
		return 1
	}
	m := 1.0
	for m*10 <= v {
		m *= 10
	}
	for m > v*10 {
		m /= 10
	}
	for _, f := range []float64{1, 2, 5, 10} {
		if f*m >= v {
			return f * m
		}
	}
	return 10 * m
}
