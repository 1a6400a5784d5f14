package statuspage

import (
	"crypto/sha256"
	"crypto/subtle"
	"net"
	"net/http"
	"net/netip"
	"strings"
	"time"
)

// tokenCookie carries the bearer token for a browser that logged in with
// the form (a page navigation cannot send an Authorization header).
const tokenCookie = "fleetgate_token"

// IsLoopback reports whether a listen address (host:port) binds only
// loopback: 127.0.0.0/8, ::1 or "localhost". An empty host, 0.0.0.0 or
// :: bind every address and are not loopback.
func IsLoopback(listen string) bool {
	host, _, err := net.SplitHostPort(listen)
	if err != nil {
		host = listen
	}
	if host == "localhost" {
		return true
	}
	a, err := netip.ParseAddr(host)
	return err == nil && a.Unmap().IsLoopback()
}

// access decides who may read the page and who may act.
type access struct {
	// open: the listener binds loopback only, so reading needs no token.
	open bool
	// token is the bearer token ("" when none is configured); sum its
	// hash, compared in constant time.
	token string
	sum   [32]byte
}

func newAccess(listen, token string) access {
	a := access{open: IsLoopback(listen), token: token}
	if token != "" {
		a.sum = sha256.Sum256([]byte(token))
	}
	return a
}

// hasToken reports whether r carries the configured token, in an
// Authorization: Bearer header or the login cookie.
func (a access) hasToken(r *http.Request) bool {
	if a.token == "" {
		return false
	}
	got := ""
	if h := r.Header.Get("Authorization"); strings.HasPrefix(h, "Bearer ") {
		got = strings.TrimSpace(strings.TrimPrefix(h, "Bearer "))
	} else if c, err := r.Cookie(tokenCookie); err == nil {
		got = c.Value
	}
	if got == "" {
		return false
	}
	sum := sha256.Sum256([]byte(got))
	return subtle.ConstantTimeCompare(sum[:], a.sum[:]) == 1
}

// hasCert reports whether r came over TLS with a client certificate that
// verified against the listener's client CA (status_page.client_ca);
// VerifiedChains is empty unless the TLS layer verified one.
func hasCert(r *http.Request) bool { return r.TLS != nil && len(r.TLS.VerifiedChains) > 0 }

// authed: the token, or a verified client certificate.
func (a access) authed(r *http.Request) bool { return a.hasToken(r) || hasCert(r) }

// canRead: loopback listener, or a credential.
func (a access) canRead(r *http.Request) bool { return a.open || a.authed(r) }

// setCookie stores the token for the browser (HttpOnly, SameSite=Strict:
// other sites' pages cannot send it along).
func setCookie(w http.ResponseWriter, r *http.Request, token string) {
	http.SetCookie(w, &http.Cookie{Name: tokenCookie, Value: token, Path: "/", HttpOnly: true,
		SameSite: http.SameSiteStrictMode, Secure: r.TLS != nil, MaxAge: int((12 * time.Hour).Seconds())})
}
