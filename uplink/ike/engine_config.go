package ike

import (
	"crypto/x509"
	"io"
	"log/slog"
	"net/netip"
	"time"

	"github.com/fleetgate/fleetgate/uplink/clock"
)

// LocalCert is our certificate chain and key for signature authentication.
type LocalCert struct {
	Chain [][]byte // DER, leaf first
	Key   any      // *ecdsa.PrivateKey (P-256/P-384) or *rsa.PrivateKey
}

// Config configures an Engine. Zero values take the documented defaults.
type Config struct {
	Sender Sender      // required
	Clock  clock.Clock // default clock.System
	Logger *slog.Logger
	Rand   io.Reader // default crypto/rand

	// PSK returns the pre-shared key for a peer address. In Main Mode the
	// key is needed before the peer's identity is known (RFC 2409 §5.4), so
	// only the address is available. nil or false: no PSK authentication.
	PSK func(remote netip.Addr) ([]byte, bool)
	// ResponderPSKs, when set, lists every pre-shared key a peer at remote
	// may be using, most likely first (responder). Main Mode encrypts the
	// peer's ID (MM5) under a key derived from the PSK, so the key cannot
	// be looked up by ID before decryption: the responder tries each
	// candidate (at most MaxPSKCandidates) and keeps the one under which
	// MM5 decrypts and HASH_I verifies, as strongSwan tries the shared keys
	// of every peer config matching the addresses. PSKForID must then name
	// that same key for the ID the peer presented, or phase 1 fails: an
	// identity with a key of its own never comes up with another key.
	ResponderPSKs func(remote netip.Addr) [][]byte
	// PSKForID returns the pre-shared key bound to a peer's phase 1 ID
	// (responder, with ResponderPSKs); false refuses the ID.
	PSKForID func(id Identification, remote netip.Addr) ([]byte, bool)
	// BoundIdentity reports whether what authenticated the peer is bound
	// to the ID it presented (a certificate naming it, or a PSK of its
	// own), so that INITIAL-CONTACT, which deletes every other SA of that
	// ID, may be honoured. nil: certificates and address IDs (from that
	// same address) are bound, other PSK IDs are not.
	BoundIdentity func(Identity) bool
	// LocalAddrFor, when set, gives the address to present as our ID
	// (PSK mode, no LocalID) when the socket is bound to the wildcard
	// address: the local address packets to remote leave from.
	LocalAddrFor func(remote netip.Addr) (netip.Addr, bool)
	// Cert enables signature authentication with this certificate.
	Cert *LocalCert
	// CAs verifies peer certificates; required for signature mode.
	CAs *x509.CertPool
	// CertReqSubjects are the DER subjects of the CAs our CERTREQ payloads
	// name (RFC 2408 §3.10), so that a peer with several certificates (a
	// Windows machine store) picks one we trust; empty sends one CERTREQ
	// without a name ("any CA").
	CertReqSubjects [][]byte
	// CheckCert is an extra check on a verified peer certificate (CRL, OCSP).
	CheckCert func(leaf *x509.Certificate, chain []*x509.Certificate) error
	// AllowIdentity decides whether an authenticated identity may connect
	// (responder and initiator). nil allows everyone who authenticated.
	AllowIdentity func(Identity) bool
	// LocalID is our phase 1 identity; default: our address (PSK) or the
	// certificate's subject DN (signatures).
	LocalID *Identification
	// RemoteID, when set, is the identity the peer must present (initiator).
	RemoteID *Identification
	// Gateway, when set, is what the initiator demands of the responder's
	// certificate (its name, a gateway key usage, not revoked); see
	// GatewayPolicy.
	Gateway *GatewayPolicy

	IKEProposals []IKEProposal // default DefaultIKEProposals; SetProposals replaces them
	ESPProposals []ESPProposal // default DefaultESPProposals; SetProposals replaces them
	// ProposalKeys name the settings a refusal's log line points to.
	ProposalKeys  ProposalKeys
	IKELifetime   time.Duration // default DefaultIKELifetime
	IPsecLifetime time.Duration // default DefaultIPsecLifetime
	IPsecLifeKB   uint64        // 0 = no volume limit
	RekeyMargin   time.Duration // default DefaultRekeyMargin (capped at lifetime/2)
	RekeyGrace    time.Duration // old inbound SA kept after rekey; default 30s
	DPDInterval   time.Duration // default DefaultDPDInterval; <0 disables
	DPDTimeout    time.Duration // default DefaultDPDTimeout
	Retransmit    time.Duration // default DefaultRetransmit
	Retries       int           // default DefaultRetries
	HalfOpenTTL   time.Duration // default DefaultHalfOpenTimeout
	// MaxHalfOpen bounds responder Main Modes between MM2 and MM3 (address
	// not yet proven; a few hundred bytes each, see halfopen.go); when
	// full, the oldest is evicted. Default DefaultMaxHalfOpen.
	MaxHalfOpen int
	// MaxNegotiating bounds responder Main Modes past MM3 (address proven,
	// Diffie-Hellman done) and not yet established; beyond it a new MM3 is
	// dropped (its initiator retransmits). Default DefaultMaxNegotiating.
	MaxNegotiating int
	// Admit, when set, is asked once per responder Main Mode, when its
	// third message proves the peer's address and before any
	// Diffie-Hellman work; false drops that message (the initiator
	// retransmits it and is asked again). Spoofed first messages never
	// reach it.
	Admit func(remote netip.Addr) bool
	// MaxSAsPerSource bounds the responder's ISAKMP SAs (negotiating and
	// established) per peer address; a new Main Mode beyond it is dropped
	// at MM3. Sites behind one NAT share an address. Default
	// DefaultMaxSAsPerSource.
	MaxSAsPerSource int
	// MaxQuickModes bounds the Quick Mode exchanges a peer may have open on
	// one ISAKMP SA (finished ones are kept a minute for duplicates), and
	// MaxChildren the IPsec SA pairs under it; a Quick Mode the peer starts
	// beyond either is dropped. Defaults DefaultMaxQuickModes,
	// DefaultMaxChildren.
	MaxQuickModes int
	MaxChildren   int
	// CryptoWorkers bounds the responder's Diffie-Hellman and certificate
	// work running at once off the engine's lock (offload.go), so that
	// first messages and other peers never wait behind it; default
	// GOMAXPROCS, negative runs it inline under the lock. MaxCryptoQueue
	// bounds the jobs waiting for a worker (default MaxNegotiating);
	// beyond it the message is dropped (Stats.CryptoQueueFull) and the
	// initiator retransmits. Config.Rand must then be safe for concurrent
	// use (crypto/rand is).
	CryptoWorkers  int
	MaxCryptoQueue int
	RatePerSource  float64 // new phase 1 per second per source address; default 5
	BurstPerSource int     // default 10
	NATTPort       uint16  // default 4500 (the ESP transport's NAT-T port)
	// AllowRawESP, when false (the default), makes NAT-D claim a NAT with
	// one fake hash so both sides use UDP-encapsulated ESP on the NAT-T
	// port (our ESP runs in userspace): an initiator claims to be behind
	// it, a responder tells the peer that the peer is (see natdPayloads).
	AllowRawESP bool
	// OnEvent receives SA events, in order, never under the engine's lock.
	OnEvent func(Event)
	// OnKeys, when set, receives the IKE cookies and phase 1 encryption key
	// (for a Wireshark ikev1_decryption_table); nil by default.
	OnKeys func(icookie, rcookie [8]byte, encKey []byte)
}
