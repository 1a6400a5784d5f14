package mqtt

import (
	"crypto/x509"
	"encoding/pem"
	"net/netip"
	"path/filepath"
	"testing"

	"github.com/fleetgate/fleetgate/downlink/registry"
)

func TestRegistryAuth(t *testing.T) {
	dir := t.TempDir()
	reg, err := registry.Open(filepath.Join(dir, "endpoints.json"), netip.MustParsePrefix("10.10.8.0/24"))
	if err != nil {
		t.Fatal(err)
	}
	ca, err := registry.LoadOrCreateCA(dir, "site-1")
	if err != nil {
		t.Fatal(err)
	}
	psk, err := registry.Provision(reg, ca, registry.Request{Name: "sensor-5", Protocol: registry.MQTT})
	if err != nil {
		t.Fatal(err)
	}
	cert, err := registry.Provision(reg, ca, registry.Request{Name: "sensor-6", Protocol: registry.MQTT, Cert: true})
	if err != nil {
		t.Fatal(err)
	}
	coap, err := registry.Provision(reg, ca, registry.Request{Name: "sensor-7"})
	if err != nil {
		t.Fatal(err)
	}
	a := RegistryAuth{Registry: reg}
	pw := []struct {
		user, pass string
		want       string
	}{
		{"sensor-5", string(psk.Endpoint.PSK), "sensor-5"},
		{"sensor-5", "wrong", ""},
		{"sensor-7", string(coap.Endpoint.PSK), ""}, // a CoAP endpoint
		{"sensor-6", "", ""},                        // certificate-only endpoint
		{"nobody", "", ""},
	}
	for _, tt := range pw {
		got, ok := a.Password(tt.user, []byte(tt.pass))
		if got != tt.want || ok != (tt.want != "") {
			t.Errorf("Password(%q): got %q %v, want %q", tt.user, got, ok, tt.want)
		}
	}
	blk, _ := pem.Decode(cert.CertPEM)
	c, err := x509.ParseCertificate(blk.Bytes)
	if err != nil {
		t.Fatal(err)
	}
	if got, ok := a.Certificate(c); !ok || got != "sensor-6" {
		t.Errorf("Certificate(CN sensor-6): got %q %v", got, ok)
	}
	c.Subject.CommonName = "sensor-7"
	if _, ok := a.Certificate(c); ok {
		t.Error("Certificate accepted a CoAP endpoint's CN")
	}
}
