package pki

import (
	"bytes"
	"context"
	"crypto"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/asn1"
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	"math/big"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"sync/atomic"
	"time"

	"golang.org/x/crypto/ocsp"
)

// OCSP responder for a small fleet (RFC 6960, HTTP transport of its
// Appendix A): the CA key signs every response itself (no delegated
// responder certificate), the status comes from index.json read at each
// request, so `gateway pki revoke` takes effect at the next query. The
// parsing and signing are x/crypto/ocsp's.

// maxOCSPRequest bounds a request body (a one-certificate request is
// about 100 bytes).
const maxOCSPRequest = 4096

// OCSPStats counts what the responder answered.
type OCSPStats struct {
	Good, Revoked, Unknown, Malformed, Unauthorized, Failed atomic.Uint64
}

// OCSPResponder answers OCSP requests for the certificates of a Store.
type OCSPResponder struct {
	Store *Store
	// Validity is how long a response is valid (its nextUpdate);
	// default one hour. Gateways re-query sooner (pki.ocsp_refresh) and
	// fall back to their fail policy once it has passed.
	Validity time.Duration
	Stats    OCSPStats
}

// ServeHTTP implements http.Handler: POST with an
// application/ocsp-request body, or GET with the base64 request as the
// last path element.
func (r *OCSPResponder) ServeHTTP(w http.ResponseWriter, req *http.Request) {
	var der []byte
	switch req.Method {
	case http.MethodPost:
		b, err := io.ReadAll(io.LimitReader(req.Body, maxOCSPRequest+1))
		if err != nil || len(b) > maxOCSPRequest {
			r.Stats.Malformed.Add(1)
			writeOCSP(w, ocsp.MalformedRequestErrorResponse)
			return
		}
		der = b
	case http.MethodGet:
		p := req.URL.EscapedPath() // a '/' of the base64 text is escaped
		p = p[strings.LastIndexByte(p, '/')+1:]
		if s, err := url.PathUnescape(p); err == nil {
			p = s
		}
		b, err := base64.StdEncoding.DecodeString(p)
		if err != nil || len(b) > maxOCSPRequest {
			r.Stats.Malformed.Add(1)
			writeOCSP(w, ocsp.MalformedRequestErrorResponse)
			return
		}
		der = b
	default:
		http.Error(w, "OCSP wants GET or POST", http.StatusMethodNotAllowed)
		return
	}
	writeOCSP(w, r.Respond(der))
}

func writeOCSP(w http.ResponseWriter, b []byte) {
	w.Header().Set("Content-Type", "application/ocsp-response")
	_, _ = w.Write(b)
}

// Respond returns the DER response to a DER request: a signed good,
// revoked or unknown status, or an unsigned malformedRequest /
// unauthorized / internalError response.
func (r *OCSPResponder) Respond(der []byte) []byte {
	req, err := ocsp.ParseRequest(der)
	if err != nil || req.SerialNumber == nil {
		r.Stats.Malformed.Add(1)
		return ocsp.MalformedRequestErrorResponse
	}
	ca, key, err := r.Store.CA()
	if err != nil {
		r.Stats.Failed.Add(1)
		return ocsp.InternalErrorErrorResponse
	}
	if !req.HashAlgorithm.Available() || !issuerMatches(req, ca) {
		r.Stats.Unauthorized.Add(1)
		return ocsp.UnauthorizedErrorResponse // not our CA
	}
	idx, err := r.Store.Index()
	if err != nil {
		r.Stats.Failed.Add(1)
		return ocsp.InternalErrorErrorResponse
	}
	now := r.Store.now().UTC().Truncate(time.Second)
	validity := r.Validity
	if validity <= 0 {
		validity = time.Hour
	}
	tmpl := ocsp.Response{Status: ocsp.Unknown, SerialNumber: req.SerialNumber, ThisUpdate: now, NextUpdate: now.Add(validity), IssuerHash: req.HashAlgorithm}
	for _, e := range idx {
		sn, ok := new(big.Int).SetString(e.Serial, 16)
		if !ok || sn.Cmp(req.SerialNumber) != 0 {
			continue
		}
		if e.Revoked() {
			tmpl.Status, tmpl.RevokedAt, tmpl.RevocationReason = ocsp.Revoked, e.RevokedAt, ocsp.Unspecified
		} else {
			tmpl.Status = ocsp.Good
		}
		break
	}
	out, err := ocsp.CreateResponse(ca, ca, tmpl, key)
	if err != nil {
		r.Stats.Failed.Add(1)
		return ocsp.InternalErrorErrorResponse
	}
	switch tmpl.Status {
	case ocsp.Good:
		r.Stats.Good.Add(1)
	case ocsp.Revoked:
		r.Stats.Revoked.Add(1)
	default:
		r.Stats.Unknown.Add(1)
	}
	return out
}

// issuerMatches checks the request's issuer name and key hashes against
// the CA.
func issuerMatches(req *ocsp.Request, ca *x509.Certificate) bool {
	var spki struct {
		Algorithm pkix.AlgorithmIdentifier
		PublicKey asn1.BitString
	}
	if _, err := asn1.Unmarshal(ca.RawSubjectPublicKeyInfo, &spki); err != nil {
		return false
	}
	h := req.HashAlgorithm.New()
	h.Write(spki.PublicKey.RightAlign())
	if !bytes.Equal(h.Sum(nil), req.IssuerKeyHash) {
		return false
	}
	h.Reset()
	h.Write(ca.RawSubject)
	return bytes.Equal(h.Sum(nil), req.IssuerNameHash)
}

// maxOCSPResponse bounds a fetched response.
const maxOCSPResponse = 64 << 10

// QueryOCSP asks the responder at url for cert's status (POST, RFC 6960
// Appendix A.1) and returns the response once it is checked: signed by
// the CA itself or by a responder certificate the CA issued for OCSP
// signing (x/crypto/ocsp checks the chain, not that key usage: without
// it any site certificate could vouch for itself), for cert's serial,
// thisUpdate not in the future (5 min of skew), nextUpdate not past.
func QueryOCSP(ctx context.Context, client *http.Client, url string, cert, ca *x509.Certificate, now time.Time) (*ocsp.Response, error) {
	der, err := ocsp.CreateRequest(cert, ca, &ocsp.RequestOptions{Hash: crypto.SHA256})
	if err != nil {
		return nil, fmt.Errorf("pki: ocsp request: %w", err)
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, url, bytes.NewReader(der))
	if err != nil {
		return nil, fmt.Errorf("pki: ocsp: %w", err)
	}
	req.Header.Set("Content-Type", "application/ocsp-request")
	resp, err := client.Do(req)
	if err != nil {
		return nil, fmt.Errorf("pki: ocsp: %w", err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("pki: ocsp: %s", resp.Status)
	}
	b, err := io.ReadAll(io.LimitReader(resp.Body, maxOCSPResponse+1))
	if err != nil {
		return nil, fmt.Errorf("pki: ocsp: %w", err)
	}
	if len(b) > maxOCSPResponse {
		return nil, errors.New("pki: ocsp: response larger than 64 KiB")
	}
	return CheckOCSP(b, cert, ca, now)
}

// ErrOCSPInvalid marks a response that fails CheckOCSP.
var ErrOCSPInvalid = errors.New("pki: invalid OCSP response")

// CheckOCSP parses and checks a DER response for cert (see QueryOCSP).
func CheckOCSP(b []byte, cert, ca *x509.Certificate, now time.Time) (*ocsp.Response, error) {
	r, err := ocsp.ParseResponseForCert(b, cert, ca)
	if err != nil {
		return nil, fmt.Errorf("%w: %v", ErrOCSPInvalid, err)
	}
	if r.Certificate != nil && !r.Certificate.Equal(ca) && !slices.Contains(r.Certificate.ExtKeyUsage, x509.ExtKeyUsageOCSPSigning) {
		return nil, fmt.Errorf("%w: signed by %q, neither the CA nor an OCSP signer", ErrOCSPInvalid, r.Certificate.Subject.CommonName)
	}
	if r.SerialNumber == nil || r.SerialNumber.Cmp(cert.SerialNumber) != 0 {
		return nil, fmt.Errorf("%w: serial mismatch", ErrOCSPInvalid)
	}
	if r.ThisUpdate.After(now.Add(5 * time.Minute)) {
		return nil, fmt.Errorf("%w: thisUpdate %s is in the future", ErrOCSPInvalid, r.ThisUpdate)
	}
	if !r.NextUpdate.IsZero() && !now.Before(r.NextUpdate) {
		return nil, fmt.Errorf("%w: nextUpdate %s has passed", ErrOCSPInvalid, r.NextUpdate)
	}
	return r, nil
}
