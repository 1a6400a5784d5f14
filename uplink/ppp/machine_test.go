package ppp

import (
	"context"
	"errors"
	"math/rand/v2"
	"net/netip"
	"testing"
	"time"
)

type mpair struct {
	t        *testing.T
	now      time.Time
	cli, srv *machine
	toSrv    [][]byte
	toCli    [][]byte
	drop     func(toSrv bool, f []byte) bool
	cs, ss   Stats
	upC, upS int
	downC    []error
	downS    []error
}

func addr(s string) netip.Addr { return netip.MustParseAddr(s) }

func assign(context.Context, string) (Assignment, error) {
	return Assignment{Addr: addr("10.10.8.17"), DNS: [2]netip.Addr{addr("10.0.0.53"), addr("10.0.0.54")}}, nil
}

func newMPair(t *testing.T, cli, srv Config) *mpair {
	p := &mpair{t: t, now: time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)}
	cli.Role, srv.Role = Client, Server
	cli.Stats, srv.Stats = &p.cs, &p.ss
	if srv.Authenticator == nil {
		srv.Authenticator = LocalUsers{"site1": "pw1"}
	}
	if srv.AssignAddress == nil {
		srv.AssignAddress = assign
	}
	if !srv.LocalAddr.IsValid() {
		srv.LocalAddr = addr("10.10.0.1")
	}
	if cli.Username == "" {
		cli.Username, cli.Password = "site1", "pw1"
	}
	cli.setDefaults()
	srv.setDefaults()
	p.cli = newMachine(&cli, func(f []byte) { p.toSrv = append(p.toSrv, f) }, p.now)
	p.srv = newMachine(&srv, func(f []byte) { p.toCli = append(p.toCli, f) }, p.now)
	p.cli.onUp = func(Info) { p.upC++ }
	p.srv.onUp = func(Info) { p.upS++ }
	p.cli.onDown = func(err error) { p.downC = append(p.downC, err) }
	p.srv.onDown = func(err error) { p.downS = append(p.downS, err) }
	return p
}

func (p *mpair) flush() {
	for i := 0; i < 200 && (len(p.toSrv) > 0 || len(p.toCli) > 0); i++ {
		a, b := p.toSrv, p.toCli
		p.toSrv, p.toCli = nil, nil
		for _, f := range a {
			if p.drop == nil || !p.drop(true, f) {
				p.srv.Input(p.now, f)
			}
		}
		for _, f := range b {
			if p.drop == nil || !p.drop(false, f) {
				p.cli.Input(p.now, f)
			}
		}
	}
}

func (p *mpair) advance(d time.Duration) {
	p.now = p.now.Add(d)
	p.cli.Tick(p.now)
	p.srv.Tick(p.now)
	p.flush()
}

func (p *mpair) start() {
	p.cli.Start(p.now)
	p.srv.Start(p.now)
	p.flush()
}

func TestMachineMethods(t *testing.T) {
	tests := []struct {
		name    string
		cli     []AuthMethod
		srv     []AuthMethod
		want    AuthMethod
		wantErr error
	}{
		{"MS-CHAPv2", nil, nil, AuthMSCHAPv2, nil},
		{"CHAP-MD5 by Nak", []AuthMethod{AuthCHAPMD5}, nil, AuthCHAPMD5, nil},
		{"PAP when the server allows it", []AuthMethod{AuthPAP}, []AuthMethod{AuthMSCHAPv2, AuthPAP}, AuthPAP, nil},
		{"PAP refused by default", []AuthMethod{AuthPAP}, nil, AuthNone, ErrAuthRejected},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p := newMPair(t, Config{Methods: tt.cli}, Config{Methods: tt.srv})
			p.start()
			for i := 0; i < 5 && p.upC == 0 && len(p.downC)+len(p.downS) == 0; i++ {
				p.advance(time.Second)
			}
			if tt.wantErr != nil {
				for i := 0; i < 40 && len(p.downS) == 0; i++ {
					p.advance(time.Second)
				}
				if p.upC+p.upS != 0 || len(p.downS) != 1 || !errors.Is(p.downS[0], tt.wantErr) {
					t.Fatalf("got up %d/%d down %v, want failure %v", p.upC, p.upS, p.downS, tt.wantErr)
				}
				return
			}
			if p.upC != 1 || p.upS != 1 {
				t.Fatalf("IPCP up: client %d server %d (client %v %v, server %v %v)", p.upC, p.upS,
					p.cli.lcpF.state, p.cli.ipcpF.state, p.srv.lcpF.state, p.srv.ipcpF.state)
			}
			ci, si := p.cli.info, p.srv.info
			if ci.Method != tt.want || si.Method != tt.want {
				t.Errorf("method: client %v server %v, want %v", ci.Method, si.Method, tt.want)
			}
			if ci.Local != addr("10.10.8.17") || ci.Peer != addr("10.10.0.1") || ci.DNS[0] != addr("10.0.0.53") || ci.DNS[1] != addr("10.0.0.54") {
				t.Errorf("client info: %+v", ci)
			}
			if si.Peer != addr("10.10.8.17") || si.Username != "site1" {
				t.Errorf("server info: %+v", si)
			}
			if ci.PeerMRU != DefaultMRU || si.PeerMRU != DefaultMRU {
				t.Errorf("MRU: %d/%d, want %d", ci.PeerMRU, si.PeerMRU, DefaultMRU)
			}
			if p.ss.AuthSuccesses.Load() != 1 || p.cs.AuthSuccesses.Load() != 1 {
				t.Errorf("auth successes: %d/%d", p.cs.AuthSuccesses.Load(), p.ss.AuthSuccesses.Load())
			}
			// Clean close from the client: Terminate acknowledged, both down.
			p.cli.fail(ErrClosed)
			p.flush()
			p.advance(DefaultRestart)
			if len(p.downC) != 1 || !errors.Is(p.downC[0], ErrClosed) || len(p.downS) != 1 || !errors.Is(p.downS[0], ErrPeerTerminated) {
				t.Fatalf("down: client %v server %v", p.downC, p.downS)
			}
		})
	}
}

func TestMachineWrongPassword(t *testing.T) {
	for _, m := range []AuthMethod{AuthMSCHAPv2, AuthCHAPMD5, AuthPAP} {
		t.Run(m.String(), func(t *testing.T) {
			p := newMPair(t, Config{Methods: []AuthMethod{m}, Username: "site1", Password: "wrong"}, Config{Methods: []AuthMethod{m}})
			p.start()
			for i := 0; i < 10; i++ {
				p.advance(time.Second)
			}
			if p.upC+p.upS != 0 || len(p.downC) != 1 || !errors.Is(p.downC[0], ErrAuthFailed) {
				t.Fatalf("got up %d/%d, client down %v", p.upC, p.upS, p.downC)
			}
			if p.ss.AuthFailures.Load() != 1 {
				t.Errorf("server auth failures: %d", p.ss.AuthFailures.Load())
			}
		})
	}
}

// A server whose MS-CHAPv2 Success does not prove knowledge of the
// password is refused by the client (mutual authentication, RFC 2759 §5).
func TestMachineBadAuthenticatorResponse(t *testing.T) {
	p := newMPair(t, Config{}, Config{Authenticator: authFunc(func(req *AuthRequest) AuthResult {
		return AuthResult{Accept: true, AuthenticatorResponse: "S=0000000000000000000000000000000000000000"}
	})})
	p.start()
	p.advance(time.Second)
	if p.upC != 0 || len(p.downC) != 1 || !errors.Is(p.downC[0], ErrBadServerAuth) {
		t.Fatalf("client up %d down %v", p.upC, p.downC)
	}
}

type authFunc func(*AuthRequest) AuthResult

func (f authFunc) Authenticate(_ context.Context, r *AuthRequest) (AuthResult, error) {
	return f(r), nil
}

func TestMachineLossy(t *testing.T) {
	for seed := uint64(1); seed <= 30; seed++ {
		p := newMPair(t, Config{}, Config{})
		rng := rand.New(rand.NewPCG(seed, 2))
		p.drop = func(bool, []byte) bool { return rng.IntN(100) < 20 }
		p.start()
		for i := 0; i < 60 && (p.upC == 0 || p.upS == 0); i++ {
			p.advance(time.Second)
		}
		// Up may be reported twice: a lost Ack makes RFC 1661 renegotiate.
		if p.upC == 0 || p.upS == 0 {
			t.Fatalf("seed %d: up %d/%d with 20%% of frames lost: client %v/%v/%v server %v/%v/%v down %v %v", seed, p.upC, p.upS,
				p.cli.phase, p.cli.lcpF.state, p.cli.ipcpF.state, p.srv.phase, p.srv.lcpF.state, p.srv.ipcpF.state, p.downC, p.downS)
		}
	}
}

func TestMachineEchoTimeout(t *testing.T) {
	p := newMPair(t, Config{EchoInterval: 10 * time.Second, EchoFailures: 3}, Config{})
	p.start()
	p.advance(time.Second)
	if p.upC != 1 {
		t.Fatal("not up")
	}
	// Echo answered: stays up.
	for i := 0; i < 10; i++ {
		p.advance(10 * time.Second)
	}
	if len(p.downC) != 0 || p.cs.EchoRequestsSent.Load() < 5 {
		t.Fatalf("down %v, echoes %d", p.downC, p.cs.EchoRequestsSent.Load())
	}
	// Server vanishes: after 3 unanswered echoes the client gives up.
	p.drop = func(toSrv bool, _ []byte) bool { return toSrv }
	for i := 0; i < 8; i++ {
		p.advance(10 * time.Second)
	}
	if len(p.downC) != 1 || !errors.Is(p.downC[0], ErrEchoTimeout) || p.cs.EchoTimeouts.Load() != 1 {
		t.Fatalf("client down %v", p.downC)
	}
}

func TestMachineRejectsIPV6CPAndCCP(t *testing.T) {
	p := newMPair(t, Config{}, Config{})
	p.start()
	p.advance(time.Second)
	for _, proto := range []uint16{ProtoIPV6CP, ProtoCCP, ProtoECP} {
		p.srv.Input(p.now, AppendPacket(nil, proto, Packet{Code: CodeConfReq, ID: 1, Data: []byte{1, 10, 0, 0, 0, 0, 0, 0, 0, 1}}))
		if len(p.toCli) != 1 {
			t.Fatalf("proto %#x: %d replies", proto, len(p.toCli))
		}
		pr, info, _ := ParseFrame(p.toCli[0])
		pk, _ := ParsePacket(info)
		if pr != ProtoLCP || pk.Code != CodeProtoRej || uint16(pk.Data[0])<<8|uint16(pk.Data[1]) != proto {
			t.Fatalf("proto %#x: got %#x code %d", proto, pr, pk.Code)
		}
		p.flush()
	}
	if p.ss.ProtocolRejectSent.Load() != 3 || p.upC != 1 || len(p.downC) != 0 {
		t.Fatalf("rejects %d, link up %d down %v", p.ss.ProtocolRejectSent.Load(), p.upC, p.downC)
	}
}

// SoftEther-like server behaviour: EAP offered first, the client's Nak
// suggestion ignored, Magic-Number rejected, PAP Ack without Msg-Length.
func TestMachineSoftEtherQuirks(t *testing.T) {
	now := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	var st Stats
	cfg := Config{Role: Client, Username: "u", Password: "p", Methods: []AuthMethod{AuthPAP}, Stats: &st}
	cfg.setDefaults()
	var out [][]byte
	m := newMachine(&cfg, func(f []byte) { out = append(out, f) }, now)
	up := 0
	m.onUp = func(Info) { up++ }
	m.Start(now)
	last := func() Packet {
		for i := len(out) - 1; i >= 0; i-- {
			if pr, info, _ := ParseFrame(out[i]); pr == ProtoLCP {
				p, _ := ParsePacket(info)
				return p
			}
		}
		return Packet{}
	}
	req := last()
	// Server rejects our Magic-Number.
	opts, _ := ParseOptions(req.Data)
	var rej []byte
	for _, o := range opts {
		if o.Type == lcpOptMagic {
			rej = AppendOption(rej, o.Type, o.Data)
		}
	}
	m.Input(now, AppendPacket(nil, ProtoLCP, Packet{Code: CodeConfRej, ID: req.ID, Data: rej}))
	req = last()
	if req.Code != CodeConfReq || len(req.Data) != 4 {
		t.Fatalf("after Magic reject: code %d options %x, want MRU only", req.Code, req.Data)
	}
	m.Input(now, AppendPacket(nil, ProtoLCP, Packet{Code: CodeConfAck, ID: req.ID, Data: req.Data}))
	// Server asks for EAP: we Nak; then MS-CHAPv2 (not allowed here): Nak; then PAP: Ack.
	for i, auth := range [][]byte{{0xc2, 0x27}, {0xc2, 0x23, 0x81}, {0xc0, 0x23}} {
		m.Input(now, AppendPacket(nil, ProtoLCP, Packet{Code: CodeConfReq, ID: byte(10 + i), Data: AppendOption(nil, lcpOptAuth, auth)}))
		want := CodeConfNak
		if i == 2 {
			want = CodeConfAck
		}
		if got := last().Code; got != want {
			t.Fatalf("auth %x: got code %d, want %d", auth, got, want)
		}
	}
	pap := last2(t, out)
	if pap.Code != papAuthReq {
		t.Fatalf("no PAP request after LCP opened: %+v", pap)
	}
	m.Input(now, AppendPacket(nil, ProtoPAP, Packet{Code: papAuthAck, ID: pap.ID}))
	if st.PAPAckNoMsgLen.Load() != 1 || m.phase != phaseNetwork {
		t.Fatalf("PAP Ack without Msg-Length: counted %d, phase %v", st.PAPAckNoMsgLen.Load(), m.phase)
	}
}

func last2(t *testing.T, out [][]byte) Packet {
	t.Helper()
	for i := len(out) - 1; i >= 0; i-- {
		pr, info, _ := ParseFrame(out[i])
		if pr == ProtoPAP {
			p, _ := ParsePacket(info)
			return p
		}
	}
	t.Fatal("no PAP frame sent")
	return Packet{}
}
