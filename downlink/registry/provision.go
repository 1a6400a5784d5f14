package registry

import (
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"strings"

	"github.com/fleetgate/fleetgate/internal/pemfile"
)

// pskBytes is the entropy of a generated PSK (128 bits). The key is the
// 32-character lowercase hex text of those bytes, so it can be typed into
// tools that take the key as text (libcoap's -k) and pasted into firmware
// as a string literal.
const pskBytes = 16

// Request asks Provision for one endpoint.
type Request struct {
	// Name of the endpoint, e.g. "sensor-17".
	Name string
	// Protocol is coap (default) or mqtt.
	Protocol Protocol
	// Cert issues an ECDSA P-256 certificate instead of a PSK.
	Cert bool
	// Allow is copied to Endpoint.Allow.
	Allow []string
}

// Provisioned is what Provision created: the registered endpoint and, for
// certificate endpoints, the PEMs to install on the device.
type Provisioned struct {
	// Endpoint as registered (with its address).
	Endpoint Endpoint
	// CertPEM, KeyPEM and CACertPEM are set for certificate endpoints.
	CertPEM, KeyPEM, CACertPEM []byte
}

// Provision creates credentials for a new endpoint (a random PSK with the
// name as identity, or a certificate with the name as CN issued by ca) and
// registers it in r. ca may be nil for PSK endpoints.
func Provision(r *Registry, ca *CA, req Request) (*Provisioned, error) {
	if req.Protocol == "" {
		req.Protocol = CoAP
	}
	e := Endpoint{Name: req.Name, Protocol: req.Protocol, Allow: req.Allow}
	p := &Provisioned{}
	if req.Cert {
		if ca == nil {
			return nil, fmt.Errorf("device: provision %q: no site CA", req.Name)
		}
		if !validName(req.Name) {
			return nil, fmt.Errorf("%w: %q", ErrBadName, req.Name)
		}
		e.CertCN = req.Name
		c, k, err := ca.Issue(req.Name, 5)
		if err != nil {
			return nil, err
		}
		cert, err := pemfile.ParseCert(c)
		if err != nil {
			return nil, err
		}
		e.CertSerial = SerialHex(cert)
		p.CertPEM, p.KeyPEM, p.CACertPEM = c, k, ca.CertPEM
	} else {
		raw := make([]byte, pskBytes)
		if _, err := rand.Read(raw); err != nil {
			return nil, fmt.Errorf("device: psk: %w", err)
		}
		e.PSKIdentity = req.Name
		e.PSK = []byte(hex.EncodeToString(raw))
	}
	stored, err := r.Add(e)
	if err != nil {
		return nil, err
	}
	p.Endpoint = stored
	return p, nil
}

// SnippetParams says where devices find the bridge.
type SnippetParams struct {
	// BridgeHost is the bridge's address on the site LAN.
	BridgeHost string
	// CoAPPort is the DTLS/CoAP port (5684); MQTTPort the MQTT/TLS port (8883).
	CoAPPort, MQTTPort int
}

// Snippet renders the text a firmware developer pastes into a Zephyr,
// ESP-IDF or RIOT project: C defines with the credentials, the bridge's
// address and port, and the endpoint's VPN address. It contains the PSK or
// private key: print it once, do not log it.
func Snippet(p *Provisioned, sp SnippetParams) string {
	e := &p.Endpoint
	port := sp.CoAPPort
	scheme := "coaps"
	if e.Protocol == MQTT {
		port, scheme = sp.MQTTPort, "mqtts"
	}
	var b strings.Builder
	fmt.Fprintf(&b, "/* fleetgate endpoint %q: %s to %s://%s:%d, VPN address %s */\n", e.Name, e.Protocol, scheme, sp.BridgeHost, port, e.Addr)
	fmt.Fprintf(&b, "#define FLEETGATE_BRIDGE_HOST \"%s\"\n#define FLEETGATE_BRIDGE_PORT %d\n#define FLEETGATE_VPN_ADDR \"%s\"\n", sp.BridgeHost, port, e.Addr)
	if e.PSKIdentity != "" {
		fmt.Fprintf(&b, "#define FLEETGATE_PSK_IDENTITY \"%s\"\n#define FLEETGATE_PSK \"%s\" /* %d bytes, used as text */\n", e.PSKIdentity, e.PSK, len(e.PSK))
		b.WriteString("\n/* Zephyr (prj.conf): CONFIG_MBEDTLS_KEY_EXCHANGE_PSK_ENABLED=y, CONFIG_MBEDTLS_CIPHER_CCM_ENABLED=y\n")
		b.WriteString(" *   tls_credential_add(TAG, TLS_CREDENTIAL_PSK, FLEETGATE_PSK, strlen(FLEETGATE_PSK));\n")
		b.WriteString(" *   tls_credential_add(TAG, TLS_CREDENTIAL_PSK_ID, FLEETGATE_PSK_IDENTITY, strlen(FLEETGATE_PSK_IDENTITY));\n")
		b.WriteString(" * ESP-IDF (esp-tls / coap): esp_tls_cfg_t.psk_hint_key = &(psk_key_hint){ .key = (const uint8_t *)FLEETGATE_PSK,\n")
		b.WriteString(" *   .key_size = sizeof(FLEETGATE_PSK) - 1, .hint = FLEETGATE_PSK_IDENTITY };\n")
		b.WriteString(" * RIOT (tinydtls, gcoap): credman_credential_t c = { .type = CREDMAN_TYPE_PSK, .params.psk = {\n")
		b.WriteString(" *   .key = { .s = FLEETGATE_PSK, .len = sizeof(FLEETGATE_PSK) - 1 },\n")
		b.WriteString(" *   .id = { .s = FLEETGATE_PSK_IDENTITY, .len = sizeof(FLEETGATE_PSK_IDENTITY) - 1 } } };\n")
		fmt.Fprintf(&b, " * libcoap test: coap-client-openssl -u %s -k %s coaps://%s:%d/...\n */\n", e.PSKIdentity, e.PSK, sp.BridgeHost, port)
		return b.String()
	}
	fmt.Fprintf(&b, "/* certificate CN %q, ECDSA P-256; suites TLS_ECDHE_ECDSA_WITH_AES_128_CCM_8 or _GCM_SHA256 */\n", e.CertCN)
	b.WriteString(cString("FLEETGATE_CA_CERT", p.CACertPEM))
	b.WriteString(cString("FLEETGATE_DEVICE_CERT", p.CertPEM))
	b.WriteString(cString("FLEETGATE_DEVICE_KEY", p.KeyPEM))
	b.WriteString("\n/* Zephyr: tls_credential_add(TAG, TLS_CREDENTIAL_CA_CERTIFICATE / _SERVER_CERTIFICATE / _PRIVATE_KEY, ...,\n")
	b.WriteString(" *   sizeof(...)) (PEM needs the trailing NUL, hence sizeof).\n")
	b.WriteString(" * ESP-IDF: esp_tls_cfg_t{ .cacert_buf, .clientcert_buf, .clientkey_buf } with sizeof() lengths.\n")
	b.WriteString(" * RIOT: credman_credential_t of type CREDMAN_TYPE_ECDSA (convert the key to raw private/public parts).\n */\n")
	return b.String()
}

// cString renders a PEM as a C string literal define.
func cString(name string, pem []byte) string {
	var b strings.Builder
	fmt.Fprintf(&b, "#define %s \\\n", name)
	lines := strings.Split(strings.TrimRight(string(pem), "\n"), "\n")
	for i, l := range lines {
		end := " \\\n"
		if i == len(lines)-1 {
			end = "\n"
		}
		fmt.Fprintf(&b, "\t\"%s\\n\"%s", l, end)
	}
	return b.String()
}
