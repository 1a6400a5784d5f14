package server

import (
	"errors"
	"fmt"
	"path/filepath"
	"testing"

	"github.com/fleetgate/fleetgate/gateway/config"
	"github.com/fleetgate/fleetgate/gateway/pki"
)

func TestIdentityForCert(t *testing.T) {
	dir := t.TempDir()
	st := &pki.Store{Dir: dir}
	if _, err := st.CreateCA(pki.CAOptions{}); err != nil {
		t.Fatal(err)
	}
	hall7, err := st.Issue(pki.IssueOptions{Name: "site-hall7", SANs: []string{"site-hall7.sites.example.net"}})
	if err != nil {
		t.Fatal(err)
	}
	stranger, err := st.Issue(pki.IssueOptions{Name: "stranger"})
	if err != nil {
		t.Fatal(err)
	}
	y := fmt.Sprintf("metrics: {listen: \"off\"}\npki: {dir: %q, ca: ca.crt, crl: crl.pem}\nidentities:\n"+
		"  - {name: hall7, auth: cert, id: site-hall7.sites.example.net, ppp: {password: p}}\n", dir)
	cfg, err := config.Parse(filepath.Join(dir, "gw.yaml"), []byte(y))
	if err != nil {
		t.Fatal(err)
	}
	srv, err := New(cfg, Options{Host: newNullHost()})
	if err != nil {
		t.Fatal(err)
	}
	env := srv.Env()
	id, err := env.IdentityForCert(hall7, nil, "site-hall7.sites.example.net")
	if err != nil || id.Name != "hall7" {
		t.Fatalf("hall7: got %v, %v", id, err)
	}
	if _, err := env.IdentityForCert(hall7, nil, "someone-else"); !errors.Is(err, ErrNoIdentity) {
		t.Errorf("mismatched ID payload: got %v", err)
	}
	if _, err := env.IdentityForCert(stranger, nil, ""); !errors.Is(err, ErrNoIdentity) {
		t.Errorf("valid cert without identity: got %v", err)
	}
	// Revoke, reload: the CRL is honoured.
	if err := st.Revoke("site-hall7"); err != nil {
		t.Fatal(err)
	}
	next, err := config.Parse(filepath.Join(dir, "gw.yaml"), []byte(y))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := srv.Reload(next); err != nil {
		t.Fatal(err)
	}
	if _, err := env.IdentityForCert(hall7, nil, ""); !errors.Is(err, pki.ErrRevoked) {
		t.Errorf("revoked cert after reload: got %v, want ErrRevoked", err)
	}
}
