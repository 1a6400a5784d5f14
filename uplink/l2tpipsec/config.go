package l2tpipsec

import (
	"crypto/x509"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"strings"
	"time"

	"github.com/fleetgate/fleetgate/uplink/clock"
	"github.com/fleetgate/fleetgate/uplink/ike"
	"github.com/fleetgate/fleetgate/uplink/keylog"
	"github.com/fleetgate/fleetgate/uplink/ppp"
)

// IKEOptions are the IKE knobs both roles share. Zero values take the ike
// package's defaults.
type IKEOptions struct {
	// IKEProposals and ESPProposals are comma-separated strongSwan-style
	// proposal strings ("aes256-sha256-modp2048,aes128-sha1-modp2048",
	// "aes128gcm16,aes256-sha1"). Empty: ike.DefaultIKEProposals and
	// ike.DefaultESPProposals.
	IKEProposals, ESPProposals string
	// ProposalKeys name the settings a refused offer's log line points to
	// (responder; see ike.Config.ProposalKeys).
	ProposalKeys ike.ProposalKeys
	// Lifetimes and rekeying (RFC 2407 §4.5); see ike.Config.
	IKELifetime, IPsecLifetime, RekeyMargin time.Duration
	IPsecLifeKB                             uint64
	// DPDInterval and DPDTimeout drive dead peer detection (RFC 3706);
	// DPDInterval < 0 disables it.
	DPDInterval, DPDTimeout time.Duration
	// Retransmit and Retries shape IKE retransmission.
	Retransmit time.Duration
	Retries    int
	// KeepaliveInterval is the NAT-keepalive period (RFC 3948 §4; default
	// 20 s, negative disables).
	KeepaliveInterval time.Duration
}

func (o *IKEOptions) apply(c *ike.Config) error {
	var err error
	if c.IKEProposals, err = parseList(o.IKEProposals, ike.ParseIKEProposal); err != nil {
		return err
	}
	if c.ESPProposals, err = parseList(o.ESPProposals, ike.ParseESPProposal); err != nil {
		return err
	}
	c.ProposalKeys = o.ProposalKeys
	c.IKELifetime, c.IPsecLifetime, c.RekeyMargin, c.IPsecLifeKB = o.IKELifetime, o.IPsecLifetime, o.RekeyMargin, o.IPsecLifeKB
	c.DPDInterval, c.DPDTimeout = o.DPDInterval, o.DPDTimeout
	c.Retransmit, c.Retries = o.Retransmit, o.Retries
	return nil
}

// parseList parses a comma-separated proposal list; empty gives nil (the
// defaults).
func parseList[T any](s string, parse func(string) (T, error)) ([]T, error) {
	var out []T
	for _, f := range strings.Split(s, ",") {
		if f = strings.TrimSpace(f); f == "" {
			continue
		}
		p, err := parse(f)
		if err != nil {
			return nil, fmt.Errorf("%w: proposal %q: %v", ErrConfig, f, err)
		}
		out = append(out, p)
	}
	return out, nil
}

// ClientConfig configures Dial.
type ClientConfig struct {
	// Gateway is the gateway's IKE address, "host:port" or "host" (port
	// 500). NATTPort is its NAT-T port (default 4500): the IKE engine floats
	// to it and ESP goes there (RFC 3947 §4).
	Gateway  string
	NATTPort uint16
	// LocalIKE and LocalNATT are the local bind addresses (default
	// "0.0.0.0:0", ephemeral ports). IKEConn and NATTConn, when set, are
	// already-bound sockets (e.g. in-memory pipes in tests) used instead.
	LocalIKE, LocalNATT string
	IKEConn, NATTConn   net.PacketConn

	// PSK is the pre-shared key; or Cert and CAs for signatures
	// (RemoteID, if set, is the identity the gateway must prove;
	// GatewayPolicy, if set, what its certificate must be).
	PSK           []byte
	Cert          *ike.LocalCert
	CAs           *x509.CertPool
	RemoteID      *ike.Identification
	GatewayPolicy *ike.GatewayPolicy
	// LocalID is our phase 1 identity (default: our address with a PSK,
	// the certificate subject with signatures). Sites behind one NAT
	// should each have their own (e.g. an FQDN), since INITIAL-CONTACT
	// clears SAs of the same identity from the same public address.
	LocalID *ike.Identification
	IKEOptions

	// Username and Password are the PPP credentials (never logged);
	// AuthMethods are the methods we accept (default: MS-CHAPv2 only:
	// whoever plays the gateway must not get the password in clear with
	// PAP, or an offline-crackable CHAP-MD5 exchange; weaker methods are
	// an explicit opt-in).
	Username, Password string
	AuthMethods        []ppp.AuthMethod
	// IPv6 negotiates IPV6CP (RFC 5072) beside IPCP; a gateway that does
	// not offer it Protocol-Rejects it and the link stays IPv4 only.
	// IfaceID is our interface identifier (zero: random).
	IPv6    bool
	IfaceID ppp.IfaceID
	// MRU, EchoInterval and EchoFailures tune PPP (LCP echo keepalive).
	MRU          int
	EchoInterval time.Duration
	EchoFailures int
	// ProbeAfter: once IPv4 was sent and nothing came back for this long,
	// LCP echoes go out every ProbeAfter until answered (ppp.Config
	// ProbeAfter: a dead gateway under traffic is noticed in ~4×ProbeAfter;
	// an idle link keeps the EchoInterval keepalive). Default
	// DefaultProbeAfter; negative: off.
	ProbeAfter time.Duration
	// HostName is sent in the L2TP Host Name AVP (default "fleetgate").
	HostName string
	// PacketHandler, if set, receives IPv4 packets from the moment IPCP
	// opens (SetPacketHandler can only be called after Dial returned).
	PacketHandler func(pkt []byte)
	// QuickModeTimeout bounds the wait for the first IPsec SA after phase
	// 1 (default DefaultQuickModeTimeout).
	QuickModeTimeout time.Duration
	// AnswerTimeout, when > 0, ends phase 1 early if the gateway has sent
	// nothing at all for that long (it is most likely down): a client with
	// other gateways tries the next one instead of waiting out IKE's
	// retransmissions (about a minute). A gateway that answers, however
	// slowly, is waited for as before. 0: off.
	AnswerTimeout time.Duration
	// OnAnswer, if set, is called once, from the transport's IKE
	// goroutine, when the gateway's first IKE message that parsed and
	// matched our SA arrives (the gateway is alive at this address): the
	// uplink client's Happy Eyeballs race (RFC 8305) picks its winner by it.
	// It must not block.
	OnAnswer func()

	// Clock drives every timer (default clock.System); Logger gets lifecycle
	// lines (default discard); KeyLog, when set, records IKE and ESP keys
	// for Wireshark (opt-in).
	Clock  clock.Clock
	Logger *slog.Logger
	KeyLog *keylog.Writer
}

func (c *ClientConfig) defaults() error {
	if c.Gateway == "" {
		return fmt.Errorf("%w: no gateway", ErrConfig)
	}
	if c.PSK == nil && c.Cert == nil {
		return fmt.Errorf("%w: need a PSK or a certificate", ErrConfig)
	}
	if c.NATTPort == 0 {
		c.NATTPort = DefaultNATTPort
	}
	if len(c.AuthMethods) == 0 {
		c.AuthMethods = []ppp.AuthMethod{ppp.AuthMSCHAPv2}
	}
	if c.ProbeAfter == 0 {
		c.ProbeAfter = DefaultProbeAfter
	}
	if c.LocalIKE == "" {
		c.LocalIKE = "0.0.0.0:0"
	}
	if c.LocalNATT == "" {
		c.LocalNATT = "0.0.0.0:0"
	}
	if c.QuickModeTimeout == 0 {
		c.QuickModeTimeout = DefaultQuickModeTimeout
	}
	if c.Clock == nil {
		c.Clock = clock.System
	}
	if c.Logger == nil {
		c.Logger = slog.New(slog.DiscardHandler)
	}
	return nil
}

// resolveGateway turns Gateway into an address (IPv4 or IPv6) and port; a
// name is looked up with the system resolver (its first address).
func resolveGateway(s string) (netip.AddrPort, error) {
	if _, _, err := net.SplitHostPort(s); err != nil {
		s = net.JoinHostPort(s, fmt.Sprint(DefaultIKEPort))
	}
	if ap, err := netip.ParseAddrPort(s); err == nil {
		return ap, nil
	}
	ua, err := net.ResolveUDPAddr("udp", s)
	if err != nil {
		return netip.AddrPort{}, err
	}
	ap := ua.AddrPort()
	return netip.AddrPortFrom(ap.Addr().Unmap(), ap.Port()), nil
}

// ServerConfig configures NewServer.
type ServerConfig struct {
	// IKEAddr and NATTAddr are the listen addresses (default
	// "0.0.0.0:500" and "0.0.0.0:4500"; unprivileged tests use e.g.
	// 127.0.0.1:1500 and 127.0.0.1:14500). IKEConn and NATTConn, when set,
	// are already-bound sockets used instead.
	IKEAddr, NATTAddr string
	IKEConn, NATTConn net.PacketConn

	// PSK returns the pre-shared key for a peer address; or Cert + CAs
	// (+ CheckCert) for signatures. AllowIdentity may refuse an
	// authenticated IKE identity.
	PSK           func(remote netip.Addr) ([]byte, bool)
	Cert          *ike.LocalCert
	CAs           *x509.CertPool
	CheckCert     func(leaf *x509.Certificate, chain []*x509.Certificate) error
	AllowIdentity func(ike.Identity) bool
	// ResponderPSKs, PSKForID and BoundIdentity look pre-shared keys up
	// by the peer's ID and decide whom INITIAL-CONTACT is honoured from
	// (see ike.Config); LocalAddrFor gives the address we present as our
	// ID when bound to the wildcard address; LocalID, when set, is our ID.
	ResponderPSKs func(remote netip.Addr) [][]byte
	PSKForID      func(id ike.Identification, remote netip.Addr) ([]byte, bool)
	BoundIdentity func(ike.Identity) bool
	LocalAddrFor  func(remote netip.Addr) (netip.Addr, bool)
	LocalID       *ike.Identification
	// OnIKEAuthFailed, when set, hears of every peer whose phase 1 failed
	// to authenticate (for failure backoff); it must not block.
	OnIKEAuthFailed func(remote netip.AddrPort, peer ike.Identity, err error)
	IKEOptions
	// MaxHalfOpen and HalfOpenTTL bound half-open IKE SAs (waiting for
	// MM3, oldest evicted when full), MaxNegotiating those past MM3;
	// RatePerSource and BurstPerSource limit new phase 1 per source
	// address, and Admit (ike.Config.Admit) may refuse one, both when MM3
	// proves the peer's address.
	MaxHalfOpen    int
	MaxNegotiating int
	HalfOpenTTL    time.Duration
	RatePerSource  float64
	BurstPerSource int
	Admit          func(remote netip.Addr) bool
	// MaxSAsPerSource, MaxQuickModes and MaxChildren: see ike.Config.
	MaxSAsPerSource, MaxQuickModes, MaxChildren int

	// Authenticator verifies PPP logins; AddressFunc assigns IPCP
	// addresses; LocalAddr is our own IPCP address; AuthMethods are
	// offered in order (default ppp's: MS-CHAPv2, CHAP-MD5).
	Authenticator ppp.Authenticator
	AddressFunc   ppp.AddressFunc
	LocalAddr     netip.Addr
	AuthMethods   []ppp.AuthMethod
	// MethodsFor, when set, gives the methods offered to a link from the
	// phase 1 identity its peer proved, in order (overrides AuthMethods);
	// none refuses the link.
	MethodsFor func(ike.Identity) []ppp.AuthMethod
	// MaxTunnelsPerPeer caps the L2TP tunnels of one IPsec peer (default
	// DefaultMaxTunnelsPerPeer; stock clients use one). UnauthTimeout
	// closes a tunnel that has carried no authenticated session for that
	// long (default DefaultUnauthTimeout). A tunnel carries at most one
	// session that has not yet authenticated.
	MaxTunnelsPerPeer int
	UnauthTimeout     time.Duration
	// IfaceID is the gateway's IPV6CP interface identifier (zero: random
	// per session); IPV6CP is offered to a client whose AddressFunc
	// assignment says IPv6.
	IfaceID ppp.IfaceID
	// MRU, EchoInterval and EchoFailures tune PPP.
	MRU          int
	EchoInterval time.Duration
	EchoFailures int
	// MRUFor, when set, gives the MRU a new session's LCP announces from
	// the session (outer address, ESP suite) and the configured MRU, e.g.
	// smaller over an IPv6 outer path so inner packets are never
	// fragmented outside.
	MRUFor func(ss *ServerSession, mru int) int
	// HostName is our L2TP Host Name (default "fleetgate").
	HostName string

	// OnSession is called, on its own goroutine, for every session that
	// reached IPCP Opened. The session's Done channel tells when it ends.
	OnSession func(*ServerSession)

	Clock  clock.Clock
	Logger *slog.Logger
	KeyLog *keylog.Writer
}

func (c *ServerConfig) defaults() error {
	if c.PSK == nil && c.Cert == nil {
		return fmt.Errorf("%w: need a PSK lookup or a certificate", ErrConfig)
	}
	if c.Authenticator == nil || c.AddressFunc == nil {
		return fmt.Errorf("%w: need a PPP Authenticator and AddressFunc", ErrConfig)
	}
	if c.IKEConn == nil && c.IKEAddr == "" {
		c.IKEAddr = fmt.Sprintf("0.0.0.0:%d", DefaultIKEPort)
	}
	if c.NATTConn == nil && c.NATTAddr == "" {
		c.NATTAddr = fmt.Sprintf("0.0.0.0:%d", DefaultNATTPort)
	}
	if c.Clock == nil {
		c.Clock = clock.System
	}
	if c.Logger == nil {
		c.Logger = slog.New(slog.DiscardHandler)
	}
	if c.MaxTunnelsPerPeer <= 0 {
		c.MaxTunnelsPerPeer = DefaultMaxTunnelsPerPeer
	}
	if c.UnauthTimeout <= 0 {
		c.UnauthTimeout = DefaultUnauthTimeout
	}
	return nil
}
