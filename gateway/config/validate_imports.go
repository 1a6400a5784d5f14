// Imports of ipsec.secrets and chap-secrets into the identities, and date parsing.

package config

import (
	"fmt"
	"os"
	"strings"
	"time"

	"github.com/fleetgate/fleetgate/gateway/secrets"
)

// imports merges ipsec.secrets and chap-secrets into the identities, before
// identities are validated. Entries in the YAML win over imported ones.
func (v *validator) imports() {
	c := v.c
	if f := c.Import.IPsecSecrets; f != "" {
		b, err := os.ReadFile(v.rel(f))
		if err == nil && v.perms {
			err = CheckSecretFile(v.rel(f))
		}
		if err != nil {
			v.errf(p("import", "ipsec_secrets"), "cannot read ipsec_secrets: %v", err)
		} else if entries, _, err := secrets.ParseIPsecSecrets(b); err != nil {
			v.errf(p("import", "ipsec_secrets"), "%s: %v", f, err)
		} else {
			for _, e := range entries {
				if e.Type != secrets.TypePSK {
					continue
				}
				if len(e.IDs) == 0 || (len(e.IDs) == 1 && (e.IDs[0] == "%any" || e.IDs[0] == "0.0.0.0")) {
					if c.PSK.Shared == "" {
						c.PSK.Shared = e.Secret
					}
					continue
				}
				for _, idName := range e.IDs {
					if idName == "%any" {
						continue
					}
					if id := c.IdentityByIKEID(idName); id != nil {
						if id.PSK == "" {
							id.PSK = e.Secret
						}
						continue
					}
					if c.PSK.ByID == nil {
						c.PSK.ByID = map[string]string{}
					}
					if _, ok := c.PSK.ByID[idName]; !ok {
						c.PSK.ByID[idName] = e.Secret
					}
				}
			}
		}
	}
	if f := c.Import.CHAPSecrets; f != "" {
		b, err := os.ReadFile(v.rel(f))
		if err == nil && v.perms {
			err = CheckSecretFile(v.rel(f))
		}
		if err != nil {
			v.errf(p("import", "chap_secrets"), "cannot read chap_secrets: %v", err)
			return
		}
		entries, err := secrets.ParseCHAPSecrets(b)
		if err != nil {
			v.errf(p("import", "chap_secrets"), "%s: %v", f, err)
			return
		}
		for _, e := range entries {
			if e.Client == "*" || e.Client == "" {
				continue
			}
			if id := c.IdentityByPPPUser(e.Client); id != nil {
				if id.PPP.Password == "" {
					id.PPP.Password = e.Secret
				}
				continue
			}
			if id := c.Identity(e.Client); id != nil {
				if id.PPP.Password == "" {
					id.PPP.Password = e.Secret
				}
				continue
			}
			nid := Identity{Name: e.Client, Auth: AuthPSK, PPP: PPPAuth{User: e.Client, Password: e.Secret},
				Source: fmt.Sprintf("%s:%d", f, e.Line)}
			if len(e.Addrs) == 1 {
				nid.Address = e.Addrs[0].String()
			}
			c.Identities = append(c.Identities, nid)
		}
	}
}

func (v *validator) date(s string, path ...any) time.Time {
	if s == "" {
		return time.Time{}
	}
	for _, layout := range []string{"2006-01-02", time.RFC3339} {
		if t, err := time.Parse(layout, s); err == nil {
			return t
		}
	}
	v.errf(path, "%s %q: want a date like 2027-03-31", strings.Join(strPath(path), "."), s)
	return time.Time{}
}
