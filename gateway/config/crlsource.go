package config

import (
	"net/url"
	"time"
)

// crlSource validates pki.crl_url, crl_refresh and crl_fail.
func (v *validator) crlSource() {
	k := &v.c.PKI
	if k.CRLURL == "" {
		if k.CRLRefresh != "" || k.CRLFail != "" {
			v.errf(p("pki", "crl_url"), "pki.crl_refresh and pki.crl_fail need pki.crl_url (the CRL distribution point)")
		}
		return
	}
	u, err := url.Parse(k.CRLURL)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		v.errf(p("pki", "crl_url"), "pki.crl_url %q: want an http:// or https:// URL", k.CRLURL)
	}
	if k.CA == "" {
		v.errf(p("pki", "crl_url"), "pki.crl_url needs pki.ca (the CRL must be signed by the CA)")
	}
	k.CRLRefreshD = 5 * time.Minute
	if k.CRLRefresh != "" {
		d, err := time.ParseDuration(k.CRLRefresh)
		if err != nil || d < time.Second || d > 24*time.Hour {
			v.errf(p("pki", "crl_refresh"), "pki.crl_refresh %q: want a duration 1s..24h (e.g. 5m)", k.CRLRefresh)
		} else {
			k.CRLRefreshD = d
		}
	}
	switch k.CRLFail {
	case "":
		k.CRLFail = "closed"
	case "closed", "open":
	default:
		v.errf(p("pki", "crl_fail"), "pki.crl_fail %q: want closed or open", k.CRLFail)
	}
}
