package l2tp

import (
	"crypto/rand"
	"io"
	"log/slog"
	"net"
	"time"

	"github.com/fleetgate/fleetgate/uplink/clock"
)

// Config configures an Endpoint. The zero value works: defaults are filled
// in by Listen, Dial and NewEndpoint.
type Config struct {
	// Role is LAC or LNS; Listen and Dial set it.
	Role Role
	// HostName is sent in the Host Name AVP (default "fleetgate").
	HostName string
	// VendorName is sent in the Vendor Name AVP when set.
	VendorName string
	// Secret enables tunnel authentication (Challenge/Challenge Response,
	// §4.2) and lets hidden AVPs be decoded (§4.3). Never logged.
	Secret []byte
	// ReceiveWindow is our advertised Receive Window Size.
	ReceiveWindow uint16
	// RetransmitInitial, RetransmitCap and MaxRetransmits shape control
	// retransmission (§5.8): the timeout doubles from Initial up to Cap,
	// and after MaxRetransmits unanswered retransmissions the tunnel is torn down.
	RetransmitInitial time.Duration
	RetransmitCap     time.Duration
	MaxRetransmits    int
	// HelloInterval is the idle time after which a HELLO is sent (§6.5).
	HelloInterval time.Duration
	// SetupTimeout bounds tunnel and session establishment.
	SetupTimeout time.Duration
	// Linger is how long a closed tunnel re-acknowledges a peer's StopCCN.
	Linger time.Duration
	// MaxTunnels bounds the tunnels of one Endpoint; MaxHalfOpenPerPeer
	// bounds tunnels not yet established per transport address; MaxSessions
	// bounds sessions per tunnel.
	MaxTunnels         int
	MaxHalfOpenPerPeer int
	MaxSessions        int
	// AdmitTunnel, when set (LNS), is asked before a new tunnel is made
	// for a peer's SCCRQ; false refuses it (SCCRQRefused). OnTunnel, when
	// set, gets every tunnel made for an SCCRQ (e.g. to cap tunnels per
	// peer and close those that never carry an authenticated session).
	// Both run on the endpoint's reader goroutine and must not block.
	AdmitTunnel func(peer net.Addr) bool
	OnTunnel    func(t *Tunnel)
	// AcceptQueue is the number of established LNS sessions waiting for
	// Accept (default 64); further ones are closed with CDN.
	AcceptQueue int
	// Clock drives timers (default clock.System).
	Clock clock.Clock
	// Logger receives lifecycle and warning lines (default: discard).
	Logger *slog.Logger
	// Stats receives counters (default: a private Stats).
	Stats *Stats
	// Rand supplies IDs, challenges and random vectors (default crypto/rand).
	Rand io.Reader
}

func (c *Config) setDefaults() {
	if c.HostName == "" {
		c.HostName = "fleetgate"
	}
	if c.ReceiveWindow == 0 {
		c.ReceiveWindow = DefaultReceiveWindow
	}
	if c.RetransmitInitial <= 0 {
		c.RetransmitInitial = DefaultRetransmitInitial
	}
	if c.RetransmitCap <= 0 {
		c.RetransmitCap = DefaultRetransmitCap
	}
	if c.MaxRetransmits <= 0 {
		c.MaxRetransmits = DefaultMaxRetransmits
	}
	if c.HelloInterval <= 0 {
		c.HelloInterval = DefaultHelloInterval
	}
	if c.SetupTimeout <= 0 {
		c.SetupTimeout = DefaultSetupTimeout
	}
	if c.Linger <= 0 {
		c.Linger = DefaultLinger
	}
	if c.MaxTunnels <= 0 {
		c.MaxTunnels = DefaultMaxTunnels
	}
	if c.MaxHalfOpenPerPeer <= 0 {
		c.MaxHalfOpenPerPeer = DefaultMaxHalfOpenPerPeer
	}
	if c.MaxSessions <= 0 {
		c.MaxSessions = DefaultMaxSessions
	}
	if c.AcceptQueue <= 0 {
		c.AcceptQueue = 64
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
