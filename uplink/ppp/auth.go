package ppp

import (
	"context"
	"crypto/subtle"
	"fmt"
	"net/netip"
)

// AuthMethod is an authentication protocol negotiated by LCP.
type AuthMethod uint8

// Authentication methods.
const (
	AuthNone     AuthMethod = iota // no authentication
	AuthPAP                        // RFC 1334 (cleartext; refused by servers unless configured)
	AuthCHAPMD5                    // RFC 1994 with MD5
	AuthMSCHAPv2                   // RFC 2759
)

// String names the method.
func (m AuthMethod) String() string {
	switch m {
	case AuthNone:
		return "none"
	case AuthPAP:
		return "PAP"
	case AuthCHAPMD5:
		return "CHAP-MD5"
	case AuthMSCHAPv2:
		return "MS-CHAPv2"
	}
	return "auth?"
}

// authOption encodes the LCP Authentication-Protocol option data.
func (m AuthMethod) authOption() []byte {
	switch m {
	case AuthPAP:
		return []byte{0xc0, 0x23}
	case AuthCHAPMD5:
		return []byte{0xc2, 0x23, chapMD5}
	case AuthMSCHAPv2:
		return []byte{0xc2, 0x23, chapMSCHAPv2}
	}
	return nil
}

// parseAuthOption decodes Authentication-Protocol option data; ok false
// for methods we do not implement (EAP, CHAP with other algorithms).
func parseAuthOption(d []byte) (AuthMethod, bool) {
	switch {
	case len(d) == 2 && d[0] == 0xc0 && d[1] == 0x23:
		return AuthPAP, true
	case len(d) == 3 && d[0] == 0xc2 && d[1] == 0x23 && d[2] == chapMD5:
		return AuthCHAPMD5, true
	case len(d) == 3 && d[0] == 0xc2 && d[1] == 0x23 && d[2] == chapMSCHAPv2:
		return AuthMSCHAPv2, true
	}
	return AuthNone, false
}

// describeAuthOption names the method an LCP Authentication-Protocol
// option asks for (hex when it is none we implement, e.g. EAP).
func describeAuthOption(d []byte) string {
	if m, ok := parseAuthOption(d); ok {
		return m.String()
	}
	return fmt.Sprintf("%x", d)
}

// AuthRequest is the raw exchange handed to an Authenticator, so a RADIUS
// backend can verify CHAP and MS-CHAPv2 itself. Slices are only valid
// during the call. Never log Password.
type AuthRequest struct {
	Method   AuthMethod
	Username string
	// Password is the PAP password.
	Password []byte
	// ID is the CHAP identifier; Challenge our (authenticator) challenge.
	ID        byte
	Challenge []byte
	// Response is the CHAP-MD5 response (16 bytes) or the MS-CHAPv2
	// NT-Response (24 bytes); PeerChallenge is MS-CHAPv2's (16 bytes).
	Response      []byte
	PeerChallenge []byte
}

// AuthResult is an Authenticator's verdict.
type AuthResult struct {
	Accept bool
	// AuthenticatorResponse is the MS-CHAPv2 "S=..." string (required on
	// accept for MS-CHAPv2).
	AuthenticatorResponse string
	// Message is shown to the peer (PAP Ack/Nak, CHAP Success/Failure).
	Message string
}

// Authenticator verifies a peer's credentials (server side). It may block
// (RADIUS round trip); it runs off the Conn's owner goroutine and is
// cancelled through ctx when the link goes away.
type Authenticator interface {
	Authenticate(ctx context.Context, req *AuthRequest) (AuthResult, error)
}

// LocalUsers is an Authenticator over an in-memory user → password map.
type LocalUsers map[string]string

// Authenticate checks PAP passwords, CHAP-MD5 and MS-CHAPv2 responses.
func (u LocalUsers) Authenticate(_ context.Context, req *AuthRequest) (AuthResult, error) {
	pw, ok := u[req.Username]
	if !ok {
		return AuthResult{Message: "authentication failed"}, nil
	}
	switch req.Method {
	case AuthPAP:
		if subtle.ConstantTimeCompare([]byte(pw), req.Password) == 1 {
			return AuthResult{Accept: true, Message: "welcome"}, nil
		}
	case AuthCHAPMD5:
		if subtle.ConstantTimeCompare(CHAPMD5Response(req.ID, []byte(pw), req.Challenge), req.Response) == 1 {
			return AuthResult{Accept: true, Message: "welcome"}, nil
		}
	case AuthMSCHAPv2:
		if s, ok := MSCHAPv2Verify(ntPasswordHash(pw), req.Challenge, req.PeerChallenge, req.Response, req.Username); ok {
			return AuthResult{Accept: true, AuthenticatorResponse: s, Message: "welcome"}, nil
		}
	}
	return AuthResult{Message: "authentication failed"}, nil
}

// Assignment is what the server's address callback hands to IPCP.
type Assignment struct {
	Addr netip.Addr    // the peer's IPv4 address
	DNS  [2]netip.Addr // primary and secondary DNS (RFC 1877), optional
	NBNS [2]netip.Addr // primary and secondary NBNS (RFC 1877), optional
	// IPv6 opens IPV6CP (RFC 5072) with this peer; otherwise its IPV6CP is
	// Protocol-Rejected. IfaceID, when non-zero, is the interface
	// identifier a peer proposing zero (or ours) is told to use.
	IPv6    bool
	IfaceID IfaceID
}

// AddressFunc assigns the peer's address after authentication (server).
type AddressFunc func(ctx context.Context, username string) (Assignment, error)
