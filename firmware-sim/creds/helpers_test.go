package creds

import (
	"crypto/x509"
)

func x509VerifyOpts(ca *CA) x509.VerifyOptions {
	return x509.VerifyOptions{Roots: ca.Pool, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}}
}
