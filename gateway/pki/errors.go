package pki

import "errors"

// Sentinel errors.
var (
	ErrNoCA       = errors.New("pki: no CA in this directory (run `gateway pki init`)")
	ErrCAExists   = errors.New("pki: a CA already exists in this directory")
	ErrExists     = errors.New("pki: a certificate with this name exists (revoke it first)")
	ErrNotFound   = errors.New("pki: no such certificate")
	ErrRevoked    = errors.New("pki: certificate is revoked")
	ErrBadName    = errors.New("pki: name must be 1-64 characters of a-z A-Z 0-9 . _ @ -")
	ErrBadKeyType = errors.New("pki: key type must be ecdsa or rsa")
)
