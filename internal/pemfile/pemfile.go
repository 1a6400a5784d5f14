// Package pemfile reads and writes the PEM files a PKI keeps: X.509
// certificates, private keys (PKCS#8, SEC 1 EC, PKCS#1 RSA) and CRLs. It
// composes encoding/pem and crypto/x509 only. The gateway's CA
// (gateway/pki), the site CA (downlink/registry), the simulated fleet's
// credentials and the configuration checks (internal/filecheck) all read
// and write these files through it, so a file one of them accepts the
// others accept too.
//
// Read errors name the file: a missing file is the *fs.PathError of
// os.ReadFile (errors.Is(err, fs.ErrNotExist) holds), anything else is
// "pemfile: PATH: reason".
package pemfile

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"os"
)

// PEM block types.
const (
	TypeCertificate = "CERTIFICATE"     // RFC 7468 section 5
	TypePKCS8Key    = "PRIVATE KEY"     // RFC 7468 section 10
	TypeECKey       = "EC PRIVATE KEY"  // RFC 5915 (SEC 1)
	TypeRSAKey      = "RSA PRIVATE KEY" // PKCS#1
	TypeCRL         = "X509 CRL"        // RFC 7468 section 6
)

// Sentinel errors; the errors returned wrap them.
var (
	// ErrNoCertificate: the input has no PEM block of type CERTIFICATE.
	ErrNoCertificate = errors.New("no PEM certificate")
	// ErrNoKey: the input has no PEM block at all.
	ErrNoKey = errors.New("no PEM key")
	// ErrKeyType: the first PEM block is not a private key type this
	// package reads.
	ErrKeyType = errors.New("unsupported key block")
	// ErrCannotSign: the key parses but is not a crypto.Signer (an X25519
	// key, say).
	ErrCannotSign = errors.New("key cannot sign")
)

// ParseCert parses the first CERTIFICATE block of b; blocks of other
// types before it (a key in a combined file) are skipped.
func ParseCert(b []byte) (*x509.Certificate, error) {
	c, err := parseCert(b)
	if err != nil {
		return nil, fmt.Errorf("pemfile: %w", err)
	}
	return c, nil
}

// ParseKey parses a PKCS#8 ("PRIVATE KEY"), SEC 1 ("EC PRIVATE KEY") or
// PKCS#1 ("RSA PRIVATE KEY") private key from the first PEM block of b.
func ParseKey(b []byte) (crypto.Signer, error) {
	k, err := parseKey(b)
	if err != nil {
		return nil, fmt.Errorf("pemfile: %w", err)
	}
	return k, nil
}

// ParseCRL parses a CRL in PEM (the first block) or DER.
func ParseCRL(b []byte) (*x509.RevocationList, error) {
	rl, err := parseCRL(b)
	if err != nil {
		return nil, fmt.Errorf("pemfile: %w", err)
	}
	return rl, nil
}

// ReadCert reads the first PEM certificate of a file (ParseCert).
func ReadCert(path string) (*x509.Certificate, error) {
	return read(path, parseCert)
}

// ReadKey reads a PEM private key from a file (ParseKey).
func ReadKey(path string) (crypto.Signer, error) {
	return read(path, parseKey)
}

// ReadCRL reads a PEM or DER CRL from a file (ParseCRL).
func ReadCRL(path string) (*x509.RevocationList, error) {
	return read(path, parseCRL)
}

func read[T any](path string, parse func([]byte) (T, error)) (T, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		var zero T
		return zero, err
	}
	v, err := parse(b)
	if err != nil {
		return v, fmt.Errorf("pemfile: %s: %w", path, err)
	}
	return v, nil
}

func parseCert(b []byte) (*x509.Certificate, error) {
	for {
		var blk *pem.Block
		blk, b = pem.Decode(b)
		if blk == nil {
			return nil, ErrNoCertificate
		}
		if blk.Type == TypeCertificate {
			return x509.ParseCertificate(blk.Bytes)
		}
	}
}

func parseKey(b []byte) (crypto.Signer, error) {
	blk, _ := pem.Decode(b)
	if blk == nil {
		return nil, ErrNoKey
	}
	var (
		k   any
		err error
	)
	switch blk.Type {
	case TypePKCS8Key:
		k, err = x509.ParsePKCS8PrivateKey(blk.Bytes)
	case TypeECKey:
		k, err = x509.ParseECPrivateKey(blk.Bytes)
	case TypeRSAKey:
		k, err = x509.ParsePKCS1PrivateKey(blk.Bytes)
	default:
		return nil, fmt.Errorf("%w %q", ErrKeyType, blk.Type)
	}
	if err != nil {
		return nil, err
	}
	signer, ok := k.(crypto.Signer)
	if !ok {
		return nil, fmt.Errorf("%w (%T)", ErrCannotSign, k)
	}
	return signer, nil
}

func parseCRL(b []byte) (*x509.RevocationList, error) {
	if blk, _ := pem.Decode(b); blk != nil {
		b = blk.Bytes
	}
	return x509.ParseRevocationList(b)
}

// ErrKeyMismatch: a private key does not belong to the certificate.
var ErrKeyMismatch = errors.New("key does not match the certificate")

// ParseECDSAPair parses a PEM certificate (ParseCert) and its PEM ECDSA
// private key (ParseKey), and checks that the key is the certificate's:
// what a CA that signs with the key needs.
func ParseECDSAPair(certPEM, keyPEM []byte) (*x509.Certificate, *ecdsa.PrivateKey, error) {
	cert, err := ParseCert(certPEM)
	if err != nil {
		return nil, nil, err
	}
	k, err := ParseKey(keyPEM)
	if err != nil {
		return nil, nil, err
	}
	key, ok := k.(*ecdsa.PrivateKey)
	if !ok {
		return nil, nil, fmt.Errorf("pemfile: %T is not an ECDSA key", k)
	}
	if !key.PublicKey.Equal(cert.PublicKey) {
		return nil, nil, fmt.Errorf("pemfile: %w", ErrKeyMismatch)
	}
	return cert, key, nil
}
