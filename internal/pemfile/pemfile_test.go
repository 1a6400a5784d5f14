package pemfile

import (
	"crypto"
	"crypto/ecdh"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func writeFile(t *testing.T, name string, b []byte) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), name)
	if err := os.WriteFile(p, b, 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

// wantPathErr checks that err names the file and wraps want.
func wantPathErr(t *testing.T, err error, path string, want error) {
	t.Helper()
	if err == nil {
		t.Fatalf("%s: no error", path)
	}
	if !strings.Contains(err.Error(), path) {
		t.Errorf("error %q does not name %s", err, path)
	}
	if want != nil && !errors.Is(err, want) {
		t.Errorf("error %q: want %v", err, want)
	}
}

func TestReadCert(t *testing.T) {
	der, key, _ := testCA(t)
	keyPEM, err := EncodeKey(key)
	if err != nil {
		t.Fatal(err)
	}
	t.Run("good", func(t *testing.T) {
		c, err := ReadCert(writeFile(t, "ca.crt", EncodeCert(der)))
		if err != nil {
			t.Fatal(err)
		}
		if c.Subject.CommonName != "pemfile test CA" || c.SerialNumber.Int64() != 7 {
			t.Errorf("read %q serial %v", c.Subject.CommonName, c.SerialNumber)
		}
	})
	t.Run("key before the certificate", func(t *testing.T) {
		c, err := ReadCert(writeFile(t, "both.pem", append(keyPEM, EncodeCert(der)...)))
		if err != nil {
			t.Fatal(err)
		}
		if c.Subject.CommonName != "pemfile test CA" {
			t.Errorf("read %q", c.Subject.CommonName)
		}
	})
}

func TestReadKey(t *testing.T) {
	ec, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	rk, err := rsa.GenerateKey(rand.Reader, 1024) // small: only parsed, never trusted
	if err != nil {
		t.Fatal(err)
	}
	pkcs8, err := x509.MarshalPKCS8PrivateKey(ec)
	if err != nil {
		t.Fatal(err)
	}
	sec1, err := x509.MarshalECPrivateKey(ec)
	if err != nil {
		t.Fatal(err)
	}
	for name, tc := range map[string]struct {
		pem  []byte
		want crypto.PublicKey
	}{
		"PKCS#8": {Encode(TypePKCS8Key, pkcs8), &ec.PublicKey},
		"EC":     {Encode(TypeECKey, sec1), &ec.PublicKey},
		"PKCS#1": {Encode(TypeRSAKey, x509.MarshalPKCS1PrivateKey(rk)), &rk.PublicKey},
	} {
		t.Run(name, func(t *testing.T) {
			k, err := ReadKey(writeFile(t, "k.key", tc.pem))
			if err != nil {
				t.Fatal(err)
			}
			if !k.Public().(interface{ Equal(crypto.PublicKey) bool }).Equal(tc.want) {
				t.Errorf("read a different key")
			}
		})
	}
}

func TestReadCRL(t *testing.T) {
	_, _, crlDER := testCA(t)
	for name, b := range map[string][]byte{"PEM": Encode(TypeCRL, crlDER), "DER": crlDER} {
		t.Run(name, func(t *testing.T) {
			rl, err := ReadCRL(writeFile(t, "crl", b))
			if err != nil {
				t.Fatal(err)
			}
			if rl.Number.Int64() != 3 || len(rl.RevokedCertificateEntries) != 1 || rl.RevokedCertificateEntries[0].SerialNumber.Int64() != 42 {
				t.Errorf("read CRL number %v, entries %+v", rl.Number, rl.RevokedCertificateEntries)
			}
		})
	}
}

func TestParseECDSAPair(t *testing.T) {
	der, key, _ := testCA(t)
	keyPEM, sec1 := keyForms(t, key)
	for name, kp := range map[string][]byte{"PKCS#8": keyPEM, "EC": Encode(TypeECKey, sec1)} {
		c, k, err := ParseECDSAPair(EncodeCert(der), kp)
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		if !k.Equal(key) || c.Subject.CommonName != "pemfile test CA" {
			t.Errorf("%s: wrong pair", name)
		}
	}
	other, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	otherPEM, err := EncodeKey(other)
	if err != nil {
		t.Fatal(err)
	}
	if _, _, err := ParseECDSAPair(EncodeCert(der), otherPEM); !errors.Is(err, ErrKeyMismatch) {
		t.Errorf("another key: %v, want ErrKeyMismatch", err)
	}
	rk, err := rsa.GenerateKey(rand.Reader, 1024)
	if err != nil {
		t.Fatal(err)
	}
	if _, _, err := ParseECDSAPair(EncodeCert(der), Encode(TypeRSAKey, x509.MarshalPKCS1PrivateKey(rk))); err == nil {
		t.Error("RSA key accepted as ECDSA")
	}
	if _, _, err := ParseECDSAPair(nil, keyPEM); !errors.Is(err, ErrNoCertificate) {
		t.Errorf("no certificate: %v", err)
	}
}

func TestWrite(t *testing.T) {
	der, key, _ := testCA(t)
	dir := t.TempDir()
	crt, kp := filepath.Join(dir, "ca.crt"), filepath.Join(dir, "ca.key")
	if err := Write(crt, TypeCertificate, der, 0o644); err != nil {
		t.Fatal(err)
	}
	if err := WriteKey(kp, key); err != nil {
		t.Fatal(err)
	}
	for p, mode := range map[string]os.FileMode{crt: 0o644, kp: 0o600} {
		st, err := os.Stat(p)
		if err != nil {
			t.Fatal(err)
		}
		if st.Mode().Perm() != mode {
			t.Errorf("%s: mode %04o, want %04o", p, st.Mode().Perm(), mode)
		}
	}
	if _, err := os.Stat(crt + ".tmp"); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("temporary file left behind: %v", err)
	}
	c, k, err := ParseECDSAPair(must(os.ReadFile(crt)), must(os.ReadFile(kp)))
	if err != nil {
		t.Fatal(err)
	}
	if c.SerialNumber.Int64() != 7 || !k.Equal(key) {
		t.Error("read back a different certificate or key")
	}
	if err := Write(filepath.Join(dir, "no", "such", "dir"), TypeCertificate, der, 0o644); err == nil {
		t.Error("write into a missing directory succeeded")
	}
}

func must[T any](v T, err error) T {
	if err != nil {
		panic(err)
	}
	return v
}

// TestReadErrors: every way a file can fail each reader; the error names
// the file and, where there is one, wraps the sentinel.
func TestReadErrors(t *testing.T) {
	certDER, key, _ := testCA(t)
	keyPEM, sec1 := keyForms(t, key)
	x, err := ecdh.X25519().GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	xder, err := x509.MarshalPKCS8PrivateKey(x)
	if err != nil {
		t.Fatal(err)
	}
	readers := map[string]func(string) error{
		"cert": func(p string) error { _, err := ReadCert(p); return err },
		"key":  func(p string) error { _, err := ReadKey(p); return err },
		"crl":  func(p string) error { _, err := ReadCRL(p); return err },
	}
	for _, tc := range []struct {
		reader, name string
		content      []byte // nil: no file
		want         error  // nil: any error
	}{
		{"cert", "missing", nil, fs.ErrNotExist},
		{"cert", "no PEM block", certDER, ErrNoCertificate},
		{"cert", "wrong block type", keyPEM, ErrNoCertificate},
		{"cert", "bad DER", Encode(TypeCertificate, []byte{0x30, 0x03, 1, 2, 3}), nil},
		{"key", "missing", nil, fs.ErrNotExist},
		{"key", "no PEM block", sec1, ErrNoKey},
		{"key", "wrong block type", EncodeCert(certDER), ErrKeyType},
		{"key", "label and content disagree", Encode(TypeRSAKey, sec1), nil},
		{"key", "key cannot sign", Encode(TypePKCS8Key, xder), ErrCannotSign},
		{"crl", "missing", nil, fs.ErrNotExist},
		{"crl", "no PEM block", []byte("not a CRL\n"), nil},
		{"crl", "wrong block type", EncodeCert(certDER), nil},
	} {
		t.Run(tc.reader+"/"+tc.name, func(t *testing.T) {
			p := filepath.Join(t.TempDir(), tc.reader+".pem")
			if tc.content != nil {
				p = writeFile(t, tc.reader+".pem", tc.content)
			}
			wantPathErr(t, readers[tc.reader](p), p, tc.want)
		})
	}
}
