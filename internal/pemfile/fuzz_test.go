package pemfile

import "testing"

// FuzzParse feeds one input to every parser: none may panic, and what one
// accepts must be whole (a certificate with its raw DER, a key with a
// public half, a CRL with its issuer). The seed corpus is in
// testdata/fuzz/FuzzParse: a certificate, keys of each block type, a CRL
// in PEM and DER, and broken variants.
func FuzzParse(f *testing.F) {
	f.Add([]byte("-----BEGIN CERTIFICATE-----\n-----END CERTIFICATE-----\n"))
	f.Fuzz(func(t *testing.T, b []byte) {
		if c, err := ParseCert(b); err == nil && (c == nil || len(c.Raw) == 0) {
			t.Fatalf("ParseCert accepted an empty certificate")
		}
		if k, err := ParseKey(b); err == nil && (k == nil || k.Public() == nil) {
			t.Fatalf("ParseKey accepted a key without a public half")
		}
		if rl, err := ParseCRL(b); err == nil && (rl == nil || len(rl.RawIssuer) == 0) {
			t.Fatalf("ParseCRL accepted a CRL without an issuer")
		}
		if c, k, err := ParseECDSAPair(b, b); err == nil && !k.PublicKey.Equal(c.PublicKey) {
			t.Fatalf("ParseECDSAPair accepted a mismatched pair")
		}
	})
}
