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
		for _, id := range c.Identities {
			if len(id.RoutePrefixes) != len(id.Routes) {
				t.Fatalf("identity %s: %d routes parsed of %d", id.Name, len(id.RoutePrefixes), len(id.Routes))
			}
		}
	})
}
