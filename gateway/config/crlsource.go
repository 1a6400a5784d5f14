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

// ocspSource validates pki.ocsp_url, ocsp_refresh, ocsp_fail and
// ocsp_cache_max.
func (v *validator) ocspSource() {
	k := &v.c.PKI
	if k.OCSPURL == "" {
		if k.OCSPRefresh != "" || k.OCSPFail != "" || k.OCSPCacheMax != 0 {
			v.errf(p("pki", "ocsp_url"), "pki.ocsp_refresh, ocsp_fail and ocsp_cache_max need pki.ocsp_url (the OCSP responder)")
		}
		return
	}
	u, err := url.Parse(k.OCSPURL)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		v.errf(p("pki", "ocsp_url"), "pki.ocsp_url %q: want an http:// or https:// URL (e.g. http://ca.example:8089/ocsp)", k.OCSPURL)
	}
	if k.CA == "" {
		v.errf(p("pki", "ocsp_url"), "pki.ocsp_url needs pki.ca (the responses must be signed by the CA)")
	}
	k.OCSPRefreshD = 5 * time.Minute
	if k.OCSPRefresh != "" {
		d, err := time.ParseDuration(k.OCSPRefresh)
		if err != nil || d < time.Second || d > 24*time.Hour {
			v.errf(p("pki", "ocsp_refresh"), "pki.ocsp_refresh %q: want a duration 1s..24h (e.g. 5m)", k.OCSPRefresh)
		} else {
			k.OCSPRefreshD = d
		}
	}
	switch k.OCSPFail {
	case "":
		k.OCSPFail = "closed"
	case "closed", "open":
	default:
		v.errf(p("pki", "ocsp_fail"), "pki.ocsp_fail %q: want closed or open", k.OCSPFail)
	}
	switch {
	case k.OCSPCacheMax == 0:
		k.OCSPCacheMax = 10000
	case k.OCSPCacheMax < 0 || k.OCSPCacheMax > 1000000:
		v.errf(p("pki", "ocsp_cache_max"), "pki.ocsp_cache_max %d: want 1..1000000 (default 10000)", k.OCSPCacheMax)
	}
}
