// Validation of the RADIUS section and of secret files; inline secret detection.

package config

import (
	"fmt"
	"net"
	"os"
	"strings"
	"time"
)

func (v *validator) radius() {
	r := v.c.RADIUS
	if r == nil {
		return
	}
	if r.Auth == "" && len(r.AuthServers) == 0 {
		v.errf(p("radius"), "radius: auth (host:port) is required")
	} else if r.Auth != "" {
		if _, _, err := net.SplitHostPort(r.Auth); err != nil {
			v.errf(p("radius", "auth"), "radius.auth %q: want host:port", r.Auth)
		}
	}
	if r.Acct != "" {
		if _, _, err := net.SplitHostPort(r.Acct); err != nil {
			v.errf(p("radius", "acct"), "radius.acct %q: want host:port", r.Acct)
		}
	}
	if r.SecretFile != "" {
		r.Secret = v.secretFile(r.SecretFile, "radius", "secret_file")
	}
	switch r.Phase1IDAttribute {
	case "", "Filter-Id":
	default:
		v.errf(p("radius", "phase1_id_attribute"), "radius.phase1_id_attribute %q: want Filter-Id (or leave it out)", r.Phase1IDAttribute)
	}
	if r.Secret == "" {
		v.errf(p("radius"), "radius: secret or secret_file is required")
	}
	if r.NASIdentifier == "" {
		r.NASIdentifier = "fleetgate"
	}
	r.TimeoutD = v.duration(r.Timeout, 3*time.Second, "radius", "timeout")
	r.InterimD = v.duration(r.InterimInterval, 5*time.Minute, "radius", "interim_interval")
	v.radiusFleet(r)
}

// secretFile reads a secret from a file named in the configuration; with
// permission checks on (Load), a file that group or others may read is
// refused, as ssh refuses such a key.
func (v *validator) secretFile(name string, path ...any) string {
	f := v.rel(name)
	if v.perms {
		if err := CheckSecretFile(f); err != nil {
			v.errf(path, "%s: %v", strings.Join(strPath(path), "."), err)
			return ""
		}
	}
	b, err := os.ReadFile(f)
	if err != nil {
		v.errf(path, "cannot read %s: %v", strings.Join(strPath(path), "."), err)
		return ""
	}
	return strings.TrimSpace(string(b))
}

// CheckSecretFile refuses a file holding secrets that group or others
// may read or write, with the command that fixes it.
func CheckSecretFile(path string) error {
	st, err := os.Stat(path)
	if err != nil {
		return fmt.Errorf("cannot read %s: %v", path, err)
	}
	if m := st.Mode().Perm(); m&0o077 != 0 {
		return fmt.Errorf("%s holds secrets but is accessible by group or others (mode %04o): run chmod 600 %s (and chown it to the gateway's user)", path, m, path)
	}
	return nil
}

// hasInlineSecrets reports whether the configuration text itself holds a
// secret (shared PSK, an identity's psk or PPP password, the RADIUS
// secret, a BGP neighbour's MD5 password), so the file must be
// owner-only too.
func (c *Config) hasInlineSecrets() bool {
	if c.PSK.SharedFile == "" && c.PSK.Shared != "" || len(c.PSK.ByID) > 0 {
		return true
	}
	if r := c.RADIUS; r != nil && ((r.SecretFile == "" && r.Secret != "") || (r.DAESecretFile == "" && r.DAESecret != "")) {
		return true
	}
	if b := c.BGP; b != nil {
		for _, n := range b.Neighbors {
			if n.PasswordFile == "" && n.Password != "" {
				return true
			}
		}
	}
	for _, id := range c.Identities {
		if id.Source != c.File {
			continue // imported: the secrets file is checked itself
		}
		if (id.PSKFile == "" && id.PSK != "") || (id.PPP.PasswordFile == "" && id.PPP.Password != "") {
			return true
		}
	}
	return false
}
