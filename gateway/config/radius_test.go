package config

import (
	"strings"
	"testing"
	"time"
)

func TestRADIUSFleetConfig(t *testing.T) {
	c, err := Parse("f.yaml", []byte(`psk: {shared: x}
radius:
  auth: 10.20.0.5:1812
  auth_servers: [10.20.0.6:1812]
  acct_servers: [10.20.0.5:1813, 10.20.0.6:1813]
  secret: s
  dead_time: 10s
  acct_spool: /var/lib/fleetgate/acct.db
  dae_listen: 0.0.0.0:3799
  dae_clients: [10.20.0.0/24, 10.30.0.1]
`))
	if err != nil {
		t.Fatal(err)
	}
	r := c.RADIUS
	if r.DeadTimeD != 10*time.Second || r.DAESecret != "s" || len(r.DAEClientPrefixes) != 2 || r.DAEClientPrefixes[1].Bits() != 32 || len(r.AcctList()) != 2 {
		t.Errorf("parsed: %+v", r)
	}
	_, err = Parse("f.yaml", []byte(`psk: {shared: x}
radius:
  auth_servers: [nope]
  secret: s
  dae_clients: [10.20.0.0/24]
  dae_listen: "[::1]:3799"
  acct_spool_max: -1
`))
	for _, want := range []string{`f.yaml:3: radius.auth_servers "nope": want host:port`, `f.yaml:6: radius.dae_listen "[::1]:3799": want IPv4:port`,
		"f.yaml:7: radius.acct_spool_max -1 must be positive"} {
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("missing %q in %v", want, err)
		}
	}
}
