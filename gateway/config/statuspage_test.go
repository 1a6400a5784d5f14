package config

import (
	"strings"
	"testing"
	"time"
)

// TestStatusPage: defaults, and each refused combination names its key.
func TestStatusPage(t *testing.T) {
	c, err := Parse("f.yaml", []byte("{}\n"))
	if err != nil {
		t.Fatal(err)
	}
	if sp := c.StatusPage; !sp.On() || sp.Actions || sp.Token != "" || sp.CredentialWarnD != 30*24*time.Hour || sp.SampleIntervalD != 5*time.Second {
		t.Errorf("defaults: %+v", sp)
	}
	for in, key := range map[string]string{
		"status_page: {actions: true}\n":         "status_page.actions needs",
		"status_page: {tls_key: k.pem}\n":        "tls_cert and tls_key go together",
		"status_page: {client_ca: ca.pem}\n":     "client_ca needs tls_cert",
		"status_page: {sample_interval: 1ms}\n":  "sample_interval",
		"status_page: {credential_warn: soon}\n": "credential_warn",
	} {
		if _, err := Parse("f.yaml", []byte(in)); err == nil || !strings.Contains(err.Error(), key) || !strings.Contains(err.Error(), "f.yaml:1") {
			t.Errorf("Parse(%q): %v, want an error at f.yaml:1 naming %q", in, err, key)
		}
	}
}
