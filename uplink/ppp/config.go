package ppp

import (
	"crypto/rand"
	"io"
	"log/slog"
	"net/netip"
	"time"

	"github.com/fleetgate/fleetgate/uplink/clock"
)

// Role says whether this end authenticates the peer and assigns its
// address (Server) or is authenticated and takes an address (Client).
type Role uint8

// Roles.
const (
	Client Role = iota + 1
	Server
)

// Config configures a Conn. Zero values take defaults.
type Config struct {
	Role Role
	// MRU is the largest packet we receive (default 1400).
	MRU int
	// Methods are the acceptable authentication methods. A client accepts
	// any of them (default MS-CHAPv2, CHAP-MD5, PAP); a server offers them
	// in order (default MS-CHAPv2, CHAP-MD5: PAP only if listed).
	Methods []AuthMethod
	// Username and Password are the client's credentials. Never logged.
	Username, Password string
	// Name is the authenticator name sent in CHAP challenges (server).
	Name string
	// Authenticator verifies peers (server; required).
	Authenticator Authenticator
	// AssignAddress gives the peer its IPCP address and DNS (server;
	// required).
	AssignAddress AddressFunc
	// LocalAddr is our own IPCP address (server: sent in its request;
	// client: usually left zero to accept any).
	LocalAddr netip.Addr
	// IPv6 makes a client negotiate IPV6CP (RFC 5072) beside IPCP (a
	// server offers it per peer: Assignment.IPv6). IfaceID is our
	// interface identifier (zero: a random one, u/l bit clear).
	IPv6    bool
	IfaceID IfaceID
	// RequestDNS makes a client ask for DNS servers (default true via
	// NoDNS false).
	NoDNS bool
	// EchoInterval and EchoFailures drive LCP keepalive: an Echo-Request
	// every interval, the link declared dead after that many unanswered.
	EchoInterval time.Duration
	EchoFailures int
	// ProbeAfter, when > 0, turns on on-demand liveness (probe.go): after
	// sending IPv4 and receiving nothing for ProbeAfter, echo every
	// ProbeAfter until answered. 0: off (only the EchoInterval keepalive).
	ProbeAfter time.Duration
	// Restart, MaxConfigure, MaxTerminate and MaxFailure are the RFC 1661
	// §4.6 timer and counters.
	Restart      time.Duration
	MaxConfigure int
	MaxTerminate int
	MaxFailure   int
	// AuthTimeout bounds the authentication phase.
	AuthTimeout time.Duration
	// Clock drives timers (default clock.System).
	Clock clock.Clock
	// Logger receives lifecycle lines (default: discard).
	Logger *slog.Logger
	// Stats receives counters (default: a private Stats).
	Stats *Stats
	// Rand supplies magic numbers and challenges (default crypto/rand).
	Rand io.Reader
	// PacketHandler, when set, is the packet handler from the first frame
	// on (as SetPacketHandler, which may replace it later). Set it here:
	// a handler set after Attach returns can miss the peer's first packet
	// when the whole negotiation completes before that call (seen under
	// load: 1-2 of 50 first datagrams dropped, "no handler").
	PacketHandler func(pkt []byte)
	// OnUp is called (from the owner goroutine) when IPCP opens; OnDown
	// when the link goes down, with the reason. They must not block.
	OnUp   func(Info)
	OnDown func(error)
}

func (c *Config) setDefaults() {
	if c.Role == 0 {
		c.Role = Client
	}
	if c.MRU <= 0 {
		c.MRU = DefaultMRU
	}
	if c.MRU < minMRU {
		c.MRU = minMRU
	}
	if len(c.Methods) == 0 {
		if c.Role == Server {
			c.Methods = []AuthMethod{AuthMSCHAPv2, AuthCHAPMD5}
		} else {
			c.Methods = []AuthMethod{AuthMSCHAPv2, AuthCHAPMD5, AuthPAP}
		}
	}
	if c.Name == "" {
		c.Name = "fleetgate"
	}
	if c.EchoInterval <= 0 {
		c.EchoInterval = DefaultEchoInterval
	}
	if c.EchoFailures <= 0 {
		c.EchoFailures = DefaultEchoFailures
	}
	if c.Restart <= 0 {
		c.Restart = DefaultRestart
	}
	if c.MaxConfigure <= 0 {
		c.MaxConfigure = DefaultMaxConfigure
	}
	if c.MaxTerminate <= 0 {
		c.MaxTerminate = DefaultMaxTerminate
	}
	if c.MaxFailure <= 0 {
		c.MaxFailure = DefaultMaxFailure
	}
	if c.AuthTimeout <= 0 {
		c.AuthTimeout = DefaultAuthTimeout
	}
	if c.Clock == nil {
		c.Clock = clock.System
	}
	if c.Logger == nil {
		c.Logger = slog.New(slog.DiscardHandler)
	}
	if c.Stats == nil {
		c.Stats = new(Stats)
	}
	if c.Rand == nil {
		c.Rand = rand.Reader
	}
}

// Info describes the negotiated link.
type Info struct {
	Method   AuthMethod
	Username string     // the authenticated peer (server) or our user (client)
	PeerMRU  int        // largest packet we may send
	MRU      int        // largest packet the peer may send us
	Local    netip.Addr // our IPCP address
	Peer     netip.Addr // the peer's IPCP address
	DNS      [2]netip.Addr
	NBNS     [2]netip.Addr
	// IPv6 is true once IPV6CP opened; LocalID and PeerID are the
	// negotiated interface identifiers (PeerID zero if the peer sent none).
	IPv6            bool
	LocalID, PeerID IfaceID
}
