package server

import (
	"fmt"
	"net/netip"
	"path/filepath"
	"testing"

	"github.com/fleetgate/fleetgate/gateway/config"
	"github.com/fleetgate/fleetgate/gateway/pki"
	"github.com/fleetgate/fleetgate/uplink/ike"
)

func TestFillIKEConfig(t *testing.T) {
	dir := t.TempDir()
	st := &pki.Store{Dir: dir}
	if _, err := st.CreateCA(pki.CAOptions{}); err != nil {
		t.Fatal(err)
	}
	hall7, err := st.Issue(pki.IssueOptions{Name: "site-hall7", SANs: []string{"site-hall7.sites.example.net"}})
	if err != nil {
		t.Fatal(err)
	}
	stranger, _ := st.Issue(pki.IssueOptions{Name: "stranger"})
	y := fmt.Sprintf("metrics: {listen: \"off\"}\nlisten: {natt_port: 14500}\npki: {dir: %q, ca: ca.crt, crl: crl.pem}\n"+
		"proposals: {allow_legacy: true, ike: [aes256-sha256-modp2048, aes128-sha1-modp1024], esp: [aes128gcm16, aes128-sha1]}\n"+
		"psk: {shared: shared-key, by_id: {\"198.51.100.9\": per-peer}}\nidentities:\n"+
		"  - {name: hall7, auth: cert, id: site-hall7.sites.example.net, ppp: {password: p}}\n"+
		"  - {name: fqdn-site, auth: psk, id: fqdn.example.net, psk: own, ppp: {password: p}}\n", dir)
	cfg, err := config.Parse(filepath.Join(dir, "gw.yaml"), []byte(y))
	if err != nil {
		t.Fatal(err)
	}
	srv, err := New(cfg, Options{Host: newNullHost()})
	if err != nil {
		t.Fatal(err)
	}
	var c ike.Config
	if err := srv.Env().FillIKEConfig(&c); err != nil {
		t.Fatal(err)
	}
	if len(c.IKEProposals) != 2 || len(c.ESPProposals) != 2 || c.NATTPort != 14500 || c.CAs == nil {
		t.Fatalf("filled: %d IKE, %d ESP proposals, NAT-T %d, CAs %v", len(c.IKEProposals), len(c.ESPProposals), c.NATTPort, c.CAs != nil)
	}
	if k, ok := c.PSK(netip.MustParseAddr("198.51.100.9")); !ok || string(k) != "per-peer" {
		t.Errorf("PSK by address: %q %v", k, ok)
	}
	if k, ok := c.PSK(netip.MustParseAddr("203.0.113.1")); !ok || string(k) != "shared-key" {
		t.Errorf("shared PSK: %q %v", k, ok)
	}
	tests := []struct {
		name string
		id   ike.Identity
		want bool
	}{
		{"cert of a configured site", ike.Identity{Cert: hall7}, true},
		{"valid cert without identity", ike.Identity{Cert: stranger}, false},
		{"psk peer with shared key", ike.Identity{ID: ike.Identification{Type: ike.IDIPv4Addr, Data: []byte{203, 0, 113, 1}}}, true},
		{"cert identity trying psk", ike.Identity{ID: ike.Identification{Type: ike.IDFQDN, Data: []byte("site-hall7.sites.example.net")}}, false},
	}
	for _, tt := range tests {
		if got := c.AllowIdentity(tt.id); got != tt.want {
			t.Errorf("%s: got %v, want %v", tt.name, got, tt.want)
		}
	}
	if err := c.CheckCert(hall7, nil); err != nil {
		t.Errorf("CheckCert before revocation: %v", err)
	}
	if err := st.Revoke("site-hall7"); err != nil {
		t.Fatal(err)
	}
	next, _ := config.Parse(filepath.Join(dir, "gw.yaml"), []byte(y))
	if _, err := srv.Reload(next); err != nil {
		t.Fatal(err)
	}
	if err := c.CheckCert(hall7, nil); err == nil {
		t.Error("CheckCert accepts a revoked certificate after reload")
	}
}
