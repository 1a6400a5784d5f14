package proxy

import (
	"fmt"
	"net/netip"
	"strconv"
	"strings"
)

// coapPort is CoAP's default UDP port (RFC 7252 section 12.6).
const coapPort = 5683

// Target is a parsed Proxy-Uri (RFC 7252 section 5.10.2, 6.4).
type Target struct {
	// Host as written in the URI (lower-cased); Addr its resolved address.
	Host string
	Addr netip.AddrPort
	// Path is the absolute path ("/a/b"); Query the raw query without '?'.
	Path, Query string
}

// ParseProxyURI parses a coap:// Proxy-Uri. Hosts that are not IPv4
// literals are looked up in hosts. It never panics; other schemes, IPv6,
// user info, fragments and bad ports are ErrBadProxyURI.
func ParseProxyURI(uri string, hosts map[string]netip.Addr) (Target, error) {
	var t Target
	rest, ok := strings.CutPrefix(uri, "coap://")
	if !ok {
		if len(uri) > 7 && strings.EqualFold(uri[:7], "coap://") {
			rest = uri[7:]
		} else {
			return t, fmt.Errorf("%w: scheme must be coap", ErrBadProxyURI)
		}
	}
	if len(uri) > 1034 { // RFC 7252 section 5.10: Proxy-Uri is 1..1034 bytes
		return t, fmt.Errorf("%w: too long", ErrBadProxyURI)
	}
	if strings.ContainsAny(rest, "#@[ ") {
		return t, fmt.Errorf("%w: fragment, user info, IPv6 or space", ErrBadProxyURI)
	}
	hostport, pathq, _ := strings.Cut(rest, "/")
	host, portStr, hasPort := strings.Cut(hostport, ":")
	if host == "" {
		return t, fmt.Errorf("%w: empty host", ErrBadProxyURI)
	}
	port := coapPort
	if hasPort {
		p, err := strconv.Atoi(portStr)
		if err != nil || p <= 0 || p > 65535 {
			return t, fmt.Errorf("%w: bad port", ErrBadProxyURI)
		}
		port = p
	}
	t.Host = strings.ToLower(host)
	a, err := netip.ParseAddr(t.Host)
	if err != nil {
		var ok bool
		if a, ok = hosts[t.Host]; !ok {
			return t, fmt.Errorf("%w: %q", ErrUnknownHost, t.Host)
		}
	}
	if !a.Is4() {
		return t, fmt.Errorf("%w: not IPv4", ErrBadProxyURI)
	}
	t.Addr = netip.AddrPortFrom(a, uint16(port))
	path, q, _ := strings.Cut(pathq, "?")
	t.Path, t.Query = "/"+path, q
	return t, nil
}
