package ike

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/netip"
	"runtime"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/fleetgate/fleetgate/uplink/peerid"

	"github.com/fleetgate/fleetgate/internal/srcaddr"
	"github.com/fleetgate/fleetgate/uplink/clock"
	"github.com/fleetgate/fleetgate/uplink/esp"
)

// Role says which side of an exchange we are.
type Role uint8

const (
	// RoleInitiator started the exchange (the edge bridge dialling).
	RoleInitiator Role = iota + 1
	// RoleResponder answers (the gateway).
	RoleResponder
)

// String names the role.
func (r Role) String() string {
	if r == RoleInitiator {
		return "initiator"
	}
	return "responder"
}

// Sender carries IKE datagrams. natt means: from/to the NAT-T port with the
// 4-byte non-ESP marker, which the transport adds (RFC 3948 §2.2).
type Sender interface {
	SendIKE(b []byte, local, remote netip.AddrPort, natt bool) error
}

// Identity is what a peer proved in phase 1: its ID payload and, in
// signature mode, its verified certificate.
type Identity struct {
	ID   Identification
	Cert *x509.Certificate
}

// Selectors are the Quick Mode traffic selectors (RFC 2409 §5.5 IDci/IDcr)
// as negotiated, from our point of view.
type Selectors struct {
	Protocol   uint8
	Local      netip.Prefix
	LocalPort  uint16 // 0 = any
	Remote     netip.Prefix
	RemotePort uint16 // 0 = any
}

// ChildSA is an IPsec SA pair ready to install (RFC 2409 §5.5).
type ChildSA struct {
	Suite       esp.Suite
	InSPI       uint32 // SPI the peer puts on packets to us
	OutSPI      uint32 // SPI we put on packets to the peer
	InKey       []byte // KEYMAT for InSPI, Suite.KeymatLen() bytes
	OutKey      []byte // KEYMAT for OutSPI
	Local       netip.AddrPort
	Remote      netip.AddrPort
	Encap       bool       // UDP-encapsulated (RFC 3948)
	NATOALocal  netip.Addr // our original address as the peer learnt it (NAT-OA), if any
	NATOARemote netip.Addr // the peer's original address (NAT-OA), if any
	Selectors   Selectors
	Lifetime    time.Duration
	LifeKB      uint64
	Peer        Identity
	// PeerKind is the implementation the peer's Main Mode vendor IDs
	// name (peerid.FromVendorIDs; "" or unknown when none does).
	PeerKind     peerid.Kind
	Role         Role // who initiated the Quick Mode
	Established  time.Time
	PFS          Group
	ikeCookies   [16]byte
	rekeyStarted bool
	expires      time.Time
}

// Stats are the engine's counters.
type Stats struct {
	// Phase1ByPeer counts established phase 1 SAs by the implementation
	// the peer's vendor IDs name (peerid.FromVendorIDs; most stacks send
	// none that does: unknown).
	Phase1ByPeer      peerid.Counts
	Received          atomic.Uint64 // datagrams given to Input
	Malformed         atomic.Uint64 // dropped: failed to parse
	Unmatched         atomic.Uint64 // dropped: no SA for the cookies
	Duplicates        atomic.Uint64 // retransmissions from the peer (answered with ours)
	Retransmits       atomic.Uint64 // our retransmissions on timeout
	RateLimited       atomic.Uint64 // dropped before DH work by the per-source limit
	HalfOpenDropped   atomic.Uint64 // proven MM3 dropped by the MaxNegotiating limit
	HalfOpenEvicted   atomic.Uint64 // oldest half-open Main Mode evicted for a new one (table full)
	HalfOpenExpired   atomic.Uint64 // half-open Main Modes never answered within HalfOpenTTL
	HalfOpenLost      atomic.Uint64 // MM3 with a valid cookie whose half-open state was already evicted or expired
	SourceSALimited   atomic.Uint64 // proven MM3 dropped: its address already holds MaxSAsPerSource responder SAs
	CryptoQueueFull   atomic.Uint64 // responder MM3/MM5 dropped: MaxCryptoQueue key-exchange jobs already waiting (offload.go)
	CryptoOffloaded   atomic.Uint64 // responder key-exchange jobs run off the engine's lock
	CryptoStale       atomic.Uint64 // of those, results discarded: the SA ended (timeout, teardown, Close) while they ran
	QuickModeLimited  atomic.Uint64 // peer's new Quick Mode dropped: MaxQuickModes or MaxChildren reached on its SA
	AuthFailures      atomic.Uint64 // wrong PSK / signature / certificate / identity
	NoProposalChosen  atomic.Uint64 // Main Mode: proposals outside policy (ours or the peer's refusal)
	QuickNoProposal   atomic.Uint64 // Quick Mode: ESP proposals outside policy (ours or the peer's refusal)
	Phase1Established atomic.Uint64
	Phase2Established atomic.Uint64
	Phase1Failed      atomic.Uint64
	Phase2Failed      atomic.Uint64
	Rekeys            atomic.Uint64 // child and IKE SA rekeys completed (IKE SA: ours, or the peer's new Main Mode without INITIAL-CONTACT)
	ChildRekeys       atomic.Uint64 // of Rekeys, those of IPsec SAs (Quick Mode); the rest are IKE SAs
	DPDSent           atomic.Uint64
	DeadPeers         atomic.Uint64
	NotifiesSent      atomic.Uint64
	NotifiesReceived  atomic.Uint64
	DeletesReceived   atomic.Uint64

	// Identity checks of the responder (gateway).
	KeyNotBound           atomic.Uint64 // of AuthFailures: the PSK that verified is not the one bound to the ID presented
	InitialContactIgnored atomic.Uint64 // INITIAL-CONTACT from a peer whose ID is not bound to its key
}

// Engine runs IKEv1 for every peer over one Sender. All protocol state is
// owned by the engine's lock: Input, Tick and Dial serialise on it, and
// sends and events are flushed after it is released.
type Engine struct {
	cfg   Config
	log   *slog.Logger
	stats Stats

	flushMu sync.Mutex // orders delivery of sends/events across calls

	mu sync.Mutex
	// Owned by mu:
	sas     map[[16]byte]*ikeSA // by ICookie|RCookie
	pending map[[8]byte]*ikeSA  // ours as initiator before the responder cookie, and responders by ICookie
	buckets map[netip.Addr]*bucket
	out     []outPacket
	evs     []Event
	closed  bool
	warnAt  time.Time
	nHalf   int // responder SAs past MM3, not yet established
	half    halfOpenTable
	// perSource counts responder SAs past MM3 by peer address (MaxSAsPerSource).
	perSource map[netip.Addr]int
	secret    cookieSecret

	initiatorVIDs [][]byte // tests: vendor IDs our Main Mode announces
	testHookWork  func()   // tests: runs at the start of every offloaded job, off the lock

	pool workPool // responder key-exchange work (offload.go); not owned by mu

	// Refusal log limiter (refusal.go).
	refused    map[netip.Addr]time.Time
	refusedSec time.Time
	refusedN   int
}

type outPacket struct {
	b             []byte
	local, remote netip.AddrPort
	natt          bool
}

// New validates cfg and returns an engine.
func New(cfg Config) (*Engine, error) {
	if cfg.Sender == nil {
		return nil, errors.New("ike: Config.Sender is required")
	}
	if cfg.Clock == nil {
		cfg.Clock = clock.System
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	if cfg.Rand == nil {
		cfg.Rand = rand.Reader
	}
	if cfg.PSK == nil && cfg.Cert == nil {
		return nil, errors.New("ike: need Config.PSK or Config.Cert")
	}
	if cfg.Cert != nil && cfg.CAs == nil {
		return nil, errors.New("ike: signature mode needs Config.CAs")
	}
	var err error
	if cfg.IKEProposals, cfg.ESPProposals, err = checkProposals(cfg.IKEProposals, cfg.ESPProposals); err != nil {
		return nil, err
	}
	def := func(d *time.Duration, v time.Duration) {
		if *d == 0 {
			*d = v
		}
	}
	def(&cfg.IKELifetime, DefaultIKELifetime)
	def(&cfg.IPsecLifetime, DefaultIPsecLifetime)
	def(&cfg.RekeyMargin, DefaultRekeyMargin)
	def(&cfg.RekeyGrace, 30*time.Second)
	def(&cfg.DPDInterval, DefaultDPDInterval)
	def(&cfg.DPDTimeout, DefaultDPDTimeout)
	def(&cfg.Retransmit, DefaultRetransmit)
	def(&cfg.HalfOpenTTL, DefaultHalfOpenTimeout)
	if cfg.Retries == 0 {
		cfg.Retries = DefaultRetries
	}
	if cfg.MaxHalfOpen == 0 {
		cfg.MaxHalfOpen = DefaultMaxHalfOpen
	}
	if cfg.MaxNegotiating == 0 {
		cfg.MaxNegotiating = DefaultMaxNegotiating
	}
	if cfg.MaxSAsPerSource == 0 {
		cfg.MaxSAsPerSource = DefaultMaxSAsPerSource
	}
	if cfg.MaxQuickModes == 0 {
		cfg.MaxQuickModes = DefaultMaxQuickModes
	}
	if cfg.MaxChildren == 0 {
		cfg.MaxChildren = DefaultMaxChildren
	}
	if cfg.CryptoWorkers == 0 {
		cfg.CryptoWorkers = runtime.GOMAXPROCS(0)
	}
	if cfg.MaxCryptoQueue <= 0 {
		cfg.MaxCryptoQueue = cfg.MaxNegotiating
	}
	if cfg.RatePerSource == 0 {
		cfg.RatePerSource = 5
	}
	if cfg.BurstPerSource == 0 {
		cfg.BurstPerSource = 10
	}
	if cfg.NATTPort == 0 {
		cfg.NATTPort = nattPort
	}
	return &Engine{
		cfg: cfg, log: cfg.Logger, pool: workPool{max: max(cfg.CryptoWorkers, 1), cap: cfg.MaxCryptoQueue},
		sas: map[[16]byte]*ikeSA{}, pending: map[[8]byte]*ikeSA{}, buckets: map[netip.Addr]*bucket{},
		perSource: map[netip.Addr]int{}, refused: map[netip.Addr]time.Time{},
	}, nil
}

// checkProposals fills empty lists with the defaults and refuses what the
// engine cannot run.
func checkProposals(ikes []IKEProposal, esps []ESPProposal) ([]IKEProposal, []ESPProposal, error) {
	if len(ikes) == 0 {
		ikes = DefaultIKEProposals()
	}
	if len(esps) == 0 {
		esps = DefaultESPProposals()
	}
	for _, p := range ikes {
		if !p.Group.Supported() || p.Hash.New() == nil {
			return nil, nil, fmt.Errorf("ike: unsupported IKE proposal %v", p)
		}
	}
	for _, p := range esps {
		if err := p.Suite.Validate(); err != nil || (p.PFS != GroupNone && !p.PFS.Supported()) {
			return nil, nil, fmt.Errorf("ike: unsupported ESP proposal %v", p)
		}
	}
	return ikes, esps, nil
}

// SetProposals replaces the IKE and ESP proposals (a configuration
// reload): new Main Modes and Quick Modes, ours and the peer's, use them at
// once; SAs already up keep what they negotiated. Empty lists take the
// defaults.
func (e *Engine) SetProposals(ikes []IKEProposal, esps []ESPProposal) error {
	ikes, esps, err := checkProposals(slices.Clone(ikes), slices.Clone(esps))
	if err != nil {
		return err
	}
	e.mu.Lock()
	e.cfg.IKEProposals, e.cfg.ESPProposals = ikes, esps
	e.mu.Unlock()
	return nil
}

// Stats returns the engine's counters.
func (e *Engine) Stats() *Stats { return &e.stats }

// Input processes one IKE datagram (non-ESP marker already stripped when
// natt is set). It never blocks on the network: replies are handed to the
// Sender after the engine's lock is released.
func (e *Engine) Input(b []byte, local, remote netip.AddrPort, natt bool) {
	e.stats.Received.Add(1)
	e.mu.Lock()
	if !e.closed {
		e.input(b, local, remote, natt)
	}
	e.unlockAndFlush()
}

// Tick runs timers: retransmission, half-open expiry, DPD, rekey and
// lifetime expiry. Run calls it; tests call it after advancing a fake clock.
func (e *Engine) Tick() {
	e.mu.Lock()
	if !e.closed {
		now := e.cfg.Clock.Now()
		e.tickHalfOpen(now)
		for _, sa := range e.allSAs() {
			sa.tick(now)
		}
	}
	e.unlockAndFlush()
}

// Run calls Tick every interval (default one second) until ctx is done.
func (e *Engine) Run(ctx context.Context, interval time.Duration) {
	if interval <= 0 {
		interval = time.Second
	}
	t := e.cfg.Clock.NewTimer(interval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C():
			e.Tick()
			t.Reset(interval)
		}
	}
}

// Dial starts Main Mode to remote from local and, once it is up, a Quick
// Mode for L2TP (UDP/1701 on both sides, RFC 3193 §5). Progress is
// reported through OnEvent.
func (e *Engine) Dial(local, remote netip.AddrPort) error {
	e.mu.Lock()
	var err error
	if e.closed {
		err = ErrClosed
	} else {
		_, err = e.startMainMode(local, remote, nil)
	}
	e.unlockAndFlush()
	return err
}

// Close deletes every SA (sending Delete payloads) and stops the engine.
func (e *Engine) Close() {
	e.mu.Lock()
	if !e.closed {
		for _, sa := range e.allSAs() {
			sa.teardown(ErrClosed, true)
		}
		e.closed = true
	}
	e.unlockAndFlush()
}

// SACount reports established and half-open phase 1 SAs.
func (e *Engine) SACount() int {
	e.mu.Lock()
	defer e.mu.Unlock()
	return len(e.allSAs()) + e.half.len()
}

// HalfOpen reports responder Main Modes waiting for their third message
// (bounded by MaxHalfOpen) and those past it, not yet established
// (bounded by MaxNegotiating).
func (e *Engine) HalfOpen() (waiting, negotiating int) {
	e.mu.Lock()
	defer e.mu.Unlock()
	return e.half.len(), e.nHalf
}

func (e *Engine) allSAs() []*ikeSA {
	seen := map[*ikeSA]bool{}
	var out []*ikeSA
	for _, sa := range e.sas {
		if !seen[sa] {
			seen[sa] = true
			out = append(out, sa)
		}
	}
	for _, sa := range e.pending {
		if !seen[sa] {
			seen[sa] = true
			out = append(out, sa)
		}
	}
	return out
}

func (e *Engine) unlockAndFlush() {
	out, evs := e.out, e.evs
	e.out, e.evs = nil, nil
	// Take flushMu before releasing mu so deliveries keep their order.
	e.flushMu.Lock()
	e.mu.Unlock()
	defer e.flushMu.Unlock()
	// EventChildInbound is delivered before the packets go out: it offers
	// the inbound SA for a Quick Mode whose HASH(2) (responder) or HASH(3)
	// (initiator) is in this batch, and the peer may send ESP on that SA
	// the moment it has that message. Delivered after the send, the first
	// ESP packet could beat the install and be dropped as unknown SPI.
	if e.cfg.OnEvent != nil {
		for _, ev := range evs {
			if ev.Kind == EventChildInbound {
				e.cfg.OnEvent(ev)
			}
		}
	}
	for _, p := range out {
		if err := e.cfg.Sender.SendIKE(p.b, p.local, p.remote, p.natt); err != nil {
			e.log.Debug("send failed", "peer", p.remote, "err", err)
		}
	}
	if e.cfg.OnEvent != nil {
		for _, ev := range evs {
			if ev.Kind != EventChildInbound {
				e.cfg.OnEvent(ev)
			}
		}
	}
}

func (e *Engine) send(b []byte, local, remote netip.AddrPort, natt bool) {
	e.out = append(e.out, outPacket{b: b, local: local, remote: remote, natt: natt})
}

func (e *Engine) emit(ev Event) { e.evs = append(e.evs, ev) }

// warn logs peer misbehaviour at most once a second (STYLE §6).
func (e *Engine) warn(msg string, args ...any) {
	now := e.cfg.Clock.Now()
	if now.Sub(e.warnAt) < time.Second {
		e.log.Debug(msg, args...)
		return
	}
	e.warnAt = now
	e.log.Warn(msg, args...)
}

// bucket is a token bucket limiting new phase 1 work per source address.
type bucket struct {
	tokens float64
	last   time.Time
}

// allow takes a token for src; it is checked before any DH computation.
func (e *Engine) allow(src netip.Addr) bool {
	src = srcaddr.Key(src) // an IPv6 peer's bucket is its /64's
	now := e.cfg.Clock.Now()
	b := e.buckets[src]
	if b == nil {
		if len(e.buckets) > 4*e.cfg.MaxHalfOpen {
			// Forget full buckets so the map stays bounded under a spoofed flood.
			for a, ob := range e.buckets {
				if now.Sub(ob.last).Seconds()*e.cfg.RatePerSource >= float64(e.cfg.BurstPerSource) {
					delete(e.buckets, a)
				}
			}
		}
		b = &bucket{tokens: float64(e.cfg.BurstPerSource), last: now}
		e.buckets[src] = b
	}
	b.tokens += now.Sub(b.last).Seconds() * e.cfg.RatePerSource
	if b.tokens > float64(e.cfg.BurstPerSource) {
		b.tokens = float64(e.cfg.BurstPerSource)
	}
	b.last = now
	if b.tokens < 1 {
		return false
	}
	b.tokens--
	return true
}

// NoteTraffic tells the engine that authenticated traffic (ESP) arrived
// from remote, so dead peer detection stays quiet while data flows (RFC
// 3706 §5.5: DPD is only needed when idle).
func (e *Engine) NoteTraffic(remote netip.Addr) {
	e.mu.Lock()
	defer e.mu.Unlock()
	now := e.cfg.Clock.Now()
	for _, sa := range e.sas {
		if sa.state == p1Established && sa.remote.Addr() == remote {
			sa.lastHeard = now
		}
	}
}

// RekeyChild starts a Quick Mode replacing the child with inbound SPI
// inSPI now, e.g. when ESP reaches the volume lifetime (LifeKB) or its
// sequence number nears overflow (RFC 4303 §3.3.3). It reports whether the
// child was found.
func (e *Engine) RekeyChild(inSPI uint32) bool {
	e.mu.Lock()
	found := false
	for _, sa := range e.allSAs() {
		for _, c := range sa.children {
			if c.InSPI == inSPI && sa.state == p1Established {
				found = true
				if !c.rekeyStarted {
					if err := sa.startQuickMode(c); err != nil {
						sa.log.Warn("phase 2 rekey not started", "err", err)
					}
				}
			}
		}
	}
	e.unlockAndFlush()
	return found
}

// Hangup deletes every SA with remote (ISAKMP and IPsec, telling the peer)
// and reports the children down.
func (e *Engine) Hangup(remote netip.Addr) {
	e.mu.Lock()
	for _, sa := range e.allSAs() {
		if sa.remote.Addr() == remote {
			sa.teardown(errors.New("ike: hung up locally"), true)
		}
	}
	e.unlockAndFlush()
}

// HangupChild deletes, telling the peer, the ISAKMP SA owning the IPsec
// SA with inbound SPI inSPI and every other SA of that peer (same outer
// address and port and same ID: not another site behind the same NAT),
// e.g. after the peer failed PPP authentication over it. Their children
// go down with why. It reports whether the child was found.
func (e *Engine) HangupChild(inSPI uint32, why error) bool {
	e.mu.Lock()
	var owner *ikeSA
	for _, sa := range e.allSAs() {
		for _, c := range sa.children {
			if c.InSPI == inSPI {
				owner = sa
			}
		}
	}
	if owner != nil {
		for _, sa := range e.allSAs() {
			if sa == owner || (sa.state == p1Established && sa.remote == owner.remote &&
				sa.peer.ID.Type == owner.peer.ID.Type && bytes.Equal(sa.peer.ID.Data, owner.peer.ID.Data)) {
				sa.teardown(why, true)
			}
		}
	}
	e.unlockAndFlush()
	return owner != nil
}

func (e *Engine) random(n int) []byte {
	b := make([]byte, n)
	if _, err := io.ReadFull(e.cfg.Rand, b); err != nil {
		panic("ike: random source failed: " + err.Error())
	}
	return b
}
