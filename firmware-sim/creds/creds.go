// Package creds holds endpoint credentials for simulated devices and reads
// and writes the fleet credentials file.
//
// # Credentials file format (version 1)
//
// A UTF-8 text file, one endpoint per line, fields separated by spaces or
// tabs; blank lines and lines starting with "#" are ignored:
//
//	# fleetgate credentials v1
//	# name       kind  identity    secret                [key]
//	sensor-1     psk   sensor-1    hex:3f0a...           (DTLS PSK, bytes in hex)
//	sensor-2     psk   sensor-2    text:secret-2         (DTLS PSK given as text)
//	sensor-3     cert  sensor-3    certs/sensor-3.pem    certs/sensor-3.key
//	sensor-4     mqtt  sensor-4    text:password-4       (MQTT username/password)
//
// name is the endpoint name (it also names the device in telemetry);
// identity is the DTLS PSK identity or the MQTT username (for cert, the
// expected certificate common name). Secrets carry an explicit encoding
// prefix, "hex:" or "text:"; keys provisioned by the bridge are 32
// hexadecimal characters used as text ("text:3f0a…"), so that the same
// string is the PSK for pion, libcoap's -k and firmware. Certificate and key paths are PEM files,
// relative to the credentials file's directory. The file holds secrets:
// keep it mode 0600. The bridge's `endpoint add` writes this format; the
// simulator and the collector read it.
package creds

import (
	"bufio"
	"bytes"
	"crypto/hmac"
	"crypto/sha256"
	"crypto/tls"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
)

// Kind is the credential type of an endpoint.
type Kind string

const (
	// KindPSK is a DTLS pre-shared key (RFC 4279).
	KindPSK Kind = "psk"
	// KindCert is an ECDSA P-256 certificate and key.
	KindCert Kind = "cert"
	// KindMQTT is an MQTT username and password (sent over TLS).
	KindMQTT Kind = "mqtt"
)

// Entry is one endpoint's credentials.
type Entry struct {
	Name     string
	Kind     Kind
	Identity string
	// Secret is the PSK bytes or the MQTT password. Never log it.
	Secret []byte
	// CertFile and KeyFile are set for KindCert (absolute or relative to
	// the credentials file).
	CertFile, KeyFile string
	// Cert is the loaded or generated certificate for KindCert.
	Cert *tls.Certificate
}

// Set is a collection of entries indexed by name.
type Set struct {
	byName  map[string]*Entry
	byIdent map[string]*Entry
	names   []string
}

// NewSet returns an empty Set.
func NewSet() *Set {
	return &Set{byName: map[string]*Entry{}, byIdent: map[string]*Entry{}}
}

// Add inserts e; names and PSK identities must be unique.
func (s *Set) Add(e Entry) error {
	if _, ok := s.byName[e.Name]; ok {
		return fmt.Errorf("%w: %q", ErrDuplicate, e.Name)
	}
	if e.Kind == KindPSK {
		if _, ok := s.byIdent[e.Identity]; ok {
			return fmt.Errorf("%w: identity %q", ErrDuplicate, e.Identity)
		}
	}
	p := &e
	s.byName[e.Name] = p
	if e.Kind == KindPSK {
		s.byIdent[e.Identity] = p
	}
	s.names = append(s.names, e.Name)
	return nil
}

// Get returns the entry named name.
func (s *Set) Get(name string) (*Entry, error) {
	e, ok := s.byName[name]
	if !ok {
		return nil, fmt.Errorf("%w: %q", ErrNotFound, name)
	}
	return e, nil
}

// PSK returns the key for a DTLS PSK identity; it suits pion's WithPSK
// callback on a server.
func (s *Set) PSK(identity []byte) ([]byte, error) {
	e, ok := s.byIdent[string(identity)]
	if !ok {
		return nil, fmt.Errorf("%w: psk identity %q", ErrNotFound, identity)
	}
	return e.Secret, nil
}

// Names returns the entry names in insertion order.
func (s *Set) Names() []string { return append([]string(nil), s.names...) }

// Len returns the number of entries.
func (s *Set) Len() int { return len(s.names) }

// Parse reads a credentials file body. Errors carry the line number.
// Certificate paths are resolved against dir but not loaded.
func Parse(r io.Reader, dir string) (*Set, error) {
	s := NewSet()
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 4096), 64*1024)
	ln := 0
	for sc.Scan() {
		ln++
		line := strings.TrimSpace(sc.Text())
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		f := strings.Fields(line)
		if len(f) < 4 {
			return nil, fmt.Errorf("%w: line %d: want name kind identity secret, got %d fields", ErrSyntax, ln, len(f))
		}
		e := Entry{Name: f[0], Kind: Kind(f[1]), Identity: f[2]}
		switch e.Kind {
		case KindPSK, KindMQTT:
			if len(f) != 4 {
				return nil, fmt.Errorf("%w: line %d: %s takes 4 fields, got %d", ErrSyntax, ln, e.Kind, len(f))
			}
			sec, err := decodeSecret(f[3])
			if err != nil {
				return nil, fmt.Errorf("%w: line %d: %v", ErrSyntax, ln, err)
			}
			e.Secret = sec
		case KindCert:
			if len(f) != 5 {
				return nil, fmt.Errorf("%w: line %d: cert takes name cert identity certfile keyfile", ErrSyntax, ln)
			}
			e.CertFile, e.KeyFile = joinDir(dir, f[3]), joinDir(dir, f[4])
		default:
			return nil, fmt.Errorf("%w: line %d: unknown kind %q (psk, cert, mqtt)", ErrSyntax, ln, f[1])
		}
		if err := s.Add(e); err != nil {
			return nil, fmt.Errorf("line %d: %w", ln, err)
		}
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("%w: line %d: %v", ErrSyntax, ln+1, err)
	}
	return s, nil
}

func joinDir(dir, p string) string {
	if filepath.IsAbs(p) || dir == "" {
		return p
	}
	return filepath.Join(dir, p)
}

func decodeSecret(s string) ([]byte, error) {
	switch {
	case strings.HasPrefix(s, "hex:"):
		b, err := hex.DecodeString(s[4:])
		if err != nil || len(b) == 0 {
			return nil, errors.New("bad hex secret")
		}
		return b, nil
	case strings.HasPrefix(s, "text:") && len(s) > 5:
		return []byte(s[5:]), nil
	}
	return nil, errors.New(`secret needs a "hex:" or "text:" prefix and a value`)
}

func encodeSecret(b []byte) string {
	printable := len(b) > 0
	for _, c := range b {
		if c <= ' ' || c > '~' {
			printable = false
		}
	}
	if printable {
		return "text:" + string(b)
	}
	return "hex:" + hex.EncodeToString(b)
}

// LoadFile reads a credentials file and loads the certificates it names.
func LoadFile(path string) (*Set, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("creds: %w", err)
	}
	s, err := Parse(bytes.NewReader(b), filepath.Dir(path))
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	for _, n := range s.names {
		e := s.byName[n]
		if e.Kind != KindCert {
			continue
		}
		c, err := tls.LoadX509KeyPair(e.CertFile, e.KeyFile)
		if err != nil {
			return nil, fmt.Errorf("creds: %s: %w", e.Name, err)
		}
		e.Cert = &c
	}
	return s, nil
}

// Write writes s in the file format above (cert entries keep their paths).
func (s *Set) Write(w io.Writer) error {
	bw := bufio.NewWriter(w)
	fmt.Fprintln(bw, "# fleetgate credentials v1")
	fmt.Fprintln(bw, "# name kind identity secret [key]")
	for _, n := range s.names {
		e := s.byName[n]
		switch e.Kind {
		case KindCert:
			fmt.Fprintf(bw, "%s\t%s\t%s\t%s\t%s\n", e.Name, e.Kind, e.Identity, e.CertFile, e.KeyFile)
		default:
			fmt.Fprintf(bw, "%s\t%s\t%s\t%s\n", e.Name, e.Kind, e.Identity, encodeSecret(e.Secret))
		}
	}
	return bw.Flush()
}

// DerivePSK returns a deterministic 16-byte PSK for name from seed
// (HMAC-SHA256(seed, name) truncated), so that a simulator and a server
// given the same seed agree without exchanging a file. For tests and
// demos only: real fleets use random keys.
func DerivePSK(seed, name string) []byte {
	m := hmac.New(sha256.New, []byte(seed))
	m.Write([]byte(name))
	return m.Sum(nil)[:16]
}

// Generate returns PSK or MQTT entries for names. Like the bridge's
// provisioning, the secret is the 32-character hex TEXT of a 16-byte key
// (creds.DerivePSK), used as text: the same string works as a DTLS PSK for
// pion, as libcoap's -k, and as an MQTT password.
func Generate(seed string, kind Kind, names []string) (*Set, error) {
	s := NewSet()
	for _, n := range names {
		sec := []byte(hex.EncodeToString(DerivePSK(seed, n)))
		if err := s.Add(Entry{Name: n, Kind: kind, Identity: n, Secret: sec}); err != nil {
			return nil, err
		}
	}
	return s, nil
}
