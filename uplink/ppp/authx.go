package ppp

import (
	"context"
	"encoding/hex"
	"io"
	"strings"
	"time"
)

// This file is the authentication phase (RFC 1661 §3.4) of the machine:
// PAP (RFC 1334 §2), CHAP with MD5 (RFC 1994 §4) and MS-CHAPv2 (RFC 2759)
// in both roles.

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
	if asg.IPv6 {
		m.ipv6cpH.enabled, m.ipv6cpH.suggest = true, asg.IfaceID
	}
	m.ipcpH.peer = asg.Addr
	m.authOK()
}
