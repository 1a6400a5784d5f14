package config

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestCheckFleet(t *testing.T) {
	dir := t.TempDir()
	write := func(name, s string) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte(s), 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	gw := func(slice, hallAddr string) string {
		return "psk: {shared: x}\npool:\n  prefix: 10.10.0.0/24\n  slice: " + slice + "\nidentities:\n  - name: hall7\n    ppp: {password: p}\n    address: " + hallAddr + "\n    routes: [10.10.8.0/24]\n"
	}
	write("gw1.yaml", gw("10.10.0.64/26", "10.10.0.7"))
	write("gw2.yaml", gw("10.10.0.128-10.10.0.191", "10.10.0.7"))
	fleet := write("fleet.yaml", "gateways: [gw1.yaml, gw2.yaml]\n")
	cfgs, err := CheckFleet(fleet)
	if err != nil {
		t.Fatalf("disjoint fleet: %v", err)
	}
	if got := cfgs[0].Pool.SliceLo.String() + "-" + cfgs[0].Pool.SliceHi.String(); got != "10.10.0.64-10.10.0.127" {
		t.Errorf("gw1 slice %s", got)
	}
	if got := cfgs[1].Pool.SliceHi.String(); got != "10.10.0.191" {
		t.Errorf("gw2 slice end %s", got)
	}

	// Overlap, a static address inside a slice, a moved identity.
	write("gw2.yaml", gw("10.10.0.100-10.10.0.200", "10.10.0.150"))
	_, err = CheckFleet(fleet)
	if err == nil {
		t.Fatal("overlapping fleet accepted")
	}
	for _, want := range []string{
		"gw2.yaml:4: pool.slice 10.10.0.100-10.10.0.200 overlaps 10.10.0.64-10.10.0.127 of " + filepath.Join(dir, "gw1.yaml") + ":4",
		"gw2.yaml:8: identity hall7: static address 10.10.0.150 lies in the pool.slice of",
		"gw2.yaml:6: identity hall7: address 10.10.0.150 / routes [10.10.8.0/24] differ from",
	} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("missing %q in:\n%v", want, err)
		}
	}
	write("gw3.yaml", "psk: {shared: x}\npool: {prefix: 10.11.0.0/24}\n")
	write("fleet.yaml", "gateways: [gw1.yaml, gw3.yaml]\n")
	if _, err := CheckFleet(fleet); err == nil || !strings.Contains(err.Error(), "differs from 10.10.0.0/24") || !strings.Contains(err.Error(), "gw3.yaml:2: pool.slice is required in a fleet") {
		t.Errorf("different pools / missing slice: %v", err)
	}
	if _, err := Parse("f.yaml", []byte("psk: {shared: x}\npool: {prefix: 10.10.0.0/24, slice: 10.10.1.0/26}\n")); err == nil || !strings.Contains(err.Error(), "f.yaml:2: pool.slice 10.10.1.0/26 is not inside") {
		t.Errorf("slice outside the pool: %v", err)
	}
}
