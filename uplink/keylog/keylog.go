// Package keylog writes opt-in key logs in the formats Wireshark 4.0 reads,
// so an operator can decrypt a capture of our IKEv1 and ESP traffic:
//
//   - ikev1_decryption_table: one line per IKE SA, the initiator cookie and
//     the phase-1 encryption key (SKEYID_e-derived), both hex;
//   - esp_sa: one line per ESP SA: protocol, source and destination
//     (outer) address, SPI, encryption algorithm and key, authentication
//     algorithm and key.
//
// Both files are Wireshark "UAT" tables: put them in a Wireshark profile
// directory (e.g. ~/.config/wireshark/) or pass lines with
// `tshark -o "uat:esp_sa:<line>"`. Enable ESP decryption with
// `-o esp.enable_encryption_decode:TRUE`.
//
// The files hold secrets: they are created 0600 and nothing else in the
// project logs keys. A nil *Writer discards everything, so callers can hold
// one unconditionally.
package keylog

import (
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"net/netip"
	"os"
	"path/filepath"
	"sync"

	"github.com/fleetgate/fleetgate/uplink/esp"
)

// File names Wireshark looks for in a profile directory.
const (
	IKEv1File = "ikev1_decryption_table"
	ESPFile   = "esp_sa"
)

// ErrUnsupported means the suite has no Wireshark ESP algorithm name.
var ErrUnsupported = errors.New("keylog: suite not supported by Wireshark's ESP table")

// ESPSA describes one ESP SA for the esp_sa table.
type ESPSA struct {
	// Src and Dst are the outer addresses of the packets the SA protects
	// (sender to receiver), as the capture will show them. A zero or
	// unspecified address becomes the wildcard "*".
	Src, Dst netip.Addr
	// SPI is the SA's Security Parameters Index.
	SPI uint32
	// Suite is the negotiated transform.
	Suite esp.Suite
	// Keymat is the SA's keying material as esp.NewSA takes it: encryption
	// key (with the 4-byte salt for AES-GCM) then integrity key.
	Keymat []byte
}

// encName and authName return Wireshark 4.0's names (packet-ipsec.c value
// strings, which the UAT file stores verbatim).
func encName(s esp.Suite) (string, error) {
	switch s.Cipher {
	case esp.CipherAESGCM16:
		return "AES-GCM with 16 octet ICV [RFC4106]", nil
	case esp.CipherAESCBC:
		return "AES-CBC [RFC3602]", nil
	case esp.Cipher3DES:
		return "TripleDES-CBC [RFC2451]", nil
	}
	return "", fmt.Errorf("%w: cipher %d", ErrUnsupported, s.Cipher)
}

func authName(s esp.Suite) (string, error) {
	switch s.Integ {
	case esp.IntegNone:
		return "NULL", nil
	case esp.IntegHMACMD5_96:
		return "HMAC-MD5-96 [RFC2403]", nil
	case esp.IntegHMACSHA1_96:
		return "HMAC-SHA-1-96 [RFC2404]", nil
	case esp.IntegHMACSHA256_128:
		return "HMAC-SHA-256-128 [RFC4868]", nil
	case esp.IntegHMACSHA384_192:
		return "HMAC-SHA-384-192 [RFC4868]", nil
	case esp.IntegHMACSHA512_256:
		return "HMAC-SHA-512-256 [RFC4868]", nil
	}
	return "", fmt.Errorf("%w: integrity %d", ErrUnsupported, s.Integ)
}

// ESPLine formats one esp_sa UAT record (without the newline), e.g.
//
//	"IPv4","192.0.2.1","198.51.100.7","0x0000c0de","AES-CBC [RFC3602]","0x…","HMAC-SHA-1-96 [RFC2404]","0x…"
func ESPLine(sa ESPSA) (string, error) {
	if err := sa.Suite.Validate(); err != nil {
		return "", err
	}
	if len(sa.Keymat) != sa.Suite.KeymatLen() {
		return "", fmt.Errorf("keylog: keymat of %d bytes, %s needs %d", len(sa.Keymat), sa.Suite, sa.Suite.KeymatLen())
	}
	enc, err := encName(sa.Suite)
	if err != nil {
		return "", err
	}
	auth, err := authName(sa.Suite)
	if err != nil {
		return "", err
	}
	src, dst := sa.Src.Unmap(), sa.Dst.Unmap()
	proto, err := family(src, dst)
	if err != nil {
		return "", err
	}
	// An unknown or unspecified address (a socket bound to 0.0.0.0) is
	// written as Wireshark's wildcard.
	addr := func(a netip.Addr) string {
		if !a.IsValid() || a.IsUnspecified() {
			return "*"
		}
		return a.String()
	}
	ek := sa.Keymat[:sa.Suite.EncKeyLen()]
	ak := sa.Keymat[sa.Suite.EncKeyLen():]
	authKey := ""
	if len(ak) > 0 {
		authKey = "0x" + hex.EncodeToString(ak)
	}
	return fmt.Sprintf("%q,%q,%q,%q,%q,%q,%q,%q", proto, addr(src), addr(dst),
		fmt.Sprintf("0x%08x", sa.SPI), enc, "0x"+hex.EncodeToString(ek), auth, authKey), nil
}

// family is the esp_sa protocol column: the family of the addresses that
// are known. An unspecified address says nothing about the SA's family: a
// gateway whose socket is bound to [::] (dual stack) reports "::" as its
// local address for IPv4 peers, and tagging those SAs "IPv6" made
// Wireshark skip every IPv4 packet. Only when neither address is
// specified does the unspecified one decide.
func family(src, dst netip.Addr) (string, error) {
	var v4, v6 bool
	for _, a := range []netip.Addr{src, dst} {
		if !a.IsValid() || a.IsUnspecified() {
			continue
		}
		v4, v6 = v4 || a.Is4(), v6 || a.Is6()
	}
	if v4 && v6 {
		return "", fmt.Errorf("keylog: SA between %v and %v mixes IPv4 and IPv6", src, dst)
	}
	if !v4 && !v6 {
		// Both wildcards: the family of whichever was given.
		v6 = (src.IsValid() && src.Is6()) || (dst.IsValid() && dst.Is6())
		v4 = (src.IsValid() && src.Is4()) || (dst.IsValid() && dst.Is4())
		if v6 && !v4 {
			return "IPv6", nil
		}
		return "IPv4", nil
	}
	if v6 {
		return "IPv6", nil
	}
	return "IPv4", nil
}

// IKEv1Line formats one ikev1_decryption_table record: initiator cookie and
// encryption key, as unquoted hex (Wireshark's byte-field format).
func IKEv1Line(icookie [8]byte, encKey []byte) string {
	return hex.EncodeToString(icookie[:]) + "," + hex.EncodeToString(encKey)
}

// Writer appends records to the two tables. It is safe for concurrent use.
// A nil *Writer does nothing.
type Writer struct {
	mu      sync.Mutex
	ike     io.Writer
	esp     io.Writer
	closers []io.Closer
}

// NewWriter writes IKEv1 records to ike and ESP records to esp; either may
// be nil to skip that table.
func NewWriter(ike, esp io.Writer) *Writer { return &Writer{ike: ike, esp: esp} }

// Open creates (or appends to) IKEv1File and ESPFile in dir, mode 0600.
func Open(dir string) (*Writer, error) {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("keylog: %w", err)
	}
	open := func(name string) (*os.File, error) {
		f, err := os.OpenFile(filepath.Join(dir, name), os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o600)
		if err != nil {
			return nil, fmt.Errorf("keylog: %w", err)
		}
		return f, nil
	}
	ike, err := open(IKEv1File)
	if err != nil {
		return nil, err
	}
	espf, err := open(ESPFile)
	if err != nil {
		ike.Close()
		return nil, err
	}
	return &Writer{ike: ike, esp: espf, closers: []io.Closer{ike, espf}}, nil
}

// LogIKEv1 records an IKEv1 SA's initiator cookie and phase-1 encryption
// key exactly as the cipher uses it: SKEYID_e, expanded per RFC 2409
// Appendix B when shorter than the key, truncated to the cipher's key
// length (Wireshark hands it to the cipher as is and derives the IVs itself
// from the KE payloads in the capture).
func (w *Writer) LogIKEv1(icookie [8]byte, encKey []byte) error {
	if w == nil {
		return nil
	}
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.ike == nil {
		return nil
	}
	_, err := io.WriteString(w.ike, IKEv1Line(icookie, encKey)+"\n")
	return err
}

// LogESP records one ESP SA (call it for both directions of a pair).
func (w *Writer) LogESP(sa ESPSA) error {
	if w == nil {
		return nil
	}
	line, err := ESPLine(sa)
	if err != nil {
		return err
	}
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.esp == nil {
		return nil
	}
	_, err = io.WriteString(w.esp, line+"\n")
	return err
}

// LogESPPair records both directions of an SA pair between our outer
// address local and the peer's remote: the inbound SA (remote → local) and
// the outbound one (local → remote).
func (w *Writer) LogESPPair(local, remote netip.Addr, suite esp.Suite, inSPI uint32, inKey []byte, outSPI uint32, outKey []byte) error {
	if err := w.LogESP(ESPSA{Src: remote, Dst: local, SPI: inSPI, Suite: suite, Keymat: inKey}); err != nil {
		return err
	}
	return w.LogESP(ESPSA{Src: local, Dst: remote, SPI: outSPI, Suite: suite, Keymat: outKey})
}

// SetDir switches the writer to the tables in dir (as Open creates them)
// or, with dir "", off: later records are discarded. Files it had open are
// closed. It lets a daemon turn its key log on and off without a restart.
func (w *Writer) SetDir(dir string) error {
	var next *Writer
	if dir != "" {
		var err error
		if next, err = Open(dir); err != nil {
			return err
		}
	}
	w.mu.Lock()
	defer w.mu.Unlock()
	var errs []error
	for _, c := range w.closers {
		errs = append(errs, c.Close())
	}
	w.ike, w.esp, w.closers = nil, nil, nil
	if next != nil {
		w.ike, w.esp, w.closers = next.ike, next.esp, next.closers
	}
	return errors.Join(errs...)
}

// Close closes the files Open created.
func (w *Writer) Close() error {
	if w == nil {
		return nil
	}
	w.mu.Lock()
	defer w.mu.Unlock()
	var errs []error
	for _, c := range w.closers {
		errs = append(errs, c.Close())
	}
	w.closers = nil
	return errors.Join(errs...)
}
