// Package pki is the gateway's small certificate authority, in the spirit
// of strongswan-pki: create a CA (ECDSA P-256 by default, RSA-2048 as an
// option), issue gateway, site and device certificates with SANs, revoke
// them, publish a CRL the gateway honours (Verifier), and list what expires
// when. All of it composes crypto/x509; no primitives are written here.
//
// Directory layout (keys 0600):
//
//	ca.crt ca.key             the CA
//	certs/NAME.crt NAME.key   issued certificates
//	index.json                every issued certificate, revocations
//	crl.pem                   the current CRL (rewritten on revoke)
package pki

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/json"
	"fmt"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"regexp"
	"sort"
	"strings"
	"time"

	"github.com/fleetgate/fleetgate/internal/pemfile"
)

// Key types.
const (
	KeyECDSA = "ecdsa" // ECDSA P-256 (default)
	KeyRSA   = "rsa"   // RSA-2048, for peers without ECDSA support
)

// Certificate kinds; they select the extended key usages. serverAuth is
// the mark of a gateway: the bridge (ike.GatewayPolicy) dials only a
// certificate that has it, so site and device certificates never get it,
// and one compromised site box cannot pose as the gateway.
const (
	KindGateway = "gateway" // serverAuth + IKE intermediate (Windows wants both)
	KindSite    = "site"    // an edge bridge or stock client: clientAuth only
	KindDevice  = "device"  // an MCU for DTLS: clientAuth only
)

// oidIKEIntermediate is id-kp-ipsecIKE-intermediate (1.3.6.1.5.5.8.2.2),
// which Windows checks on the gateway certificate.
var oidIKEIntermediate = []int{1, 3, 6, 1, 5, 5, 8, 2, 2}

// Store is a PKI directory.
type Store struct {
	Dir string
	// Now is the clock; nil means time.Now (tests inject one).
	Now func() time.Time
}

// Entry is one issued certificate in the index.
type Entry struct {
	Name      string    `json:"name"`
	Kind      string    `json:"kind"`
	Serial    string    `json:"serial"` // hex
	NotAfter  time.Time `json:"not_after"`
	SANs      []string  `json:"sans,omitempty"`
	RevokedAt time.Time `json:"revoked_at,omitzero"`
}

// Revoked reports whether the entry has been revoked.
func (e Entry) Revoked() bool { return !e.RevokedAt.IsZero() }

// CAOptions configure CreateCA.
type CAOptions struct {
	CommonName string        // default "fleetgate CA"
	KeyType    string        // ecdsa (default) or rsa
	Lifetime   time.Duration // default 10 years
}

// IssueOptions configure Issue.
type IssueOptions struct {
	Name     string        // CN and file name
	Kind     string        // gateway, site (default) or device
	SANs     []string      // DNS names, IP addresses, emails; default: Name as DNS
	KeyType  string        // ecdsa (default) or rsa
	Lifetime time.Duration // default 2 years (825 days)
}

var nameRE = regexp.MustCompile(`^[A-Za-z0-9._@-]{1,64}$`)

func (s *Store) now() time.Time {
	if s.Now != nil {
		return s.Now()
	}
	return time.Now()
}

func (s *Store) path(parts ...string) string {
	return filepath.Join(append([]string{s.Dir}, parts...)...)
}

// newKey makes a key pair of kind and a random 127-bit serial number for
// the certificate that will hold it.
func newKey(kind string) (crypto.Signer, *big.Int, error) {
	var (
		key crypto.Signer
		err error
	)
	switch kind {
	case "", KeyECDSA:
		key, err = ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	case KeyRSA:
		key, err = rsa.GenerateKey(rand.Reader, 2048)
	default:
		return nil, nil, ErrBadKeyType
	}
	if err != nil {
		return nil, nil, err
	}
	sn, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 127))
	if err != nil {
		return nil, nil, fmt.Errorf("pki: %w", err)
	}
	return key, sn, nil
}

// CreateCA makes a new self-signed CA in the directory.
func (s *Store) CreateCA(o CAOptions) (*x509.Certificate, error) {
	if _, err := os.Stat(s.path("ca.crt")); err == nil {
		return nil, ErrCAExists
	}
	if err := os.MkdirAll(s.path("certs"), 0o700); err != nil {
		return nil, fmt.Errorf("pki: %w", err)
	}
	if o.CommonName == "" {
		o.CommonName = "fleetgate CA"
	}
	if o.Lifetime == 0 {
		o.Lifetime = 10 * 365 * 24 * time.Hour
	}
	key, sn, err := newKey(o.KeyType)
	if err != nil {
		return nil, err
	}
	now := s.now()
	tmpl := &x509.Certificate{
		SerialNumber:          sn,
		Subject:               pkix.Name{CommonName: o.CommonName, Organization: []string{"fleetgate"}},
		NotBefore:             now.Add(-time.Hour),
		NotAfter:              now.Add(o.Lifetime),
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign,
		BasicConstraintsValid: true,
		IsCA:                  true,
		MaxPathLenZero:        true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, key.Public(), key)
	if err != nil {
		return nil, fmt.Errorf("pki: create CA: %w", err)
	}
	if err := pemfile.WriteKey(s.path("ca.key"), key); err != nil {
		return nil, err
	}
	if err := pemfile.Write(s.path("ca.crt"), pemfile.TypeCertificate, der, 0o644); err != nil {
		return nil, err
	}
	if err := s.saveIndex(nil); err != nil {
		return nil, err
	}
	if _, err := s.WriteCRL(); err != nil {
		return nil, err
	}
	return x509.ParseCertificate(der)
}

// CA loads the CA certificate and key.
func (s *Store) CA() (*x509.Certificate, crypto.Signer, error) {
	cert, err := pemfile.ReadCert(s.path("ca.crt"))
	if err != nil {
		if os.IsNotExist(err) {
			return nil, nil, ErrNoCA
		}
		return nil, nil, err
	}
	key, err := pemfile.ReadKey(s.path("ca.key"))
	if err != nil {
		return nil, nil, err
	}
	return cert, key, nil
}

// Issue creates a key pair and a certificate signed by the CA, writes them
// to certs/NAME.crt and certs/NAME.key and records them in the index.
func (s *Store) Issue(o IssueOptions) (*x509.Certificate, error) {
	if !nameRE.MatchString(o.Name) {
		return nil, ErrBadName
	}
	ca, caKey, err := s.CA()
	if err != nil {
		return nil, err
	}
	idx, err := s.Index()
	if err != nil {
		return nil, err
	}
	for _, e := range idx {
		if e.Name == o.Name && !e.Revoked() {
			return nil, ErrExists
		}
	}
	if o.Kind == "" {
		o.Kind = KindSite
	}
	if o.Lifetime == 0 {
		o.Lifetime = 825 * 24 * time.Hour
	}
	key, sn, err := newKey(o.KeyType)
	if err != nil {
		return nil, err
	}
	now := s.now()
	notAfter := now.Add(o.Lifetime)
	if notAfter.After(ca.NotAfter) {
		notAfter = ca.NotAfter
	}
	tmpl := &x509.Certificate{
		SerialNumber: sn,
		Subject:      pkix.Name{CommonName: o.Name, Organization: []string{"fleetgate"}, OrganizationalUnit: []string{o.Kind}},
		NotBefore:    now.Add(-time.Hour),
		NotAfter:     notAfter,
		KeyUsage:     x509.KeyUsageDigitalSignature,
	}
	if _, ok := key.(*rsa.PrivateKey); ok {
		tmpl.KeyUsage |= x509.KeyUsageKeyEncipherment
	}
	switch o.Kind {
	case KindGateway:
		tmpl.ExtKeyUsage = []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}
		tmpl.UnknownExtKeyUsage = append(tmpl.UnknownExtKeyUsage, oidIKEIntermediate)
	case KindSite, KindDevice:
		tmpl.ExtKeyUsage = []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}
	default:
		return nil, fmt.Errorf("pki: kind %q: want gateway, site or device", o.Kind)
	}
	sans := o.SANs
	if len(sans) == 0 {
		sans = []string{o.Name}
	}
	for _, san := range sans {
		switch {
		case net.ParseIP(san) != nil:
			tmpl.IPAddresses = append(tmpl.IPAddresses, net.ParseIP(san))
		case strings.Contains(san, "@"):
			tmpl.EmailAddresses = append(tmpl.EmailAddresses, san)
		default:
			tmpl.DNSNames = append(tmpl.DNSNames, san)
		}
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca, key.Public(), caKey)
	if err != nil {
		return nil, fmt.Errorf("pki: issue %s: %w", o.Name, err)
	}
	if err := pemfile.WriteKey(s.path("certs", o.Name+".key"), key); err != nil {
		return nil, err
	}
	if err := pemfile.Write(s.path("certs", o.Name+".crt"), pemfile.TypeCertificate, der, 0o644); err != nil {
		return nil, err
	}
	idx = append(idx, Entry{Name: o.Name, Kind: o.Kind, Serial: sn.Text(16), NotAfter: notAfter, SANs: sans})
	if err := s.saveIndex(idx); err != nil {
		return nil, err
	}
	return x509.ParseCertificate(der)
}

// Revoke marks the current certificate called name revoked and rewrites
// the CRL.
func (s *Store) Revoke(name string) error {
	idx, err := s.Index()
	if err != nil {
		return err
	}
	found := false
	for i := range idx {
		if idx[i].Name == name && !idx[i].Revoked() {
			idx[i].RevokedAt = s.now().UTC().Truncate(time.Second)
			found = true
		}
	}
	if !found {
		return ErrNotFound
	}
	if err := s.saveIndex(idx); err != nil {
		return err
	}
	_, err = s.WriteCRL()
	return err
}

// WriteCRL signs a CRL listing every revoked certificate (valid 30 days;
// re-run after revoking or from a timer) and writes crl.pem.
func (s *Store) WriteCRL() (*x509.RevocationList, error) {
	ca, caKey, err := s.CA()
	if err != nil {
		return nil, err
	}
	idx, err := s.Index()
	if err != nil {
		return nil, err
	}
	now := s.now()
	rl := &x509.RevocationList{Number: big.NewInt(now.Unix()), ThisUpdate: now, NextUpdate: now.Add(30 * 24 * time.Hour)}
	for _, e := range idx {
		if !e.Revoked() {
			continue
		}
		sn, ok := new(big.Int).SetString(e.Serial, 16)
		if !ok {
			return nil, fmt.Errorf("pki: index: bad serial %q for %s", e.Serial, e.Name)
		}
		rl.RevokedCertificateEntries = append(rl.RevokedCertificateEntries, x509.RevocationListEntry{SerialNumber: sn, RevocationTime: e.RevokedAt})
	}
	der, err := x509.CreateRevocationList(rand.Reader, rl, ca, caKey)
	if err != nil {
		return nil, fmt.Errorf("pki: create CRL: %w", err)
	}
	if err := pemfile.Write(s.path("crl.pem"), pemfile.TypeCRL, der, 0o644); err != nil {
		return nil, err
	}
	return x509.ParseRevocationList(der)
}

// Index returns every issued certificate, soonest expiry first.
func (s *Store) Index() ([]Entry, error) {
	b, err := os.ReadFile(s.path("index.json"))
	if err != nil {
		if os.IsNotExist(err) {
			return nil, ErrNoCA
		}
		return nil, fmt.Errorf("pki: %w", err)
	}
	var idx []Entry
	if err := json.Unmarshal(b, &idx); err != nil {
		return nil, fmt.Errorf("pki: index.json: %w", err)
	}
	sort.SliceStable(idx, func(i, j int) bool { return idx[i].NotAfter.Before(idx[j].NotAfter) })
	return idx, nil
}

func (s *Store) saveIndex(idx []Entry) error {
	if idx == nil {
		idx = []Entry{}
	}
	b, err := json.MarshalIndent(idx, "", "  ")
	if err != nil {
		return fmt.Errorf("pki: %w", err)
	}
	tmp := s.path("index.json.tmp")
	if err := os.WriteFile(tmp, append(b, '\n'), 0o600); err != nil {
		return fmt.Errorf("pki: %w", err)
	}
	return os.Rename(tmp, s.path("index.json"))
}
