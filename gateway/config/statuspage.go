package config

import "time"

// StatusPage configures the fleet status page served on the metrics
// listener (metrics.listen): / (the page), /api/ (its JSON views). On a
// loopback listener it needs no credential; on any other address the
// bearer token of TokenFile is required and, without one, the page is
// refused (no default credential).
type StatusPage struct {
	// Enabled: default true (the page is read-only and, by default, on
	// 127.0.0.1 only).
	Enabled *bool `yaml:"enabled"`
	// TokenFile holds the bearer token (mode 0600, like every secret
	// file); required for a non-loopback listener and for actions.
	TokenFile string `yaml:"token_file"`
	// Actions enables "terminate session" on the page (token required,
	// every action logged). Default false: read-only.
	Actions bool `yaml:"actions"`
	// CredentialWarn: a certificate or PSK that ends within it is listed
	// as expiring soon (default 720h = 30 days).
	CredentialWarn string `yaml:"credential_warn"`
	// SampleInterval is the charts' sampling interval (default 5s; 360
	// points are kept per series).
	SampleInterval string `yaml:"sample_interval"`
	// TLSCert and TLSKey make the metrics listener HTTPS (/metrics and
	// /status too); ClientCA (needs them) asks clients for a certificate
	// of that CA, and a verified one is a credential for the page like
	// the token.
	TLSCert  string `yaml:"tls_cert"`
	TLSKey   string `yaml:"tls_key"`
	ClientCA string `yaml:"client_ca"`

	// Token is the content of TokenFile.
	Token string `yaml:"-"`
	// CredentialWarnD and SampleIntervalD are the parsed durations.
	CredentialWarnD time.Duration `yaml:"-"`
	SampleIntervalD time.Duration `yaml:"-"`
}

// On reports whether the page is served.
func (s StatusPage) On() bool { return s.Enabled == nil || *s.Enabled }

func (v *validator) statusPage() {
	sp := &v.c.StatusPage
	sp.CredentialWarnD = v.duration(sp.CredentialWarn, 30*24*time.Hour, "status_page", "credential_warn")
	sp.SampleIntervalD = v.duration(sp.SampleInterval, 5*time.Second, "status_page", "sample_interval")
	if sp.SampleIntervalD < 100*time.Millisecond {
		v.errf(p("status_page", "sample_interval"), "status_page.sample_interval %q: want at least 100ms (e.g. 5s)", sp.SampleInterval)
	}
	if sp.TokenFile != "" {
		n := len(v.errs)
		sp.Token = v.secretFile(sp.TokenFile, "status_page", "token_file")
		if sp.Token == "" && len(v.errs) == n {
			v.errf(p("status_page", "token_file"), "status_page.token_file %s is empty: put a long random token in it (e.g. openssl rand -hex 32 > %s; chmod 600 %s)", sp.TokenFile, sp.TokenFile, sp.TokenFile)
		}
	} else if sp.Actions && sp.ClientCA == "" {
		v.errf(p("status_page", "actions"), "status_page.actions needs status_page.token_file or client_ca (actions always require a credential)")
	}
	for _, f := range []*string{&sp.TLSCert, &sp.TLSKey, &sp.ClientCA} {
		if *f != "" {
			*f = v.rel(*f)
		}
	}
	switch {
	case (sp.TLSCert == "") != (sp.TLSKey == ""):
		v.errf(p("status_page", "tls_cert"), "status_page.tls_cert and tls_key go together (the metrics listener's HTTPS certificate and key)")
	case sp.ClientCA != "" && sp.TLSCert == "":
		v.errf(p("status_page", "client_ca"), "status_page.client_ca needs tls_cert and tls_key (client certificates need HTTPS)")
	}
}
