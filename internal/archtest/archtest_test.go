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
