package archtest

import (
	"slices"
	"testing"
)

// TestImportDirection fails when a package of the module gains an upward
// arrow (docs/ARCHITECTURE.md, "Import direction").
func TestImportDirection(t *testing.T) {
	g, err := Load("../..", Module)
	if err != nil {
		t.Fatal(err)
	}
	if len(g.Imports) < 50 {
		t.Fatalf("parsed only %d packages: wrong root?", len(g.Imports))
	}
	for _, v := range g.Check(Rules) {
		t.Errorf("upward import: %v", v)
	}
}

// TestCheckerFindsViolations runs the checker on a fixture module with
// known arrows: a direct one, one through a helper package, one only from
// a test file, and clean packages.
func TestCheckerFindsViolations(t *testing.T) {
	g, err := Load("testdata/fixture", "example.com/fx")
	if err != nil {
		t.Fatal(err)
	}
	rules := []Rule{
		{Name: "cores", From: []string{"uplink", "ipstack"}, Forbidden: []string{"gateway"}, Tests: true},
		{Name: "cores-no-tests", From: []string{"downlink"}, Forbidden: []string{"bridge"}},
		{Name: "cores-tests", From: []string{"downlink"}, Forbidden: []string{"bridge"}, Tests: true},
		{Name: "direct", From: []string{"uplink/viahelper"}, Forbidden: []string{"gateway"}, Direct: true},
		{Name: "allowed", From: []string{"uplink/viahelper"}, Forbidden: []string{"gateway"}, Allow: []string{"internal/helper -> gateway/server"}},
	}
	var got []string
	for _, v := range g.Check(rules) {
		got = append(got, v.String())
	}
	want := []string{
		"cores: uplink/direct -> gateway/server",
		"cores: uplink/viahelper -> internal/helper -> gateway/server",
		"cores-tests: downlink/testonly -> bridge/proxy",
	}
	if !slices.Equal(got, want) {
		t.Fatalf("violations:\n got  %q\n want %q", got, want)
	}
}

// TestNoBareSkips: every skip goes through internal/testenv (loud, and a
// failure in CI where the requirement should hold), apart from the
// justified AllowedSkips.
func TestNoBareSkips(t *testing.T) {
	skips, err := BareSkips("../..")
	if err != nil {
		t.Fatal(err)
	}
	per := map[string]int{}
	for _, s := range skips {
		per[s.File]++
		if per[s.File] > AllowedSkips[s.File] {
			t.Errorf("%s:%d: bare Skip: go through internal/testenv (Require, RequireRoot, RequireBinary, SkipIfShort, SkipUnderRace, OptIn, ChildProcess)", s.File, s.Line)
		}
	}
	for f, n := range AllowedSkips {
		if per[f] < n {
			t.Errorf("AllowedSkips[%q] = %d but the file has %d: lower it", f, n, per[f])
		}
	}
}

// TestBareSkipsFindsCalls runs the counter on the fixture module, which
// holds four bare skips (one in a bench/ test), and skips in its
// internal/testenv, a testdata directory and a bench/ suite (none counts).
func TestBareSkipsFindsCalls(t *testing.T) {
	skips, err := BareSkips("testdata/fixture")
	if err != nil {
		t.Fatal(err)
	}
	want := []Skip{{"bench/run/suite_test.go", 5}, {"uplink/clean/skip_test.go", 8}, {"uplink/clean/skip_test.go", 11}, {"uplink/clean/skip_test.go", 14}}
	if !slices.Equal(skips, want) {
		t.Fatalf("skips %v, want %v", skips, want)
	}
}
