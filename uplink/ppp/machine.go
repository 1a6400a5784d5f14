package ppp

import (
	"context"
	"encoding/binary"
	"encoding/hex"
	"io"
	"log/slog"
	"strings"
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

	ipOpen bool
	info   Info
	err    error
	onUp   func(Info)
	onDown func(error)
	onIP   func(open bool, peerMRU int)
}

func newMachine(cfg *Config, send func([]byte), now time.Time) *machine {
	m := &machine{cfg: cfg, log: cfg.Logger, stats: cfg.Stats, send: send, now: now}
	m.lcpH = &lcp{m: m}
	m.ipcpH = &ipcp{m: m}
	m.lcpH.init()
	m.ipcpH.init()
	mk := func(proto uint16, h optionHandler) *fsm {
		return &fsm{proto: proto, h: h, send: m.sendPacket, restartT: cfg.Restart,
			maxConf: cfg.MaxConfigure, maxTerm: cfg.MaxTerminate, maxFail: cfg.MaxFailure, now: now}
	}
	m.lcpF = mk(ProtoLCP, m.lcpH)
	m.ipcpF = mk(ProtoIPCP, m.ipcpH)
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
	switch proto {
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
		// Delivered by the Conn's fast path; here only before IPCP opened.
		m.stats.PacketsDropped.Add(1)
	default:
		// IPV6CP, CCP, ECP, IPv6 and anything else (RFC 1661 §5.7).
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
	if m.lcpF.state == StateOpened && !m.echoAt.IsZero() && !now.Before(m.echoAt) {
		if m.echoOutstanding >= m.cfg.EchoFailures {
			m.stats.EchoTimeouts.Add(1)
			m.log.Warn("LCP echo unanswered", "failures", m.echoOutstanding)
			m.fail(ErrEchoTimeout)
			return
		}
		m.echoOutstanding++
		m.echoID++
		m.stats.EchoRequestsSent.Add(1)
		m.sendPacket(ProtoLCP, Packet{Code: CodeEchoReq, ID: m.echoID, Data: binary.BigEndian.AppendUint32(nil, m.lcpH.ourMagic())})
		m.echoAt = now.Add(m.cfg.EchoInterval)
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
	}
	if m.phase == phaseAuth {
		at(m.authDeadline)
		at(m.authAt)
	}
	if m.lcpF.state == StateOpened {
		at(m.echoAt)
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
	m.phase = phaseDead
	if m.err == nil {
		m.err = m.lcpF.lastError
		if m.err == nil {
			m.err = ErrNegotiation
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

// --- authentication ---

func (m *machine) authRetransmit() {
	m.authTries++
	if m.authTries >= m.cfg.MaxConfigure {
		m.fail(ErrAuthTimeout)
		return
	}
	switch {
	case m.cfg.Role == Server:
		m.sendChallenge()
	case m.lcpH.method == AuthPAP:
		m.sendPAPRequest()
	case m.lastResp != nil:
		// Our CHAP Response or the Success was lost: the authenticator
		// answers a repeated Response with its verdict again.
		m.send(m.lastResp)
		m.authAt = m.now.Add(m.cfg.Restart)
	}
}

func (m *machine) sendChallenge() {
	if m.authTries == 0 || m.challenge == nil {
		m.authID++
		m.challenge = make([]byte, 16)
		if _, err := io.ReadFull(m.cfg.Rand, m.challenge); err != nil {
			m.fail(err)
			return
		}
	}
	d := append([]byte{byte(len(m.challenge))}, m.challenge...)
	d = append(d, m.cfg.Name...)
	m.sendPacket(ProtoCHAP, Packet{Code: chapChal, ID: m.authID, Data: d})
	m.authAt = m.now.Add(m.cfg.Restart)
}

func (m *machine) sendPAPRequest() {
	if m.authTries == 0 {
		m.authID++
	}
	d := append([]byte{byte(len(m.cfg.Username))}, m.cfg.Username...)
	d = append(d, byte(len(m.cfg.Password)))
	d = append(d, m.cfg.Password...)
	m.sendPacket(ProtoPAP, Packet{Code: papAuthReq, ID: m.authID, Data: d})
	m.authAt = m.now.Add(m.cfg.Restart)
}

// papInput handles PAP (RFC 1334 §2.2) in either role.
func (m *machine) papInput(p Packet) {
	if m.lcpH.method != AuthPAP || m.lcpF.state != StateOpened {
		return
	}
	if m.cfg.Role == Server {
		if p.Code != papAuthReq {
			return
		}
		if m.phase != phaseAuth {
			if m.lastReply != nil {
				m.send(m.lastReply) // our Ack was lost
			}
			return
		}
		if m.authPending {
			return
		}
		d := p.Data
		if len(d) < 1 || len(d) < 1+int(d[0])+1 || len(d) < 2+int(d[0])+int(d[1+int(d[0])]) {
			m.stats.MalformedDropped.Add(1)
			return
		}
		user := string(d[1 : 1+d[0]])
		pw := d[2+int(d[0]) : 2+int(d[0])+int(d[1+int(d[0])])]
		m.authID = p.ID
		m.user = user
		m.authPending = true
		m.startAuth(&AuthRequest{Method: AuthPAP, Username: user, Password: append([]byte(nil), pw...), ID: p.ID})
		return
	}
	if m.phase != phaseAuth || p.ID != m.authID {
		return
	}
	switch p.Code {
	case papAuthAck:
		if len(p.Data) == 0 {
			m.stats.PAPAckNoMsgLen.Add(1) // SoftEther omits Msg-Length
		}
		m.authOK()
	case papAuthNak:
		m.authFail()
	}
}

// chapInput handles CHAP (RFC 1994 §4) with MD5 or MS-CHAPv2 (RFC 2759).
func (m *machine) chapInput(p Packet) {
	meth := m.lcpH.method
	if (meth != AuthCHAPMD5 && meth != AuthMSCHAPv2) || m.lcpF.state != StateOpened {
		return
	}
	if m.cfg.Role == Server {
		if p.Code != chapResp {
			return
		}
		if m.phase != phaseAuth {
			if m.lastReply != nil && p.ID == m.authID {
				m.send(m.lastReply)
			}
			return
		}
		if p.ID != m.authID || m.authPending {
			return
		}
		d := p.Data
		if len(d) < 1 || len(d) < 1+int(d[0]) {
			m.stats.MalformedDropped.Add(1)
			return
		}
		val, name := d[1:1+d[0]], string(d[1+d[0]:])
		req := &AuthRequest{Method: meth, Username: name, ID: p.ID, Challenge: append([]byte(nil), m.challenge...)}
		if meth == AuthCHAPMD5 {
			if len(val) != 16 {
				m.stats.MalformedDropped.Add(1)
				return
			}
			req.Response = append([]byte(nil), val...)
		} else {
			if len(val) != 49 {
				m.stats.MalformedDropped.Add(1)
				return
			}
			req.PeerChallenge = append([]byte(nil), val[:16]...)
			req.Response = append([]byte(nil), val[24:48]...)
		}
		m.user = name
		m.authPending = true
		m.authAt = time.Time{}
		m.startAuth(req)
		return
	}
	switch p.Code {
	case chapChal:
		if m.phase != phaseAuth {
			return
		}
		d := p.Data
		if len(d) < 1 || len(d) < 1+int(d[0]) {
			m.stats.MalformedDropped.Add(1)
			return
		}
		chal := d[1 : 1+d[0]]
		if m.lastResp != nil && p.ID == m.authID && string(chal) == string(m.lastChal) {
			m.send(m.lastResp) // a retransmitted Challenge: same answer
			return
		}
		m.lastChal = append(m.lastChal[:0], chal...)
		var val []byte
		if meth == AuthCHAPMD5 {
			val = CHAPMD5Response(p.ID, []byte(m.cfg.Password), chal)
		} else {
			if len(chal) != 16 {
				m.stats.MalformedDropped.Add(1)
				return
			}
			peer := make([]byte, 16)
			if _, err := io.ReadFull(m.cfg.Rand, peer); err != nil {
				m.fail(err)
				return
			}
			nt := MSCHAPv2NTResponse(chal, peer, m.cfg.Username, m.cfg.Password)
			m.expectS = MSCHAPv2AuthenticatorResponse(ntPasswordHash(m.cfg.Password), nt, peer, chal, m.cfg.Username)
			val = append(append(append(peer, make([]byte, 8)...), nt...), 0)
		}
		m.authID = p.ID
		r := append([]byte{byte(len(val))}, val...)
		r = append(r, m.cfg.Username...)
		m.lastResp = AppendPacket(nil, ProtoCHAP, Packet{Code: chapResp, ID: p.ID, Data: r})
		m.send(m.lastResp)
		m.authAt = m.now.Add(m.cfg.Restart)
	case chapSuccess:
		if m.phase != phaseAuth || p.ID != m.authID {
			return
		}
		if meth == AuthMSCHAPv2 {
			msg := string(p.Data)
			i := strings.Index(msg, "S=")
			if i < 0 || len(msg) < i+42 || !strings.EqualFold(msg[i:i+42], m.expectS) {
				m.stats.AuthFailures.Add(1)
				m.fail(ErrBadServerAuth)
				return
			}
		}
		m.authOK()
	case chapFailure:
		if m.phase == phaseAuth && p.ID == m.authID {
			m.authFail()
		}
	}
}

func (m *machine) authOK() {
	m.stats.AuthSuccesses.Add(1)
	m.log.Info("authenticated", "auth", m.lcpH.method)
	m.network()
}

func (m *machine) authFail() {
	m.stats.AuthFailures.Add(1)
	m.log.Warn("authentication failed", "auth", m.lcpH.method)
	m.fail(ErrAuthFailed)
}

// authInline is the default startAuth for the pure core: it calls the
// Authenticator and address callback synchronously.
func (m *machine) authInline(req *AuthRequest) {
	res, asg, err := runAuth(context.Background(), m.cfg, req)
	m.authResult(res, asg, err)
}

// runAuth asks the Authenticator and, on accept, the address callback.
func runAuth(ctx context.Context, cfg *Config, req *AuthRequest) (AuthResult, Assignment, error) {
	if cfg.Authenticator == nil {
		return AuthResult{Message: "no authenticator"}, Assignment{}, nil
	}
	res, err := cfg.Authenticator.Authenticate(ctx, req)
	if err != nil || !res.Accept {
		return res, Assignment{}, err
	}
	if cfg.AssignAddress == nil {
		return res, Assignment{}, ErrNoAddress
	}
	asg, err := cfg.AssignAddress(ctx, req.Username)
	if err == nil && !asg.Addr.Is4() {
		err = ErrNoAddress
	}
	return res, asg, err
}

// authResult applies the Authenticator's verdict (server).
func (m *machine) authResult(res AuthResult, asg Assignment, err error) {
	m.authPending = false
	if m.phase != phaseAuth {
		return
	}
	ok := err == nil && res.Accept
	meth := m.lcpH.method
	var frame []byte
	switch meth {
	case AuthPAP:
		code := papAuthNak
		if ok {
			code = papAuthAck
		}
		msg := res.Message
		frame = AppendPacket(nil, ProtoPAP, Packet{Code: code, ID: m.authID, Data: append([]byte{byte(len(msg))}, msg...)})
	case AuthCHAPMD5, AuthMSCHAPv2:
		code := chapFailure
		msg := res.Message
		if ok {
			code = chapSuccess
			if meth == AuthMSCHAPv2 {
				msg = res.AuthenticatorResponse + " M=" + res.Message
			}
		} else if meth == AuthMSCHAPv2 {
			msg = "E=691 R=0 C=" + strings.ToUpper(hex.EncodeToString(m.challenge)) + " V=3 M=" + res.Message
		}
		frame = AppendPacket(nil, ProtoCHAP, Packet{Code: code, ID: m.authID, Data: []byte(msg)})
	}
	m.lastReply = frame
	m.send(frame)
	if !ok {
		if err != nil {
			m.log.Warn("authenticator error", "user", m.user, "err", err)
		}
		m.authFail()
		return
	}
	if meth == AuthMSCHAPv2 && res.AuthenticatorResponse == "" {
		m.log.Error("MS-CHAPv2 accept without authenticator response", "user", m.user)
	}
	m.ipcpH.assign = asg
	m.ipcpH.peer = asg.Addr
	m.authOK()
}
