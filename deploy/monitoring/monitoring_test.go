package monitoring

import (
	"encoding/json"
	"github.com/fleetgate/fleetgate/internal/testenv"
	"go/ast"
	"go/parser"
	"go/token"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"

	"go.yaml.in/yaml/v3"
)

// exporters are the directories whose code publishes metrics.
var exporters = []string{"gateway", "bridge", "downlink"}

// builtins are series Prometheus makes itself.
var builtins = map[string]bool{"up": true}

// freeLabels are labels set by Prometheus or Grafana, not by our code.
var freeLabels = map[string]bool{"job": true, "instance": true}

var keywords = map[string]bool{"and": true, "or": true, "unless": true, "by": true, "without": true,
	"on": true, "ignoring": true, "group_left": true, "group_right": true, "bool": true, "offset": true}

// literals returns every string literal in the non-test Go files under the
// exporter directories: metric names and label values must be among them.
func literals(t *testing.T) map[string]bool {
	t.Helper()
	out := map[string]bool{}
	fset := token.NewFileSet()
	for _, dir := range exporters {
		root := filepath.Join("..", "..", dir)
		err := filepath.WalkDir(root, func(path string, d fs.DirEntry, err error) error {
			if err != nil || d.IsDir() || !strings.HasSuffix(path, ".go") || strings.HasSuffix(path, "_test.go") {
				return err
			}
			f, err := parser.ParseFile(fset, path, nil, parser.SkipObjectResolution)
			if err != nil {
				return err
			}
			ast.Inspect(f, func(n ast.Node) bool {
				if lit, ok := n.(*ast.BasicLit); ok && lit.Kind == token.STRING {
					if s, err := strconv.Unquote(lit.Value); err == nil {
						out[s] = true
					}
				}
				return true
			})
			return nil
		})
		if err != nil {
			t.Fatalf("walk %s: %v", root, err)
		}
	}
	return out
}

// A matcher is one label matcher inside {...}.
type matcher struct{ label, value string }

var (
	reMatcher  = regexp.MustCompile(`([a-zA-Z_][a-zA-Z0-9_]*)\s*(=~|!~|!=|=)\s*"((?:[^"\\]|\\.)*)"`)
	reBraces   = regexp.MustCompile(`\{[^{}]*\}`)
	reRange    = regexp.MustCompile(`\[[^\]]*\]`)
	reGrouping = regexp.MustCompile(`\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)`)
	reString   = regexp.MustCompile(`"(?:[^"\\]|\\.)*"`)
	reIdent    = regexp.MustCompile(`[a-zA-Z_:][a-zA-Z0-9_:]*`)
)

// parseExpr returns the metric names and label matchers of a PromQL
// expression. It is a small scanner for the subset our rules use, not a
// full PromQL parser: selectors, ranges, functions, aggregations with
// by/without, binary operators and numbers.
func parseExpr(expr string) (names []string, ms []matcher) {
	for _, m := range reMatcher.FindAllStringSubmatch(strings.Join(reBraces.FindAllString(expr, -1), " "), -1) {
		ms = append(ms, matcher{m[1], m[3]})
	}
	e := reBraces.ReplaceAllString(expr, " ")
	e = reRange.ReplaceAllString(e, " ")
	e = reGrouping.ReplaceAllString(e, " ")
	e = reString.ReplaceAllString(e, " ")
	for _, loc := range reIdent.FindAllStringIndex(e, -1) {
		id := e[loc[0]:loc[1]]
		if keywords[id] || loc[0] > 0 && (e[loc[0]-1] >= '0' && e[loc[0]-1] <= '9' || e[loc[0]-1] == '.') {
			continue // keyword, or exponent/suffix of a number
		}
		if rest := strings.TrimLeft(e[loc[1]:], " \t\n"); strings.HasPrefix(rest, "(") {
			continue // function or aggregation
		}
		names = append(names, id)
	}
	return names, ms
}

// checkExpr reports metric names and label values the code does not export.
func checkExpr(t *testing.T, where, expr string, lits map[string]bool) {
	t.Helper()
	names, ms := parseExpr(expr)
	if len(names) == 0 {
		t.Errorf("%s: no metric in %q", where, expr)
	}
	for _, n := range names {
		if !builtins[n] && !lits[n] {
			t.Errorf("%s: metric %q is not exported by %v (expr %q)", where, n, exporters, expr)
		}
	}
	for _, m := range ms {
		if freeLabels[m.label] {
			continue
		}
		for v := range strings.SplitSeq(m.value, "|") {
			if !lits[v] {
				t.Errorf("%s: label value %s=%q is not in the code (expr %q)", where, m.label, v, expr)
			}
		}
	}
}

type ruleFile struct {
	Groups []struct {
		Name  string `yaml:"name"`
		Rules []struct {
			Alert  string            `yaml:"alert"`
			Expr   string            `yaml:"expr"`
			Labels map[string]string `yaml:"labels"`
		} `yaml:"rules"`
	} `yaml:"groups"`
}

func TestParseExpr(t *testing.T) {
	for _, tt := range []struct {
		expr  string
		names []string
		ms    []matcher
	}{
		{`up{job="fleetgate-gateway"} == 0`, []string{"up"}, []matcher{{"job", "fleetgate-gateway"}}},
		{`sum by (instance, phase) (rate(a_total{phase!~"x|y"}[10m])) > 0.05`, []string{"a_total"}, []matcher{{"phase", "x|y"}}},
		{`b - time() < 30 * 86400 and c offset 1h`, []string{"b", "c"}, nil},
		{`m < 0.8 * max_over_time(m[1h]) and 1e3 > n`, []string{"m", "m", "n"}, nil},
	} {
		names, ms := parseExpr(tt.expr)
		if !slices.Equal(names, tt.names) || !slices.Equal(ms, tt.ms) {
			t.Errorf("parseExpr(%q) = %v, %v; want %v, %v", tt.expr, names, ms, tt.names, tt.ms)
		}
	}
}

func TestAlertsUseExportedMetrics(t *testing.T) {
	b, err := os.ReadFile("alerts.yaml")
	if err != nil {
		t.Fatal(err)
	}
	var rf ruleFile
	if err := yaml.Unmarshal(b, &rf); err != nil {
		t.Fatalf("alerts.yaml: %v", err)
	}
	lits := literals(t)
	n := 0
	for _, g := range rf.Groups {
		for _, r := range g.Rules {
			n++
			if r.Alert == "" || r.Expr == "" {
				t.Errorf("group %s: rule without alert name or expr: %+v", g.Name, r)
			}
			switch r.Labels["severity"] {
			case "critical", "warning", "info":
			default:
				t.Errorf("%s: severity %q, want critical, warning or info", r.Alert, r.Labels["severity"])
			}
			checkExpr(t, r.Alert, r.Expr, lits)
		}
	}
	if n < 20 {
		t.Errorf("alerts.yaml has %d rules, want the full set (>= 20)", n)
	}
}

func TestDashboardUsesExportedMetrics(t *testing.T) {
	b, err := os.ReadFile("grafana-dashboard.json")
	if err != nil {
		t.Fatal(err)
	}
	var d struct {
		UID        string `json:"uid"`
		Templating struct {
			List []struct {
				Name, Type, Query string
			} `json:"list"`
		} `json:"templating"`
		Panels []struct {
			Title   string `json:"title"`
			Type    string `json:"type"`
			Targets []struct {
				Expr string `json:"expr"`
			} `json:"targets"`
		} `json:"panels"`
	}
	if err := json.Unmarshal(b, &d); err != nil {
		t.Fatalf("grafana-dashboard.json: %v", err)
	}
	if d.UID == "" {
		t.Error("dashboard has no uid")
	}
	lits := literals(t)
	reLabelValues := regexp.MustCompile(`^label_values\(([a-zA-Z_:][a-zA-Z0-9_:]*)\s*,\s*[a-z_]+\)$`)
	for _, v := range d.Templating.List {
		if v.Type != "query" {
			continue
		}
		m := reLabelValues.FindStringSubmatch(v.Query)
		if m == nil {
			t.Errorf("variable %s: query %q, want label_values(metric, label)", v.Name, v.Query)
			continue
		}
		if !lits[m[1]] {
			t.Errorf("variable %s: metric %q is not exported", v.Name, m[1])
		}
	}
	exprs := 0
	for _, p := range d.Panels {
		if p.Type == "row" {
			continue
		}
		if len(p.Targets) == 0 {
			t.Errorf("panel %q has no query", p.Title)
		}
		for _, tg := range p.Targets {
			exprs++
			checkExpr(t, "panel "+strconv.Quote(p.Title), tg.Expr, lits)
		}
	}
	if exprs == 0 {
		t.Fatal("dashboard has no queries")
	}
}

// TestPromtool runs `promtool check rules` and the rule unit tests in
// alerts_test.yaml. promtool comes with Debian's prometheus package, which
// deploy/ci/install-deps.sh installs (no server is started).
func TestPromtool(t *testing.T) {
	pt := testenv.RequireBinary(t, "promtool")
	for _, args := range [][]string{{"check", "rules", "alerts.yaml"}, {"test", "rules", "alerts_test.yaml"}} {
		out, err := exec.Command(pt, args...).CombinedOutput()
		if err != nil {
			t.Errorf("promtool %s: %v\n%s", strings.Join(args, " "), err, out)
		}
	}
}
