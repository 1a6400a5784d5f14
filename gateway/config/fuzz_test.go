package config

import (
	"errors"
	"os"
	"testing"
)

func FuzzParse(f *testing.F) {
	if b, err := os.ReadFile("../../configs/gateway.yaml"); err == nil {
		f.Add(b)
	}
	f.Add([]byte("psk: {shared: x}\nidentities:\n  - {name: a, ppp: {password: p}, routes: [10.10.8.0/24]}\n"))
	f.Add([]byte("policies:\n  p: {allow: [{dst: 10.0.0.0/8, proto: tcp, ports: [\"1-2\"]}]}\n"))
	f.Add([]byte("listen: [\n"))
	for _, fl := range []string{"../../configs/fleet/gw1.yaml", "../../configs/fleet/gw2.yaml"} {
		if b, err := os.ReadFile(fl); err == nil {
			f.Add(b)
		}
	}
	f.Add([]byte("psk: {shared: x}\npool: {prefix: 10.10.0.0/24, slice: 10.10.0.5-10.10.0.9}\nbgp: {local_as: 1, router_id: 192.0.2.1, communities: [\"1:2\", no-export], neighbors: [{address: 192.0.2.2, as: 2, hold_time: 3s}]}\n"))
	f.Fuzz(func(t *testing.T, b []byte) {
		c, err := Parse("f.yaml", b)
		if err != nil {
			var es Errors
			if !errors.As(err, &es) || len(es) == 0 {
				t.Fatalf("error %v is not a non-empty config.Errors", err)
			}
			return
		}
		// A valid configuration has its parsed fields filled in.
		if !c.Pool.PrefixP.IsValid() || len(c.Proposals.ESPParsed) != len(c.Proposals.ESP) {
			t.Fatalf("valid config without parsed pool/proposals: %+v", c.Pool)
		}
		if sl := c.Pool.Slice; sl != "" && (!c.Pool.SliceLo.IsValid() || c.Pool.SliceHi.Less(c.Pool.SliceLo) || !c.Pool.PrefixP.Contains(c.Pool.SliceHi)) {
			t.Fatalf("valid config with a bad slice %q: %v-%v", sl, c.Pool.SliceLo, c.Pool.SliceHi)
		}
		if b := c.BGP; b != nil && (len(b.CommunityValues) != len(b.Communities) || !b.NextHopAddr.IsValid()) {
			t.Fatalf("valid bgp section not fully parsed: %+v", b)
		}
		for _, id := range c.Identities {
			if len(id.RoutePrefixes) != len(id.Routes) {
				t.Fatalf("identity %s: %d routes parsed of %d", id.Name, len(id.RoutePrefixes), len(id.Routes))
			}
		}
	})
}
