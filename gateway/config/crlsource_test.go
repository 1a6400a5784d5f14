package config

import (
	"strings"
	"testing"
	"time"
)

func TestCRLSourceConfig(t *testing.T) {
	c, err := Parse("f.yaml", []byte("psk: {shared: x}\npki: {ca: /x/ca.crt, crl_url: \"https://ca.example/crl.pem\"}\n"))
	if err != nil {
		t.Fatal(err)
	}
	if c.PKI.CRLRefreshD != 5*time.Minute || c.PKI.CRLFail != "closed" {
		t.Errorf("defaults: %v %q", c.PKI.CRLRefreshD, c.PKI.CRLFail)
	}
	_, err = Parse("f.yaml", []byte("psk: {shared: x}\npki:\n  crl_url: \"ftp://x\"\n  crl_refresh: 100ms\n  crl_fail: maybe\n"))
	for _, want := range []string{`f.yaml:3: pki.crl_url "ftp://x": want an http:// or https:// URL`, "f.yaml:3: pki.crl_url needs pki.ca",
		`f.yaml:4: pki.crl_refresh "100ms"`, `f.yaml:5: pki.crl_fail "maybe": want closed or open`} {
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("missing %q in %v", want, err)
		}
	}
}

func TestOCSPSourceConfig(t *testing.T) {
	c, err := Parse("f.yaml", []byte("psk: {shared: x}\npki: {ca: /x/ca.crt, ocsp_url: \"http://ca.example:8089/ocsp\"}\n"))
	if err != nil {
		t.Fatal(err)
	}
	if c.PKI.OCSPRefreshD != 5*time.Minute || c.PKI.OCSPFail != "closed" || c.PKI.OCSPCacheMax != 10000 {
		t.Errorf("defaults: %v %q %d", c.PKI.OCSPRefreshD, c.PKI.OCSPFail, c.PKI.OCSPCacheMax)
	}
	_, err = Parse("f.yaml", []byte("psk: {shared: x}\npki:\n  ocsp_url: \"ftp://x\"\n  ocsp_refresh: 100ms\n  ocsp_fail: maybe\n  ocsp_cache_max: -1\n"))
	for _, want := range []string{`f.yaml:3: pki.ocsp_url "ftp://x": want an http:// or https:// URL`, "f.yaml:3: pki.ocsp_url needs pki.ca",
		`f.yaml:4: pki.ocsp_refresh "100ms"`, `f.yaml:5: pki.ocsp_fail "maybe": want closed or open`, `f.yaml:6: pki.ocsp_cache_max -1`} {
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("missing %q in %v", want, err)
		}
	}
	if _, err := Parse("f.yaml", []byte("psk: {shared: x}\npki:\n  ocsp_fail: open\n")); err == nil || !strings.Contains(err.Error(), "need pki.ocsp_url") {
		t.Errorf("ocsp_fail without ocsp_url: %v", err)
	}
}
