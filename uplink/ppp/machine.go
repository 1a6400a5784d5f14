package ppp

import (
	"encoding/binary"
	"fmt"
	"log/slog"
	"time"
)

// phase is the link phase (RFC 1661 §3.2).
type phase uint8

const (
	phaseEstablish phase = iota // LCP negotiating
	phaseAuth                   // LCP opened, authenticating
	phaseNetwork                // IPCP negotiating or opened
	phaseDead                   // finished; nothing more happens
)

// machine is one PPP link's pure protocol state: LCP and IPCP automata,
// the authentication exchange and echo keepalive. Driven by Input and
// Tick; control packets leave through send. Owned by one goroutine.
type machine struct {
	cfg   *Config
	log   *slog.Logger
	stats *Stats
	send  func(frame []byte)
	now   time.Time
	phase phase

	lcpF, ipcpF *fsm
	lcpH        *lcp
	ipcpH       *ipcp
	ipv6cpF     *fsm
	ipv6cpH     *ipv6cp

	// authentication
	authDeadline time.Time
	authAt       time.Time // retransmission of our challenge or PAP request
	authTries    int
	authID       byte
	challenge    []byte // server: our CHAP challenge
	authPending  bool   // server: waiting for the Authenticator
	lastReply    []byte // server: last Success/Failure/Ack frame, resent on duplicates
	expectS      string // client: expected MS-CHAPv2 authenticator response
	lastResp     []byte // client: our last CHAP Response frame
	lastChal     []byte // client: the challenge it answered
	user         string
	// startAuth hands a request to the Authenticator; the verdict comes
	// back through authResult on the owner goroutine.
	startAuth func(req *AuthRequest)

	// keepalive
	echoAt          time.Time
	echoOutstanding int
	echoID          byte
	// on-demand probing (probe.go)
	probeAt        time.Time
	probing        bool
	sentUnanswered func() time.Time

	ipOpen bool
	info   Info
	err    error
	onUp   func(Info)
	onDown func(error)
	onIP   func(open bool, peerMRU int)
	onIPv4 func(info []byte, ipOpen bool)
	onIP6  func(open bool, info Info)
}

func newMachine(cfg *Config, send func([]byte), now time.Time) *machine {
	m := &machine{cfg: cfg, log: cfg.Logger, stats: cfg.Stats, send: send, now: now}
	m.lcpH = &lcp{m: m}
	m.ipcpH = &ipcp{m: m}
	m.ipv6cpH = &ipv6cp{m: m}
	m.lcpH.init()
	m.ipcpH.init()
	m.ipv6cpH.init()
	mk := func(proto uint16, h optionHandler) *fsm {
		return &fsm{proto: proto, h: h, send: m.sendPacket, restartT: cfg.Restart,
			maxConf: cfg.MaxConfigure, maxTerm: cfg.MaxTerminate, maxFail: cfg.MaxFailure, now: now}
	}
	m.lcpF = mk(ProtoLCP, m.lcpH)
	m.ipcpF = mk(ProtoIPCP, m.ipcpH)
	m.ipv6cpF = mk(ProtoIPV6CP, m.ipv6cpH)
	m.startAuth = m.authInline
	if cfg.Role == Client {
		m.user = cfg.Username
	}
	return m
}

// Start brings LCP up and opens it (RFC 1661 §3.2: the lower layer, the
// L2TP session, is already up).
func (m *machine) Start(now time.Time) {
	m.now = now
	m.lcpF.now = now
	m.lcpF.Open()
	m.lcpF.Up()
}

func (m *machine) sendPacket(proto uint16, p Packet) {
	if p.Code == CodeCodeRej {
		m.stats.CodeRejectSent.Add(1)
	}
	m.send(AppendPacket(make([]byte, 0, 8+len(p.Data)), proto, p))
}

// Input handles one control frame.
func (m *machine) Input(now time.Time, frame []byte) {
	m.now = now
	if m.phase == phaseDead {
		return
	}
	proto, info, err := ParseFrame(frame)
	if err != nil {
		m.stats.MalformedDropped.Add(1)
		return
	}
	if (proto == ProtoIPV6CP || proto == ProtoIPv6) && !m.ipv6cpH.enabled {
		proto = 0 // not offered on this link: Protocol-Reject below
	}
	switch proto {
	case ProtoIPV6CP:
		p, err := ParsePacket(info)
		if err != nil {
			m.stats.MalformedDropped.Add(1)
			return
		}
		if m.phase == phaseNetwork { // else silently discarded (RFC 1661 §3.5)
			m.ipv6cpF.now = now
			m.ipv6cpF.Input(now, p)
		}
	case ProtoIPv6:
		// The Conn delivers IPv6 itself once IPV6CP is open.
		m.stats.PacketsDropped.Add(1)
	case ProtoLCP, ProtoIPCP, ProtoPAP, ProtoCHAP:
		p, err := ParsePacket(info)
		if err != nil {
			m.stats.MalformedDropped.Add(1)
			return
		}
		switch proto {
		case ProtoLCP:
			m.lcpF.Input(now, p)
		case ProtoIPCP:
			if m.phase == phaseNetwork {
				m.ipcpF.now = now
				m.ipcpF.Input(now, p)
			}
		case ProtoPAP:
			m.papInput(p)
		case ProtoCHAP:
			m.chapInput(p)
		}
	case ProtoIPv4:
		// Delivered by the Conn's fast path once IPCP is open; here when
		// it was queued behind control frames (Conn.Input).
		if m.onIPv4 != nil {
			m.onIPv4(info, m.ipOpen)
		} else {
			m.stats.PacketsDropped.Add(1)
		}
	default:
		// IPV6CP and IPv6 when not offered, CCP, ECP and anything else
		// (RFC 1661 §5.7).
		if proto == 0 {
			proto, _, _ = ParseFrame(frame)
		}
		if m.lcpF.state == StateOpened {
			m.stats.ProtocolRejectSent.Add(1)
			d := binary.BigEndian.AppendUint16(nil, proto)
			d = append(d, info[:min(len(info), m.lcpH.peerMRU-6)]...)
			m.lcpF.id++
			m.sendPacket(ProtoLCP, Packet{Code: CodeProtoRej, ID: m.lcpF.id, Data: d})
		}
	}
}

// Tick runs timers.
func (m *machine) Tick(now time.Time) {
	m.now = now
	if m.phase == phaseDead {
		return
	}
	m.lcpF.Tick(now)
	if m.phase == phaseNetwork {
		m.ipcpF.Tick(now)
		if m.ipv6cpH.enabled {
			m.ipv6cpF.Tick(now)
		}
	}
	if m.phase == phaseAuth {
		if !now.Before(m.authDeadline) {
			m.fail(ErrAuthTimeout)
			return
		}
		if !m.authAt.IsZero() && !now.Before(m.authAt) {
			m.authRetransmit()
		}
	}
	m.checkProbe(now)
	if m.lcpF.state == StateOpened && !m.echoAt.IsZero() && !now.Before(m.echoAt) {
		if m.echoOutstanding >= m.cfg.EchoFailures {
			m.stats.EchoTimeouts.Add(1)
			m.log.Warn("LCP echo unanswered", "failures", m.echoOutstanding)
			m.fail(ErrEchoTimeout)
			// The peer is gone: one Terminate-Request as a courtesy, but
			// no waiting out its retransmissions (2 × Restart) for an Ack.
			m.LowerDown()
			return
		}
		m.echoOutstanding++
		m.echoID++
		m.stats.EchoRequestsSent.Add(1)
		m.sendPacket(ProtoLCP, Packet{Code: CodeEchoReq, ID: m.echoID, Data: binary.BigEndian.AppendUint32(nil, m.lcpH.ourMagic())})
		m.echoAt = now.Add(m.echoInterval())
	}
}

// NextDeadline returns when Tick must next run.
func (m *machine) NextDeadline() time.Time {
	var d time.Time
	at := func(t time.Time) {
		if !t.IsZero() && (d.IsZero() || t.Before(d)) {
			d = t
		}
	}
	if m.phase == phaseDead {
		return d
	}
	at(m.lcpF.deadline)
	if m.phase == phaseNetwork {
		at(m.ipcpF.deadline)
		at(m.ipv6cpF.deadline)
	}
	if m.phase == phaseAuth {
		at(m.authDeadline)
		at(m.authAt)
	}
	if m.lcpF.state == StateOpened {
		at(m.echoAt)
		at(m.probeAt)
	}
	return d
}

// fail closes the link with err (LCP Terminate, RFC 1661 §3.7).
func (m *machine) fail(err error) {
	if m.err == nil {
		m.err = err
		m.log.Info("closing PPP link", "reason", err)
	}
	if m.phase == phaseNetwork {
		m.ipcpF.Close()
		if m.ipv6cpH.enabled {
			m.ipv6cpF.Close()
		}
	}
	m.lcpF.Close()
	if m.lcpF.state == StateInitial || m.lcpF.state == StateClosed || m.lcpF.state == StateStopped {
		m.lcpFinished()
	}
}

// LowerDown is the L2TP session going away: the link ends at once.
func (m *machine) LowerDown() {
	if m.err == nil {
		m.err = ErrLinkDown
		if m.lcpH.refusedAuth && m.phase == phaseEstablish {
			m.err = fmt.Errorf("%w: %w", ErrLinkDown, ErrAuthMethodRefused)
		}
	}
	m.lcpF.Down()
	m.lcpFinished()
}

func (m *machine) lcpUp() {
	m.echoAt = m.now.Add(m.cfg.EchoInterval)
	m.echoOutstanding = 0
	m.phase = phaseAuth
	m.authDeadline = m.now.Add(m.cfg.AuthTimeout)
	m.info.Method = m.lcpH.method
	m.info.MRU = m.lcpH.mru
	if !m.lcpH.sendMRU {
		m.info.MRU = defaultPeerMRU
	}
	m.info.PeerMRU = m.lcpH.peerMRU
	m.log.Debug("LCP opened", "auth", m.lcpH.method, "peer_mru", m.lcpH.peerMRU)
	switch {
	case m.lcpH.method == AuthNone:
		m.network()
	case m.cfg.Role == Server && m.lcpH.method != AuthPAP:
		m.authTries = 0
		m.sendChallenge()
	case m.cfg.Role == Client && m.lcpH.method == AuthPAP:
		m.authTries = 0
		m.sendPAPRequest()
	}
}

func (m *machine) lcpDown() {
	if m.phase == phaseNetwork {
		m.ipcpF.Down()
		m.ipv6cpF.Down()
	}
	m.setIP(false)
	if m.phase != phaseDead {
		m.phase = phaseEstablish
	}
}

func (m *machine) lcpFinished() {
	if m.phase == phaseDead {
		return
	}
	m.setIP(false)
	m.ipv6cpDown()
	m.phase = phaseDead
	if m.err == nil {
		m.err = m.lcpF.lastError
		if m.err == nil {
			m.err = ErrNegotiation
		}
		if m.lcpH.refusedAuth && m.phase == phaseEstablish {
			m.err = fmt.Errorf("%w: %w", m.err, ErrAuthMethodRefused)
		}
	}
	m.stats.LinksDown.Add(1)
	m.log.Info("PPP link down", "reason", m.err)
	if m.onDown != nil {
		m.onDown(m.err)
	}
}

// network enters the network phase (RFC 1661 §3.5) and starts IPCP.
func (m *machine) network() {
	m.phase = phaseNetwork
	m.authAt = time.Time{}
	m.ipcpF.now = m.now
	m.ipcpF.Open()
	m.ipcpF.Up()
	if m.ipv6cpH.enabled {
		m.ipv6cpF.now = m.now
		m.ipv6cpF.Open()
		m.ipv6cpF.Up()
	}
}

func (m *machine) ipv6cpUp() {
	m.info.IPv6 = true
	m.info.LocalID, m.info.PeerID = m.ipv6cpH.local, m.ipv6cpH.peer
	m.stats.IPV6CPUp.Add(1)
	m.log.Info("IPV6CP up", "local_id", m.info.LocalID.String(), "peer_id", m.info.PeerID.String())
	if m.onIP6 != nil {
		m.onIP6(true, m.info)
	}
}

func (m *machine) ipv6cpDown() {
	if !m.info.IPv6 {
		return
	}
	m.info.IPv6 = false
	if m.onIP6 != nil {
		m.onIP6(false, m.info)
	}
}

// ipv6cpRejected is the peer's Protocol-Reject of IPV6CP: IPv4 only.
func (m *machine) ipv6cpRejected() {
	if !m.ipv6cpH.enabled {
		return
	}
	m.stats.IPV6CPRejected.Add(1)
	m.log.Info("peer rejected IPV6CP: IPv4 only on this link")
	m.ipv6cpF.rxjMinus()
	m.ipv6cpH.enabled = false
}

func (m *machine) ipcpUp() {
	m.info.Peer = m.ipcpH.peer
	m.info.Local = m.ipcpH.local
	m.info.Username = m.user
	if m.cfg.Role == Client {
		m.info.DNS = m.ipcpH.dns
	} else {
		m.info.DNS = m.ipcpH.assign.DNS
		m.info.NBNS = m.ipcpH.assign.NBNS
	}
	m.stats.LinksUp.Add(1)
	m.log.Info("PPP link up", "local", m.info.Local, "peer", m.info.Peer, "auth", m.info.Method, "peer_mru", m.info.PeerMRU)
	m.setIP(true)
	if m.onUp != nil {
		m.onUp(m.info)
	}
}

func (m *machine) ipcpDown() { m.setIP(false) }

func (m *machine) ipcpFinished() {
	if m.phase != phaseDead && m.err == nil {
		m.fail(ErrNegotiation)
	}
}

func (m *machine) setIP(open bool) {
	if m.ipOpen == open {
		return
	}
	m.ipOpen = open
	if m.onIP != nil {
		m.onIP(open, m.info.PeerMRU)
	}
}

// refuse is the answer to a Configure-Request whose options a protocol
// walked, unless it acks them: options that do not parse (err) are counted
// as malformed and the whole list is rejected; then Configure-Reject of the
// rejected options, then Configure-Nak of the naked ones (RFC 1661 §5.4:
// Reject before Nak). refused false: every option is acceptable.
func (m *machine) refuse(err error, opts, rej, nak []byte) (code byte, reply []byte, refused bool) {
	switch {
	case err != nil:
		m.stats.MalformedDropped.Add(1)
		return CodeConfRej, opts, true
	case len(rej) > 0:
		return CodeConfRej, rej, true
	case len(nak) > 0:
		return CodeConfNak, nak, true
	}
	return 0, nil, false
}
