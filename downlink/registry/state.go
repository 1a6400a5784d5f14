package registry

import (
	"encoding/json"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
)

// stateVersion is the version of the state file format.
const stateVersion = 1

// State is the persisted registry: the JSON document in the state file.
type State struct {
	// Version is the format version (1).
	Version int `json:"version"`
	// Prefix is the site prefix addresses were assigned from.
	Prefix netip.Prefix `json:"prefix"`
	// Endpoints in no particular order.
	Endpoints []Endpoint `json:"endpoints"`
}

// ParseState decodes and validates a state file. It never panics on bad
// input; every inconsistency is reported as ErrBadState with a reason.
func ParseState(b []byte) (*State, error) {
	var s State
	if err := json.Unmarshal(b, &s); err != nil {
		return nil, fmt.Errorf("%w: %v", ErrBadState, err)
	}
	if err := s.validate(); err != nil {
		return nil, err
	}
	return &s, nil
}

// MarshalState encodes s as indented JSON (the state file's content).
func MarshalState(s *State) ([]byte, error) {
	b, err := json.MarshalIndent(s, "", "  ")
	if err != nil {
		return nil, fmt.Errorf("device: encode state: %w", err)
	}
	return append(b, '\n'), nil
}

func (s *State) validate() error {
	if s.Version != stateVersion {
		return fmt.Errorf("%w: version %d, want %d", ErrBadState, s.Version, stateVersion)
	}
	if err := checkPrefix(s.Prefix); err != nil {
		return fmt.Errorf("%w: %v", ErrBadState, err)
	}
	names := map[string]bool{}
	ids := map[string]bool{}
	cns := map[string]bool{}
	addrs := map[netip.Addr]bool{}
	for i := range s.Endpoints {
		e := &s.Endpoints[i]
		if err := e.validate(); err != nil {
			return fmt.Errorf("%w: endpoint %d: %v", ErrBadState, i, err)
		}
		if !usable(s.Prefix, e.Addr) {
			return fmt.Errorf("%w: endpoint %q: address %s not usable in %s", ErrBadState, e.Name, e.Addr, s.Prefix)
		}
		if names[e.Name] || addrs[e.Addr] || (e.PSKIdentity != "" && ids[e.PSKIdentity]) || (e.CertCN != "" && cns[e.CertCN]) {
			return fmt.Errorf("%w: endpoint %q: duplicate name, address, identity or CN", ErrBadState, e.Name)
		}
		names[e.Name], addrs[e.Addr] = true, true
		if e.PSKIdentity != "" {
			ids[e.PSKIdentity] = true
		}
		if e.CertCN != "" {
			cns[e.CertCN] = true
		}
	}
	return nil
}

func (e *Endpoint) validate() error {
	if !validName(e.Name) {
		return fmt.Errorf("%w: %q", ErrBadName, e.Name)
	}
	if e.Protocol != CoAP && e.Protocol != MQTT {
		return ErrBadProtocol
	}
	if (e.PSKIdentity == "") != (len(e.PSK) == 0) {
		return fmt.Errorf("device: endpoint %q: PSK identity and key must both be set", e.Name)
	}
	if e.PSKIdentity == "" && e.CertCN == "" {
		return ErrNoCredentials
	}
	if e.CertSerial != "" && (e.CertCN == "" || len(e.CertSerial) > 40 || !isLowerHex(e.CertSerial)) {
		return fmt.Errorf("device: endpoint %q: cert_serial must be the lowercase hex serial of its certificate", e.Name)
	}
	if len(e.PSKIdentity) > 128 || len(e.PSK) > 64 || len(e.CertCN) > 64 {
		return fmt.Errorf("device: endpoint %q: identity, key or CN too long", e.Name)
	}
	return nil
}

func checkPrefix(p netip.Prefix) error {
	if !p.IsValid() || !p.Addr().Is4() || p.Bits() > 30 {
		return ErrBadPrefix
	}
	return nil
}

// usable reports whether a is inside p and neither its network nor its
// broadcast address.
func usable(p netip.Prefix, a netip.Addr) bool {
	if !a.Is4() || !p.Contains(a) {
		return false
	}
	return a != p.Masked().Addr() && a != broadcast(p)
}

func broadcast(p netip.Prefix) netip.Addr {
	b := p.Masked().Addr().As4()
	host := uint32(1)<<(32-p.Bits()) - 1
	v := uint32(b[0])<<24 | uint32(b[1])<<16 | uint32(b[2])<<8 | uint32(b[3])
	v |= host
	return netip.AddrFrom4([4]byte{byte(v >> 24), byte(v >> 16), byte(v >> 8), byte(v)})
}

// writeFileAtomic writes b to path via a temporary file in the same
// directory, fsync and rename, so a crash leaves either the old or the new
// file, never a torn one. The file is private (0600): it holds PSKs.
func writeFileAtomic(path string, b []byte) error {
	dir := filepath.Dir(path)
	f, err := os.CreateTemp(dir, ".state-*")
	if err != nil {
		return fmt.Errorf("device: write state: %w", err)
	}
	tmp := f.Name()
	defer os.Remove(tmp) // no-op after a successful rename
	if err := f.Chmod(0o600); err != nil {
		f.Close()
		return fmt.Errorf("device: write state: %w", err)
	}
	if _, err := f.Write(b); err != nil {
		f.Close()
		return fmt.Errorf("device: write state: %w", err)
	}
	if err := f.Sync(); err != nil {
		f.Close()
		return fmt.Errorf("device: write state: %w", err)
	}
	if err := f.Close(); err != nil {
		return fmt.Errorf("device: write state: %w", err)
	}
	if err := os.Rename(tmp, path); err != nil {
		return fmt.Errorf("device: write state: %w", err)
	}
	if d, err := os.Open(dir); err == nil {
		_ = d.Sync()
		d.Close()
	}
	return nil
}

func isLowerHex(s string) bool {
	for _, c := range s {
		if (c < '0' || c > '9') && (c < 'a' || c > 'f') {
			return false
		}
	}
	return true
}
