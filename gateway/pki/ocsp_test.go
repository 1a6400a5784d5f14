package pki

import (
	"context"
	"crypto/x509"
	"encoding/base64"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"golang.org/x/crypto/ocsp"

	"github.com/fleetgate/fleetgate/internal/pemfile"
	"github.com/fleetgate/fleetgate/internal/testenv"
)

// TestOCSPResponder: the CA's responder answers good for an issued
// certificate, revoked (with the time) once `revoke` ran, unauthorized for
// another CA's certificate, malformedRequest for garbage (counted), over
// POST and GET; openssl ocsp (a stock client) accepts its signed answers.
// QueryOCSP refuses an answer signed by a site certificate of the same CA.
func TestOCSPResponder(t *testing.T) {
	s := newStore(t, KeyECDSA)
	ca, caKey, err := s.CA()
	if err != nil {
		t.Fatal(err)
	}
	good, err := s.Issue(IssueOptions{Name: "hall7"})
	if err != nil {
		t.Fatal(err)
	}
	bad, err := s.Issue(IssueOptions{Name: "hall8"})
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Revoke("hall8"); err != nil {
		t.Fatal(err)
	}
	other := newStore(t, KeyECDSA)
	stranger, err := other.Issue(IssueOptions{Name: "hall9"})
	if err != nil {
		t.Fatal(err)
	}
	r := &OCSPResponder{Store: s, Validity: 10 * time.Minute}
	mux := http.NewServeMux()
	mux.Handle("POST /ocsp", r)
	mux.Handle("GET /ocsp/", r)
	ts := httptest.NewServer(mux)
	t.Cleanup(ts.Close)
	ctx := context.Background()
	now := time.Now()

	resp, err := QueryOCSP(ctx, ts.Client(), ts.URL+"/ocsp", good, ca, now)
	if err != nil || resp.Status != ocsp.Good {
		t.Fatalf("hall7: %v %+v", err, resp)
	}
	if d := resp.NextUpdate.Sub(resp.ThisUpdate); d != 10*time.Minute {
		t.Errorf("validity %s, want 10m", d)
	}
	resp, err = QueryOCSP(ctx, ts.Client(), ts.URL+"/ocsp", bad, ca, now)
	if err != nil || resp.Status != ocsp.Revoked || resp.RevokedAt.IsZero() {
		t.Fatalf("hall8 (revoked): %v %+v", err, resp)
	}
	// Another CA's certificate: unauthorized (QueryOCSP asks with the
	// stranger's CA as issuer, which this responder does not serve).
	otherCA, _, _ := other.CA()
	if _, err := QueryOCSP(ctx, ts.Client(), ts.URL+"/ocsp", stranger, otherCA, now); !errors.Is(err, ErrOCSPInvalid) || !strings.Contains(err.Error(), "unauthorized") {
		t.Errorf("stranger: %v, want unauthorized", err)
	}
	// GET with the base64 request in the path.
	der, _ := ocsp.CreateRequest(good, ca, nil)
	hr, err := http.Get(ts.URL + "/ocsp/" + url.PathEscape(base64.StdEncoding.EncodeToString(der)))
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(hr.Body)
	hr.Body.Close()
	if resp, err := CheckOCSP(b, good, ca, now); err != nil || resp.Status != ocsp.Good {
		t.Errorf("GET: %v", err)
	}
	// Garbage: malformedRequest, counted.
	hr, err = http.Post(ts.URL+"/ocsp", "application/ocsp-request", strings.NewReader("\x30\x03garbage"))
	if err != nil {
		t.Fatal(err)
	}
	b, _ = io.ReadAll(hr.Body)
	hr.Body.Close()
	if string(b) != string(ocsp.MalformedRequestErrorResponse) || r.Stats.Malformed.Load() != 1 {
		t.Errorf("garbage: answer %x, malformed counted %d", b, r.Stats.Malformed.Load())
	}
	if g, rv, u := r.Stats.Good.Load(), r.Stats.Revoked.Load(), r.Stats.Unauthorized.Load(); g != 2 || rv != 1 || u != 1 {
		t.Errorf("stats good %d revoked %d unauthorized %d, want 2 1 1", g, rv, u)
	}

	// A site certificate of the same CA signs a "good" for revoked hall8:
	// x/crypto/ocsp accepts the chain; CheckOCSP must not.
	siteKey, err := pemfile.ReadKey(filepath.Join(s.Dir, "certs", "hall7.key"))
	if err != nil {
		t.Fatal(err)
	}
	forged, err := ocsp.CreateResponse(ca, good, ocsp.Response{Status: ocsp.Good, SerialNumber: bad.SerialNumber, ThisUpdate: now, NextUpdate: now.Add(time.Hour), Certificate: good}, siteKey)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := CheckOCSP(forged, bad, ca, now); !errors.Is(err, ErrOCSPInvalid) {
		t.Errorf("answer signed by a site certificate accepted: %v", err)
	}
	// An expired answer is refused too.
	old, _ := ocsp.CreateResponse(ca, ca, ocsp.Response{Status: ocsp.Good, SerialNumber: good.SerialNumber, ThisUpdate: now.Add(-2 * time.Hour), NextUpdate: now.Add(-time.Hour)}, caKey)
	if _, err := CheckOCSP(old, good, ca, now); !errors.Is(err, ErrOCSPInvalid) {
		t.Errorf("answer past nextUpdate accepted: %v", err)
	}

	// A stock client judges the answers.
	bin := testenv.RequireBinary(t, "openssl")
	for name, want := range map[string]string{"hall7": ": good", "hall8": ": revoked"} {
		out, err := exec.Command(bin, "ocsp", "-issuer", filepath.Join(s.Dir, "ca.crt"), "-CAfile", filepath.Join(s.Dir, "ca.crt"),
			"-cert", filepath.Join(s.Dir, "certs", name+".crt"), "-url", ts.URL+"/ocsp").CombinedOutput()
		if err != nil || !strings.Contains(string(out), want) || !strings.Contains(string(out), "Response verify OK") {
			t.Errorf("openssl ocsp %s: %v\n%s", name, err, out)
		}
	}
}

// FuzzOCSPRespond: any request body gets an answer, never a panic; only a
// well-formed request for this CA gets a signed one.
func FuzzOCSPRespond(f *testing.F) {
	s := &Store{Dir: f.TempDir()}
	if _, err := s.CreateCA(CAOptions{}); err != nil {
		f.Fatal(err)
	}
	c, err := s.Issue(IssueOptions{Name: "hall7"})
	if err != nil {
		f.Fatal(err)
	}
	ca, _, _ := s.CA()
	der, _ := ocsp.CreateRequest(c, ca, nil)
	f.Add(der)
	f.Add([]byte{0x30, 0x00})
	r := &OCSPResponder{Store: s}
	f.Fuzz(func(t *testing.T, b []byte) {
		out := r.Respond(b)
		if len(out) == 0 {
			t.Fatal("empty answer")
		}
		if resp, err := ocsp.ParseResponse(out, ca); err == nil && resp.SerialNumber == nil {
			t.Fatal("signed answer without a serial")
		}
	})
}

// FuzzCheckOCSP: a response from the network never panics the gateway's
// check, and anything it accepts is for the asked serial and signed by the CA.
func FuzzCheckOCSP(f *testing.F) {
	s := &Store{Dir: f.TempDir()}
	if _, err := s.CreateCA(CAOptions{}); err != nil {
		f.Fatal(err)
	}
	c, err := s.Issue(IssueOptions{Name: "hall7"})
	if err != nil {
		f.Fatal(err)
	}
	ca, _, _ := s.CA()
	der, _ := ocsp.CreateRequest(c, ca, nil)
	f.Add((&OCSPResponder{Store: s}).Respond(der))
	f.Add(ocsp.UnauthorizedErrorResponse)
	now := time.Now()
	f.Fuzz(func(t *testing.T, b []byte) {
		resp, err := CheckOCSP(b, c, ca, now)
		if err != nil {
			return
		}
		if resp.SerialNumber.Cmp(c.SerialNumber) != 0 {
			t.Fatal("accepted an answer for another serial")
		}
		if err := resp.CheckSignatureFrom(ca); err != nil && (resp.Certificate == nil || !hasOCSPSigning(resp.Certificate)) {
			t.Fatal("accepted an answer not signed by the CA nor an OCSP signer")
		}
	})
}

func hasOCSPSigning(c *x509.Certificate) bool {
	for _, u := range c.ExtKeyUsage {
		if u == x509.ExtKeyUsageOCSPSigning {
			return true
		}
	}
	return false
}
