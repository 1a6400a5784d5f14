package registry

import (
	"errors"
	"net/netip"
	"path/filepath"
	"testing"
	"time"

	"github.com/fleetgate/fleetgate/internal/pemfile"
)

// TestByCertPinsIssuedCertificate: after sensor-5 is removed and added
// again with a new certificate, only the new one authenticates (the old
// one, same CN, same CA, still valid for years, is ErrCertReplaced); a
// certificate put on the site CRL is ErrCertRevoked.
func TestByCertPinsIssuedCertificate(t *testing.T) {
	dir := t.TempDir()
	reg, err := Open(filepath.Join(dir, "endpoints.json"), netip.MustParsePrefix("10.10.8.0/24"))
	if err != nil {
		t.Fatal(err)
	}
	ca, err := LoadOrCreateCA(filepath.Join(dir, "ca"), "t")
	if err != nil {
		t.Fatal(err)
	}
	old, err := Provision(reg, ca, Request{Name: "sensor-5", Protocol: MQTT, Cert: true})
	if err != nil {
		t.Fatal(err)
	}
	oldCert, _ := pemfile.ParseCert(old.CertPEM)
	if ep, err := reg.ByCert(oldCert); err != nil || ep.Name != "sensor-5" || ep.CertSerial != SerialHex(oldCert) {
		t.Fatalf("ByCert(issued): %+v, %v", ep, err)
	}
	if err := reg.Remove("sensor-5"); err != nil {
		t.Fatal(err)
	}
	nw, err := Provision(reg, ca, Request{Name: "sensor-5", Protocol: MQTT, Cert: true})
	if err != nil {
		t.Fatal(err)
	}
	newCert, _ := pemfile.ParseCert(nw.CertPEM)
	if _, err := reg.ByCert(oldCert); !errors.Is(err, ErrCertReplaced) {
		t.Fatalf("old certificate after re-key: %v, want ErrCertReplaced", err)
	}
	if _, err := reg.ByCert(newCert); err != nil {
		t.Fatalf("new certificate: %v", err)
	}
	// The state file keeps the serial.
	reg2, err := Open(filepath.Join(dir, "endpoints.json"), netip.MustParsePrefix("10.10.8.0/24"))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := reg2.ByCert(oldCert); !errors.Is(err, ErrCertReplaced) {
		t.Fatalf("old certificate after reopen: %v, want ErrCertReplaced", err)
	}
	// Site CRL: Revoke writes it, Revoked reads it back, ByCert refuses.
	for i := 0; i < 2; i++ { // twice: the entry is not duplicated
		if _, err := ca.Revoke(SerialHex(newCert), time.Now()); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := ca.Revoke(SerialHex(oldCert), time.Now()); err != nil {
		t.Fatal(err)
	}
	ca2, err := LoadOrCreateCA(filepath.Join(dir, "ca"), "t")
	if err != nil {
		t.Fatal(err)
	}
	serials, err := ca2.Revoked()
	if err != nil || len(serials) != 2 {
		t.Fatalf("Revoked: %v, %v; want 2 serials", serials, err)
	}
	reg.SetRevoked(serials)
	if _, err := reg.ByCert(newCert); !errors.Is(err, ErrCertRevoked) {
		t.Fatalf("revoked certificate: %v, want ErrCertRevoked", err)
	}
}
