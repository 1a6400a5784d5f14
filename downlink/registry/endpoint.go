// Package device is the edge bridge's endpoint registry: every
// microcontroller endpoint has a name, credentials (a DTLS/TLS PSK identity
// and key, or a certificate common name issued by the site CA), a protocol
// (coap or mqtt), the upstream destinations it may reach, and a stable
// address in the site's routed prefix (sensor-17 → 10.10.8.17 when free).
// The registry is persisted atomically to a JSON state file so addresses
// survive restarts.
package registry

import (
	"net/netip"
	"strings"
)

// Protocol is the downlink protocol an endpoint speaks.
type Protocol string

const (
	// CoAP is CoAP over DTLS 1.2 (RFC 7252 section 9).
	CoAP Protocol = "coap"
	// MQTT is MQTT over TLS.
	MQTT Protocol = "mqtt"
)

// Endpoint is one registered device. Values returned by the Registry are
// copies; modifying them does not change the registry.
type Endpoint struct {
	// Name is unique, e.g. "sensor-17": letters, digits, '-', '_', '.'.
	Name string `json:"name"`
	// Protocol is coap or mqtt.
	Protocol Protocol `json:"protocol"`
	// PSKIdentity and PSK are the pre-shared key credentials (both set or
	// both empty). PSK is secret: never log it.
	PSKIdentity string `json:"psk_identity,omitempty"`
	PSK         []byte `json:"psk,omitempty"`
	// CertCN is the common name of the endpoint's certificate issued by
	// the site CA (empty for PSK-only endpoints). CertSerial is that
	// certificate's serial number (lowercase hex): only the certificate
	// issued to the endpoint authenticates it, not any other the site CA
	// issued with the same CN (a replaced one). Empty only in state files
	// written before serials were recorded (then the CN alone matches).
	CertCN     string `json:"cert_cn,omitempty"`
	CertSerial string `json:"cert_serial,omitempty"`
	// Allow lists the upstream destinations besides the configured central
	// service the endpoint may reach through Proxy-Uri: "host:port",
	// "ip:port", a CIDR prefix ("10.20.0.0/16", any port) or "*".
	Allow []string `json:"allow,omitempty"`
	// Addr is the endpoint's stable address in the site prefix.
	Addr netip.Addr `json:"addr"`
	// Addr6 is the endpoint's IPv6 address, derived from Addr and the
	// site's IPv6 prefix (addr6.go; zero without one). It is not stored:
	// the registry sets it.
	Addr6 netip.Addr `json:"addr6,omitzero"`
}

// Allows reports whether the endpoint may send to dst. host is the
// destination as named in the request (may be empty); dst its resolved
// address and port.
func (e *Endpoint) Allows(host string, dst netip.AddrPort) bool {
	for _, a := range e.Allow {
		switch {
		case a == "*":
			return true
		case strings.Contains(a, "/"):
			if p, err := netip.ParsePrefix(a); err == nil && p.Contains(dst.Addr()) {
				return true
			}
		default:
			if ap, err := netip.ParseAddrPort(a); err == nil {
				if ap == dst {
					return true
				}
				continue
			}
			h, port, ok := strings.Cut(a, ":")
			if ok && host != "" && strings.EqualFold(h, host) && port == itoa(dst.Port()) {
				return true
			}
		}
	}
	return false
}

func itoa(p uint16) string {
	var b [5]byte
	i := len(b)
	for {
		i--
		b[i] = byte('0' + p%10)
		p /= 10
		if p == 0 {
			return string(b[i:])
		}
	}
}

// validName reports whether n is a usable endpoint name (it becomes a PSK
// identity, a certificate CN and a file name).
func validName(n string) bool {
	if n == "" || len(n) > 64 {
		return false
	}
	for _, c := range n {
		switch {
		case c >= 'a' && c <= 'z', c >= 'A' && c <= 'Z', c >= '0' && c <= '9', c == '-', c == '_', c == '.':
		default:
			return false
		}
	}
	return n[0] != '.'
}

// nameNumber returns the trailing decimal number of a name ("sensor-17" →
// 17), or -1.
func nameNumber(n string) int {
	i := len(n)
	for i > 0 && n[i-1] >= '0' && n[i-1] <= '9' {
		i--
	}
	if i == len(n) || len(n)-i > 9 {
		return -1
	}
	v := 0
	for _, c := range n[i:] {
		v = v*10 + int(c-'0')
	}
	return v
}
