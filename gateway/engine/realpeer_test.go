package engine_test

import (
	"fmt"
	"net"
	"net/netip"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/fleetgate/fleetgate/gateway/engine"
	"github.com/fleetgate/fleetgate/internal/netns"
	"github.com/fleetgate/fleetgate/internal/realpeer"
	"github.com/fleetgate/fleetgate/internal/testenv"
	"github.com/fleetgate/fleetgate/uplink/peerid"
)

// listenIn binds a UDP socket inside host h.
func listenIn(t *testing.T, h *netns.Host, addr string) net.PacketConn {
	t.Helper()
	c, err := h.ListenPacket("udp4", addr)
	if err != nil {
		t.Fatalf("listen in %s on %s: %v", h.Name, addr, err)
	}
	return c
}

// charonConn is charon's IKEv1 transport-mode L2TP connection to the
// gateway (udp/1701 selectors, RFC 3193 §5), initiated at start.
func charonConn(local, remote, ikeProp, auth, localID, remoteID, extra string) string {
	return fmt.Sprintf(`connections {
  fg {
    version = 1
    local_addrs = %s
    remote_addrs = %s
    proposals = %s
    dpd_delay = 0
    local { auth = %s
      id = %s
      %s }
    remote { auth = %s
      id = %s }
    children {
      l2tp {
        mode = transport
        local_ts = dynamic[udp/1701]
        remote_ts = dynamic[udp/1701]
        esp_proposals = aes128-sha1
        start_action = start
      }
    }
  }
}
`, local, remote, ikeProp, auth, localID, extra, auth, remoteID)
}

// TestCharonInitiator: strongSwan charon, as a stock IKEv1 initiator in
// its own namespace, completes Main Mode and Quick Mode against the
// gateway daemon (PSK and ECDSA certificates); charon then fails to
// install the SA (no kernel ESP here), which its log shows after it
// processed our Quick Mode answer.
func TestCharonInitiator(t *testing.T) {
	testenv.RequireRoot(t)
	testenv.RequireBinary(t, "charon")
	auths := []string{"psk", "pubkey", "pubkey-sha1"}
	for _, auth := range auths {
		t.Run(auth, func(t *testing.T) {
			sha1 := auth == "pubkey-sha1"
			if sha1 {
				auth = "pubkey"
			}
			p := netns.Pair(t)
			gw, peer := p.Host("a"), p.Host("b")
			// "pubkey" negotiates a SHA-256 prf, "pubkey-sha1" a SHA-1 prf:
			// with ECDSA P-256 both sides compute HASH_I/HASH_R with
			// HMAC-SHA-256 anyway (RFC 4754 §7).
			ikeProp := "aes128-sha1-modp2048"
			if auth == "pubkey" && !sha1 {
				ikeProp = "aes128-sha256-modp2048"
			}
			extra := "proposals: {ike: [" + ikeProp + "], esp: [aes128-sha1]}\n"
			// send_vendor_id: charon then names itself in Main Mode, which
			// the gateway's fingerprint recognises (peerid.StrongSwan).
			cc := realpeer.CharonConfig{Charon: "send_vendor_id = yes"}
			idGW, idPeer, certLine := gw.Addr.String(), peer.Addr.String(), ""
			want := []string{"IKE_SA fg[1] established", "selected proposal: ESP:AES_CBC_128/HMAC_SHA1_96", "unable to install"}
			if auth == "psk" {
				cc.Swanctl = fmt.Sprintf("secrets { ike-fg { secret = %q\n id-a = %s\n id-b = %s } }\n", testPSK, idGW, idPeer)
			} else {
				pki := realpeer.NewPKI(t, "gateway engine CA")
				gwCert, siteCert := pki.Issue(t, "gw.fleet.example"), pki.Issue(t, "site1.fleet.example")
				dir := t.TempDir()
				certPath, keyPath := gwCert.WriteFiles(t, dir, "gw")
				extra += fmt.Sprintf("pki: {ca: %s, cert: %s, key: %s}\n", filepath.Join(pki.Dir, "ca.pem"), certPath, keyPath)
				extra = "  - {name: site1, auth: cert, id: site1.fleet.example, ppp: {password: pw1}}\n" + extra
				cc.Files = pki.CharonFiles("site1", siteCert)
				idGW, idPeer, certLine = `"`+gwCert.DN+`"`, `"`+siteCert.DN+`"`, "certs = site1.pem"
				want = append(want, "authentication of '"+gwCert.DN+"' with ECDSA")
			}
			cfg := parseConfig(t, extra)
			g := startGateway(t, cfg, engine.Config{
				IKEConn:  listenIn(t, gw, gw.Addr.String()+":500"),
				NATTConn: listenIn(t, gw, gw.Addr.String()+":4500"),
			})
			cc.Swanctl += charonConn(peer.Addr.String(), gw.Addr.String(), ikeProp, auth, idPeer, idGW, certLine)
			ch := realpeer.StartCharon(t, peer, cc)
			log := ch.WaitLog(t, 20*time.Second, want...)
			_ = log
			st := g.eng.Tunnel().Stats().IKE
			if n := st.Phase1Established.Load(); n != 1 {
				t.Fatalf("gateway phase 1 established: got %d, want 1", n)
			}
			if n := st.Phase1ByPeer.Load(peerid.StrongSwan); n != 1 {
				t.Fatalf("phase 1 SAs recognised as strongswan: got %d, want 1 (unknown: %d)", n, st.Phase1ByPeer.Load(peerid.Unknown))
			}
			t.Logf("gateway IKE: phase1 %d, phase2 %d, auth failures %d", st.Phase1Established.Load(), st.Phase2Established.Load(), st.AuthFailures.Load())
		})
	}
}

// TestXL2TPDRawL2TP: xl2tpd as a stock LAC reaches an established L2TP
// tunnel and session on the raw L2TP listener (pppd cannot run here, so
// PPP never starts).
func TestXL2TPDRawL2TP(t *testing.T) {
	testenv.RequireRoot(t)
	testenv.RequireBinary(t, "xl2tpd")
	p := netns.Pair(t)
	gw, peer := p.Host("a"), p.Host("b")
	raw := listenIn(t, gw, gw.Addr.String()+":1701")
	g := startGateway(t, parseConfig(t, ""), engine.Config{RawL2TPConn: raw})
	lns := netip.AddrPortFrom(gw.Addr, 1701)
	if got := g.eng.RawL2TPAddr(); got != lns {
		t.Fatalf("raw L2TP listener on %v, want %v", got, lns)
	}
	x := realpeer.StartXL2TPD(t, peer, realpeer.XL2TPDConfig{LNS: lns})
	x.WaitOutput(t, 20*time.Second, "Connection established to "+gw.Addr.String(), "Call established with "+gw.Addr.String())
	waitFor(t, "raw L2TP session counted", func() bool { return g.eng.Stats().RawL2TPSessions.Load() == 1 })
	if n := g.eng.RawL2TPStats().SessionsEstablished.Load(); n != 1 {
		t.Fatalf("raw L2TP sessions established: got %d, want 1", n)
	}
	// Fingerprint: xl2tpd's Vendor-Name AVP ("xelerance.com").
	if n := g.eng.RawL2TPStats().PeersByKind.Load(peerid.XL2TPD); n != 1 {
		t.Fatalf("L2TP peers recognised as xl2tpd: got %d, want 1 (unknown: %d)", n, g.eng.RawL2TPStats().PeersByKind.Load(peerid.Unknown))
	}
}

// TestRADIUSCallingStationID: a client logs in through the whole stack
// (IKE, ESP, L2TP, PPP) as a user only a real FreeRADIUS knows; the
// Access-Request FreeRADIUS received (its -X log) carries the client's
// outer IP:port as Calling-Station-Id and NAS-Port-Type Virtual, and the
// accounting Start in its detail file carries the same Calling-Station-Id.
func TestRADIUSCallingStationID(t *testing.T) {
	fr := realpeer.StartFreeRADIUS(t, nil, realpeer.FreeRADIUSConfig{Users: []realpeer.RADIUSUser{{Name: "site-r", Password: "rpw"}}})
	cfg := parseConfig(t, fmt.Sprintf("radius: {auth: %q, acct: %q, secret: %q}\n", fr.Auth, fr.Acct, fr.Secret))
	g := startGateway(t, cfg, engine.Config{})
	tn, _ := dial(t, g.clientConfig("site-r", "rpw"))
	env := g.srv.Env()
	waitFor(t, "site-r registered", func() bool { return env.Sessions.ByIdentity("site-r") != nil })
	sess, ok := env.Sessions.ByIdentity("site-r").(interface{ OuterAddr() netip.AddrPort })
	if !ok {
		t.Fatal("session does not describe its outer address")
	}
	outer := sess.OuterAddr()
	if !outer.IsValid() || outer.Port() == 0 {
		t.Fatalf("outer address %v", outer)
	}
	want := fmt.Sprintf("Calling-Station-Id = %q", outer.String())
	// FreeRADIUS's debug output reaches us through a pipe and may lag the
	// Accept the session came up with: wait for the reply line.
	waitFor(t, "FreeRADIUS's Access-Accept in its log", func() bool { return strings.Contains(fr.Log(), "Sent Access-Accept") })
	log := fr.Log()
	at := strings.Index(log, "Received Access-Request")
	if at < 0 {
		t.Fatalf("FreeRADIUS received no Access-Request:\n%s", log)
	}
	req := log[at:]
	if i := strings.Index(req, "Sent Access-Accept"); i > 0 {
		req = req[:i]
	}
	for _, w := range []string{want, "NAS-Port-Type = Virtual", `User-Name = "site-r"`} {
		if !strings.Contains(req, w) {
			t.Errorf("Access-Request lacks %s:\n%s", w, req)
		}
	}
	waitFor(t, "accounting Start", func() bool { return strings.Contains(fr.Detail(), "Acct-Status-Type = Start") })
	if d := fr.Detail(); !strings.Contains(d, want) {
		t.Errorf("accounting lacks %s:\n%s", want, d)
	}
	t.Logf("client %v (VPN %v): %s", outer, tn.LocalAddr(), want)
}

// TestCharonInitiatorIPv6: charon negotiates Main Mode and Quick Mode
// (IKEv1, transport mode, PSK) with the gateway over an IPv6-only outer
// network (2001:db8::/64, no IPv4 address on the link): IKE on UDP 500,
// then NAT-T on 4500 (forced encapsulation, as every fleetgate site uses),
// NAT-D hashed over 16-byte addresses, ID_IPV6_ADDR identities. charon
// then fails only to install the SA in the kernel (no ESP module here).
func TestCharonInitiatorIPv6(t *testing.T) {
	testenv.RequireRoot(t)
	testenv.RequireBinary(t, "charon")
	p := netns.Pair6(t)
	gw, peer := p.Host("a"), p.Host("b")
	ikeProp := "aes128-sha256-modp2048"
	cfg := parseConfig(t, "proposals: {ike: ["+ikeProp+"], esp: [aes128-sha1]}\n")
	listen6 := func(port string) net.PacketConn {
		c, err := gw.ListenPacket("udp6", "["+gw.Addr.String()+"]:"+port)
		if err != nil {
			t.Fatalf("listen in %s: %v", gw.Name, err)
		}
		return c
	}
	g := startGateway(t, cfg, engine.Config{IKEConn: listen6("500"), NATTConn: listen6("4500")})
	var cc realpeer.CharonConfig
	cc.Swanctl = fmt.Sprintf("secrets { ike-fg { secret = %q\n id-a = %s\n id-b = %s } }\n", testPSK, gw.Addr, peer.Addr)
	cc.Swanctl += charonConn(peer.Addr.String(), gw.Addr.String(), ikeProp, "psk", peer.Addr.String(), gw.Addr.String(), "")
	cc.Swanctl = strings.Replace(cc.Swanctl, "dpd_delay = 0", "dpd_delay = 0\n    encap = yes", 1)
	ch := realpeer.StartCharon(t, peer, cc)
	ch.WaitLog(t, 20*time.Second, "IKE_SA fg[1] established", "selected proposal: ESP:AES_CBC_128/HMAC_SHA1_96", "unable to install")
	st := g.eng.Tunnel().Stats().IKE
	if n := st.Phase1Established.Load(); n != 1 {
		t.Fatalf("gateway phase 1 established: got %d, want 1", n)
	}
	// charon answered our Quick Mode (it chose our ESP proposal) and
	// failed only at the kernel (no ESP module here), before its QM3: the
	// gateway's phase 2 counter stays 0, as in TestCharonInitiator. The
	// exchange ran on the IPv6 NAT-T port:
	if want := "from " + peer.Addr.String() + "[4500] to " + gw.Addr.String() + "[4500]"; !strings.Contains(ch.Log(), want) {
		t.Fatalf("charon log has no %q", want)
	}
}
