package pemfile

import (
	"crypto"
	"crypto/x509"
	"encoding/pem"
	"fmt"
	"os"
)

// Encode returns one PEM block of type typ holding der.
func Encode(typ string, der []byte) []byte {
	return pem.EncodeToMemory(&pem.Block{Type: typ, Bytes: der})
}

// EncodeCert returns a DER certificate as a PEM CERTIFICATE block.
func EncodeCert(der []byte) []byte { return Encode(TypeCertificate, der) }

// EncodeKey returns a private key as a PEM PKCS#8 "PRIVATE KEY" block.
func EncodeKey(key crypto.PrivateKey) ([]byte, error) {
	der, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		return nil, fmt.Errorf("pemfile: %w", err)
	}
	return Encode(TypePKCS8Key, der), nil
}

// Write writes one PEM block of type typ to path with mode, through
// PATH.tmp and a rename, so a reader sees the old file or the new one.
func Write(path, typ string, der []byte, mode os.FileMode) error {
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, Encode(typ, der), mode); err != nil {
		return fmt.Errorf("pemfile: %w", err)
	}
	if err := os.Rename(tmp, path); err != nil {
		return fmt.Errorf("pemfile: %w", err)
	}
	return nil
}

// WriteKey writes a private key to path in PKCS#8 PEM, mode 0600 (Write).
func WriteKey(path string, key crypto.PrivateKey) error {
	der, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		return fmt.Errorf("pemfile: %w", err)
	}
	return Write(path, TypePKCS8Key, der, 0o600)
}
