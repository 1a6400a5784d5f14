package secrets

import (
	"encoding/base64"
	"encoding/hex"
	"strings"
)

// Secret types of ipsec.secrets(5).
const (
	TypePSK   = "PSK"
	TypeXAUTH = "XAUTH"
	TypeEAP   = "EAP"
	TypeRSA   = "RSA"
	TypeECDSA = "ECDSA"
)

// IPsecSecret is one entry of a strongSwan ipsec.secrets file:
// "[selectors] : TYPE secret".
type IPsecSecret struct {
	// IDs are the selectors (IKE identities or addresses); empty means
	// the entry applies to any peer.
	IDs []string
	// Type is PSK, XAUTH, EAP, RSA or ECDSA.
	Type string
	// Secret is the decoded secret, or for RSA/ECDSA the key file name.
	Secret string
	Line   int
}

// ParseIPsecSecrets parses an ipsec.secrets file. Entries may continue on
// lines that begin with whitespace; "include" lines are returned as
// Includes (the caller decides whether to follow them).
func ParseIPsecSecrets(b []byte) (entries []IPsecSecret, includes []string, err error) {
	type logical struct {
		text string
		line int
	}
	var lines []logical
	for i, raw := range strings.Split(string(b), "\n") {
		trimmed := strings.TrimSpace(raw)
		if trimmed == "" || strings.HasPrefix(trimmed, "#") {
			continue
		}
		if (raw[0] == ' ' || raw[0] == '\t') && len(lines) > 0 && !strings.HasPrefix(trimmed, "include ") {
			lines[len(lines)-1].text += " " + trimmed
			continue
		}
		lines = append(lines, logical{trimmed, i + 1})
	}
	for _, l := range lines {
		if strings.HasPrefix(l.text, "include ") {
			includes = append(includes, strings.TrimSpace(strings.TrimPrefix(l.text, "include ")))
			continue
		}
		colon := indexUnquoted(l.text, ':')
		if colon < 0 {
			return nil, nil, &ParseError{Line: l.line, Msg: `want "[ids] : TYPE secret"`}
		}
		ids, ok := splitFields(l.text[:colon])
		if !ok {
			return nil, nil, &ParseError{Line: l.line, Msg: "unterminated quote"}
		}
		rest, ok := splitFieldsRaw(l.text[colon+1:])
		if !ok {
			return nil, nil, &ParseError{Line: l.line, Msg: "unterminated quote"}
		}
		if len(rest) < 2 {
			return nil, nil, &ParseError{Line: l.line, Msg: "missing secret type or value"}
		}
		e := IPsecSecret{IDs: ids, Type: strings.ToUpper(rest[0]), Line: l.line}
		switch e.Type {
		case TypePSK, TypeXAUTH, TypeEAP:
			v, err := decodeSecret(rest[1])
			if err != nil {
				return nil, nil, &ParseError{Line: l.line, Msg: e.Type + " " + err.Error()}
			}
			e.Secret = v
		case TypeRSA, TypeECDSA:
			e.Secret = unquote(rest[1])
		default:
			return nil, nil, &ParseError{Line: l.line, Msg: "unsupported secret type " + quoteShort(rest[0])}
		}
		entries = append(entries, e)
	}
	return entries, includes, nil
}

// decodeSecret decodes a quoted string, 0x hex or 0s base64 value.
func decodeSecret(tok string) (string, error) {
	switch {
	case len(tok) >= 2 && (tok[0] == '"' || tok[0] == '\''):
		return unquote(tok), nil
	case strings.HasPrefix(tok, "0x"):
		v, err := hex.DecodeString(strings.TrimPrefix(tok, "0x"))
		if err != nil {
			return "", errBadEncoding("hex")
		}
		return string(v), nil
	case strings.HasPrefix(tok, "0s"):
		v, err := base64.StdEncoding.DecodeString(strings.TrimPrefix(tok, "0s"))
		if err != nil {
			return "", errBadEncoding("base64")
		}
		return string(v), nil
	}
	return tok, nil
}

type errBadEncoding string

func (e errBadEncoding) Error() string { return "secret is not valid " + string(e) }

func unquote(tok string) string {
	if len(tok) >= 2 && (tok[0] == '"' || tok[0] == '\'') && tok[len(tok)-1] == tok[0] {
		return tok[1 : len(tok)-1]
	}
	return tok
}

// indexUnquoted is strings.IndexByte outside quotes. Selectors may hold
// IPv6 addresses, so only a colon followed by whitespace (or at the end)
// separates selectors from the secret, as strongSwan requires.
func indexUnquoted(s string, c byte) int {
	var quote byte
	for i := 0; i < len(s); i++ {
		switch {
		case quote != 0:
			if s[i] == quote {
				quote = 0
			}
		case s[i] == '"' || s[i] == '\'':
			quote = s[i]
		case s[i] == c && (i+1 == len(s) || s[i+1] == ' ' || s[i+1] == '\t'):
			return i
		}
	}
	return -1
}

// splitFieldsRaw splits like splitFields but keeps the quotes, so the
// caller can tell a quoted secret from a 0x/0s encoded one.
func splitFieldsRaw(s string) ([]string, bool) {
	var out []string
	var quote byte
	start := -1
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case quote != 0:
			if c == quote {
				quote = 0
			}
		case c == '"' || c == '\'':
			quote = c
			if start < 0 {
				start = i
			}
		case c == '#':
			if start >= 0 {
				out = append(out, s[start:i])
			}
			return out, true
		case c == ' ' || c == '\t' || c == '\r':
			if start >= 0 {
				out = append(out, s[start:i])
				start = -1
			}
		default:
			if start < 0 {
				start = i
			}
		}
	}
	if quote != 0 {
		return nil, false
	}
	if start >= 0 {
		out = append(out, s[start:])
	}
	return out, true
}
