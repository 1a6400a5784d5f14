package ike

import "time"

// ISAKMP header constants (RFC 2408 §3.1).
const (
	// HeaderLen is the fixed ISAKMP header length.
	HeaderLen = 28
	// genericHeaderLen is the generic payload header length (RFC 2408 §3.2).
	genericHeaderLen = 4
	// Version is ISAKMP major version 1, minor 0.
	Version = 0x10
	// maxMessageLen bounds what we accept (a certificate chain fits easily).
	maxMessageLen = 65535
)

// Exchange is an ISAKMP exchange type (RFC 2408 §3.1, RFC 2409 §5).
type Exchange uint8

// Exchange types.
const (
	// ExchangeIdentityProtection is Main Mode (RFC 2409 §5).
	ExchangeIdentityProtection Exchange = 2
	// ExchangeAggressive is Aggressive Mode; never accepted here.
	ExchangeAggressive Exchange = 4
	// ExchangeInformational carries Notify and Delete payloads (RFC 2409 §5.7).
	ExchangeInformational Exchange = 5
	// ExchangeQuickMode is Quick Mode (RFC 2409 §5.5).
	ExchangeQuickMode Exchange = 32
)

// Header flags (RFC 2408 §3.1).
const (
	// FlagEncryption marks an encrypted message body.
	FlagEncryption uint8 = 1
	// FlagCommit is the commit bit (ignored on receipt, never sent).
	FlagCommit uint8 = 2
	// FlagAuthOnly is the authentication-only bit (not supported).
	FlagAuthOnly uint8 = 4
)

// PayloadType is an ISAKMP next-payload value (RFC 2408 §3.1, RFC 3947 §3).
type PayloadType uint8

// Payload types.
const (
	PayloadNone       PayloadType = 0   // end of chain
	PayloadSA         PayloadType = 1   // Security Association (RFC 2408 §3.4)
	PayloadProposal   PayloadType = 2   // Proposal (§3.5)
	PayloadTransform  PayloadType = 3   // Transform (§3.6)
	PayloadKE         PayloadType = 4   // Key Exchange (§3.7)
	PayloadID         PayloadType = 5   // Identification (§3.8)
	PayloadCert       PayloadType = 6   // Certificate (§3.9)
	PayloadCertReq    PayloadType = 7   // Certificate Request (§3.10)
	PayloadHash       PayloadType = 8   // Hash (§3.11)
	PayloadSig        PayloadType = 9   // Signature (§3.12)
	PayloadNonce      PayloadType = 10  // Nonce (§3.13)
	PayloadNotify     PayloadType = 11  // Notification (§3.14)
	PayloadDelete     PayloadType = 12  // Delete (§3.15)
	PayloadVendorID   PayloadType = 13  // Vendor ID (§3.16)
	PayloadNATD       PayloadType = 20  // NAT-D (RFC 3947 §3.2)
	PayloadNATOA      PayloadType = 21  // NAT-OA (RFC 3947 §5.2)
	PayloadNATDDraft  PayloadType = 130 // NAT-D, draft-ietf-ipsec-nat-t-ike-02/03
	PayloadNATOADraft PayloadType = 131 // NAT-OA, draft-ietf-ipsec-nat-t-ike-02/03
)

// DOI and situation (RFC 2407 §4.2, §4.6.1).
const (
	DOIIPsec            uint32 = 1
	SituationIdentOnly  uint32 = 1
	ProtoISAKMP         uint8  = 1 // RFC 2407 §4.4.1
	ProtoESP            uint8  = 3
	TransformKeyIKE     uint8  = 1 // RFC 2407 §4.4.2
	ipsecProtocolUDP    uint8  = 17
	l2tpPort            uint16 = 1701
	isakmpPort          uint16 = 500
	nattPort            uint16 = 4500
	certEncodingX509Sig uint8  = 4 // RFC 2408 §3.9
)

// Phase 1 attribute types and values (RFC 2409 Appendix A, RFC 3526, RFC
// 5903, RFC 4754).
const (
	attrEncryption  uint16 = 1
	attrHash        uint16 = 2
	attrAuthMethod  uint16 = 3
	attrGroupDesc   uint16 = 4
	attrLifeType    uint16 = 11
	attrLifeDur     uint16 = 12
	attrKeyLength   uint16 = 14
	enc3DES         uint16 = 5
	encAESCBC       uint16 = 7
	lifeSeconds     uint16 = 1
	lifeKilobytes   uint16 = 2
	attrFormatBasic uint16 = 0x8000
)

// Phase 2 (IPsec DOI) attribute types and values (RFC 2407 §4.5, RFC 3947 §5.1).
const (
	attr2LifeType      uint16 = 1
	attr2LifeDur       uint16 = 2
	attr2GroupDesc     uint16 = 3
	attr2EncapMode     uint16 = 4
	attr2AuthAlg       uint16 = 5
	attr2KeyLength     uint16 = 6
	encapTunnel        uint16 = 1
	encapTransport     uint16 = 2
	encapUDPTransport  uint16 = 4     // RFC 3947 §5.1
	encapUDPTransportD uint16 = 61444 // draft-ietf-ipsec-nat-t-ike-02/03
	encapUDPTunnel     uint16 = 3
	encapUDPTunnelD    uint16 = 61443
)

// HashAlg is the phase 1 hash/PRF (RFC 2409 Appendix A, IANA values).
type HashAlg uint16

// Hash algorithms.
const (
	HashMD5    HashAlg = 1
	HashSHA1   HashAlg = 2
	HashSHA256 HashAlg = 4
	HashSHA384 HashAlg = 5
	HashSHA512 HashAlg = 6
)

// AuthMethod is the phase 1 authentication method (RFC 2409 Appendix A,
// RFC 4754 §3).
type AuthMethod uint16

// Authentication methods.
const (
	AuthPSK      AuthMethod = 1
	AuthRSASig   AuthMethod = 3
	AuthECDSA256 AuthMethod = 9
	AuthECDSA384 AuthMethod = 10
)

// IDType is an IPsec DOI identification type (RFC 2407 §4.6.2.1).
type IDType uint8

// Identification types.
const (
	IDIPv4Addr       IDType = 1
	IDFQDN           IDType = 2
	IDUserFQDN       IDType = 3
	IDIPv4AddrSubnet IDType = 4
	IDIPv6Addr       IDType = 5
	IDIPv6AddrSubnet IDType = 6
	IDIPv4AddrRange  IDType = 7
	IDIPv6AddrRange  IDType = 8
	IDDERASN1DN      IDType = 9
	IDDERASN1GN      IDType = 10
	IDKeyID          IDType = 11
)

// NotifyType is an ISAKMP notify message type (RFC 2408 §3.14.1, RFC 2407
// §4.6.3, RFC 3706 §5).
type NotifyType uint16

// Notify message types used here.
const (
	NotifyInvalidPayloadType   NotifyType = 1
	NotifyInvalidCookie        NotifyType = 4
	NotifyInvalidMajorVersion  NotifyType = 5
	NotifyInvalidExchangeType  NotifyType = 7
	NotifyInvalidFlags         NotifyType = 8
	NotifyInvalidMessageID     NotifyType = 9
	NotifyInvalidProtocolID    NotifyType = 10
	NotifyInvalidSPI           NotifyType = 11
	NotifyAttributesNotSupp    NotifyType = 13
	NotifyNoProposalChosen     NotifyType = 14
	NotifyBadProposalSyntax    NotifyType = 15
	NotifyPayloadMalformed     NotifyType = 16
	NotifyInvalidKeyInfo       NotifyType = 17
	NotifyInvalidIDInformation NotifyType = 18
	NotifyInvalidCertEncoding  NotifyType = 19
	NotifyInvalidCertificate   NotifyType = 20
	NotifyCertTypeUnsupported  NotifyType = 21
	NotifyInvalidCertAuthority NotifyType = 22
	NotifyInvalidHashInfo      NotifyType = 23
	NotifyAuthenticationFailed NotifyType = 24
	NotifyInvalidSignature     NotifyType = 25
	NotifyResponderLifetime    NotifyType = 24576
	NotifyReplayStatus         NotifyType = 24577
	NotifyInitialContact       NotifyType = 24578
	NotifyRUThere              NotifyType = 36136
	NotifyRUThereAck           NotifyType = 36137
)

// Vendor IDs we send and recognise.
var (
	// VIDRFC3947 is MD5("RFC 3947").
	VIDRFC3947 = []byte{0x4a, 0x13, 0x1c, 0x81, 0x07, 0x03, 0x58, 0x45, 0x5c, 0x57, 0x28, 0xf2, 0x0e, 0x95, 0x45, 0x2f}
	// VIDNATTDraft02 is MD5("draft-ietf-ipsec-nat-t-ike-02\n").
	VIDNATTDraft02 = []byte{0x90, 0xcb, 0x80, 0x91, 0x3e, 0xbb, 0x69, 0x6e, 0x08, 0x63, 0x81, 0xb5, 0xec, 0x42, 0x7b, 0x1f}
	// VIDNATTDraft02b is MD5("draft-ietf-ipsec-nat-t-ike-02").
	VIDNATTDraft02b = []byte{0xcd, 0x60, 0x46, 0x43, 0x35, 0xdf, 0x21, 0xf8, 0x7c, 0xfd, 0xb2, 0xfc, 0x68, 0xb6, 0xa4, 0x48}
	// VIDNATTDraft03 is MD5("draft-ietf-ipsec-nat-t-ike-03").
	VIDNATTDraft03 = []byte{0x7d, 0x94, 0x19, 0xa6, 0x53, 0x10, 0xca, 0x6f, 0x2c, 0x17, 0x9d, 0x92, 0x15, 0x52, 0x9d, 0x56}
	// VIDDPD is the RFC 3706 §5 vendor ID (version 1.0).
	VIDDPD = []byte{0xaf, 0xca, 0xd7, 0x13, 0x68, 0xa1, 0xf1, 0xc9, 0x6b, 0x86, 0x96, 0xfc, 0x77, 0x57, 0x01, 0x00}
)

// Timing defaults.
const (
	// DefaultRetransmit is the first retransmission timeout; it doubles up
	// to retransmitCap (strongSwan uses 4s * 1.8^n; RFC 2408 leaves it open).
	DefaultRetransmit = 2 * time.Second
	retransmitCap     = 30 * time.Second
	// DefaultRetries is how many retransmissions precede giving up.
	DefaultRetries = 5
	// DefaultIKELifetime is the phase 1 lifetime we propose (RFC 2407 §4.5
	// leaves it to policy; 3h like Windows and strongSwan's 'ikelifetime').
	DefaultIKELifetime = 3 * time.Hour
	// DefaultIPsecLifetime is the phase 2 lifetime we propose.
	DefaultIPsecLifetime = time.Hour
	// DefaultDPDInterval is the idle time before an R-U-THERE (RFC 3706 §5.3).
	DefaultDPDInterval = 30 * time.Second
	// DefaultDPDTimeout is how long without an answer declares the peer dead.
	DefaultDPDTimeout = 150 * time.Second
	// DefaultRekeyMargin is how long before expiry a rekey starts
	// (make-before-break).
	DefaultRekeyMargin = 9 * time.Minute
	// DefaultHalfOpenTimeout removes a half-open responder SA.
	DefaultHalfOpenTimeout = 30 * time.Second
	// DefaultMaxHalfOpen bounds responder Main Modes waiting for MM3 (see
	// halfopen.go): sized for a flood, not for normal load. At ≈ 430 bytes
	// each (measured with a two-transform SA payload) it is ≈ 7 MB full; under a spoofed flood of R first messages a
	// second an entry lives DefaultMaxHalfOpen/R seconds (16 s at 1,000/s),
	// far longer than a real peer takes to answer.
	DefaultMaxHalfOpen = 16384
	// DefaultMaxNegotiating bounds responder Main Modes past MM3 (address
	// proven, admitted, Diffie-Hellman done) and not yet established.
	DefaultMaxNegotiating = 256
	// DefaultMaxSAsPerSource bounds responder ISAKMP SAs per peer address
	// (a site has one, two while rekeying; many sites may share a NAT).
	DefaultMaxSAsPerSource = 512
	// DefaultMaxQuickModes bounds open Quick Mode exchanges per ISAKMP SA,
	// DefaultMaxChildren its IPsec SA pairs (a site: one, two while rekeying).
	DefaultMaxQuickModes = 16
	DefaultMaxChildren   = 16
	// cookieRotate is how often the responder cookie secret changes (RFC
	// 2408 §2.5.3); the previous one still verifies.
	cookieRotate = 10 * time.Minute
	// nonceLen is our nonce size (RFC 2409 §5: 8..256 bytes).
	nonceLen    = 32
	minNonceLen = 8
	maxNonceLen = 256
)

// MaxPSKCandidates bounds the pre-shared keys a responder tries on one
// MM5 (Config.ResponderPSKs); each try costs a few HMACs and one block
// decryption.
const MaxPSKCandidates = 4096
