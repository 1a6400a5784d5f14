package pki

import (
	"sort"
	"time"
)

// Expiry is one credential with an end date: a certificate from the index
// or a PSK with an expiry set in the configuration.
type Expiry struct {
	Name     string
	Type     string // "cert" or "psk"
	Kind     string // certificate kind, or "shared"/"identity" for PSKs
	NotAfter time.Time
	Revoked  bool
}

// Left is the time left at now (negative once expired).
func (e Expiry) Left(now time.Time) time.Duration { return e.NotAfter.Sub(now) }

// Expiring merges certificates and PSKs and returns those ending within
// `within` of now (all when within is 0), soonest first. Revoked
// certificates are left out.
func Expiring(certs []Entry, psks []Expiry, now time.Time, within time.Duration) []Expiry {
	var out []Expiry
	for _, e := range certs {
		if e.Revoked() {
			continue
		}
		out = append(out, Expiry{Name: e.Name, Type: "cert", Kind: e.Kind, NotAfter: e.NotAfter})
	}
	out = append(out, psks...)
	if within > 0 {
		kept := out[:0]
		for _, e := range out {
			if e.NotAfter.Sub(now) <= within {
				kept = append(kept, e)
			}
		}
		out = kept
	}
	sort.SliceStable(out, func(i, j int) bool { return out[i].NotAfter.Before(out[j].NotAfter) })
	return out
}

// ParseWithin parses "30d", "12h" or any time.ParseDuration string.
func ParseWithin(s string) (time.Duration, error) {
	if n := len(s); n > 1 && s[n-1] == 'd' {
		d, err := time.ParseDuration(s[:n-1] + "h")
		return d * 24, err
	}
	return time.ParseDuration(s)
}
