package suite

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"net"
	"net/netip"
	"runtime"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/fleetgate/fleetgate/gateway/config"
	"github.com/fleetgate/fleetgate/gateway/dataplane"
	"github.com/fleetgate/fleetgate/gateway/engine"
	"github.com/fleetgate/fleetgate/uplink/ike"
)

// AttackRow is one line of BENCHMARKS.md's "Under attack" table (issue 18):
// which daemon, what the attacker does (rate, size, duration), the bound
// the issue sets, what this run measured, and whether the bound held. A
// suite adds rows with Report.attack, in run order; a bound that did not
// hold is printed as such, never dropped. To add a scenario (e.g. the
// bridge's DTLS ClientHello flood), measure it in a suite's run function
// and call rep.attack(AttackRow{...}); Err marks a scenario that could not
// run (a -quick run then fails).
type AttackRow struct {
	Target   string // "gateway" or "bridge"
	Attack   string
	Bound    string
	Measured string
	Held     bool
	Err      string
}

// attack records one row of the "Under attack" table and prints it.
func (r *Report) attack(a AttackRow) {
	r.attacks = append(r.attacks, a)
	state := "held"
	switch {
	case a.Err != "":
		state = "FAILED TO RUN: " + a.Err
	case !a.Held:
		state = "NOT HELD"
	}
	fmt.Fprintf(r.w(), "under attack: %s: %s; bound %s; measured %s: %s\n", a.Target, a.Attack, a.Bound, a.Measured, state)
}

// attackTable renders the "Under attack" section of BENCHMARKS.md.
func attackTable(b *bytes.Buffer, rep *Report) {
	if len(rep.attacks) == 0 {
		return
	}
	b.WriteString("## Under attack\n\n")
	b.WriteString("Bounded attacks on loopback against the daemons (issue 18); each states the bound it must hold. The same scenarios run as tests in `make test` (named in each row).\n\n")
	b.WriteString("| daemon | attack | bound | measured | held |\n|---|---|---|---|---|\n")
	cell := func(s string) string { return strings.ReplaceAll(s, "|", "/") }
	for _, a := range rep.attacks {
		held := "yes"
		switch {
		case a.Err != "":
			held, a.Measured = "did not run", "failed: "+a.Err
		case !a.Held:
			held = "**no**"
		}
		fmt.Fprintf(b, "| %s | %s | %s | %s | %s |\n", cell(a.Target), cell(a.Attack), cell(a.Bound), cell(a.Measured), held)
	}
	b.WriteString("\n")
}

// attackFailures are the rows that could not run.
func (r *Report) attackFailures() []string {
	var f []string
	for _, a := range r.attacks {
		if a.Err != "" {
			f = append(f, fmt.Sprintf("under attack: %s: %s: %s", a.Target, a.Attack, a.Err))
		}
	}
	return f
}

// attackGateway is our gateway with the shipped defaults (pacing, limits:
// nothing lifted, unlike the other suites' gateway), n identities s0..,
// on loopback.
func attackGateway(t testing.TB, n int) *ourGateway {
	return defaultsGateway(t, "attack.yaml", n, "", engine.Config{})
}

// defaultsGateway is our gateway on loopback with the shipped defaults,
// identities s0..s(n-1) (PPP password pw, the shared PSK), extra
// configuration after them, and ecfg for the engine (its sockets and
// logger set here); name names the configuration in errors.
func defaultsGateway(t testing.TB, name string, n int, extra string, ecfg engine.Config) *ourGateway {
	var ids strings.Builder
	for i := range n {
		fmt.Fprintf(&ids, "  - {name: s%d, ppp: {password: pw}}\n", i)
	}
	cfg, err := config.Parse(name, fmt.Appendf(nil, "psk: {shared: %s}\npool: {prefix: 10.10.0.0/16}\nmetrics: {listen: \"off\"}\n"+
		"dataplane: {mode: userspace, addresses: [10.20.0.10/32]}\npolicy: {default: allow}\nidentities:\n%s%s", benchPSK, ids.String(), extra))
	if err != nil {
		t.Fatal(err)
	}
	us, err := dataplane.NewUserspace(dataplane.UserspaceConfig{Addrs: []netip.Prefix{netip.PrefixFrom(central, 32)}})
	if err != nil {
		t.Fatal(err)
	}
	listen := func() net.PacketConn {
		c, err := net.ListenPacket("udp4", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		return c
	}
	ecfg.IKEConn, ecfg.NATTConn, ecfg.Logger = listen(), listen(), quietLog
	return runGateway(t, cfg, engine.New(ecfg), us)
}

// wellFormedMM1 is a first Main Mode message (RFC 2409 §5: HDR, SA) with
// initiator cookie i, offering aes128-sha256-modp2048 with a PSK: one the
// gateway accepts and keeps half-open state for.
func wellFormedMM1(i int) []byte {
	attr := func(t, v uint16) ike.Attribute { return ike.Attribute{Type: t, Basic: true, Value: uint64(v)} }
	sa := ike.SAPayload{DOI: ike.DOIIPsec, Situation: ike.SituationIdentOnly, Proposals: []ike.Proposal{{
		Num: 1, Protocol: ike.ProtoISAKMP, Transforms: []ike.Transform{{Num: 1, ID: ike.TransformKeyIKE,
			Attrs: []ike.Attribute{attr(1, 7), attr(14, 128), attr(2, 4), attr(3, 1), attr(4, 14)}}},
	}}}
	var h ike.Header
	binary.BigEndian.PutUint64(h.ICookie[:], uint64(i+1)<<8|0x5a)
	h.Exchange = ike.ExchangeIdentityProtection
	return ike.AppendMessage(nil, h, []ike.Payload{{Type: ike.PayloadSA, Body: sa.Append(nil)}})
}

// junkMM1 is finding 5's datagram: 28 bytes that look like the header of a
// first Main Mode and carry nothing.
func junkMM1(i int) []byte {
	b := make([]byte, 28)
	binary.BigEndian.PutUint64(b, uint64(i+1)<<8|0xa5)
	b[17], b[18] = 0x10, 2
	binary.BigEndian.PutUint32(b[24:], 28)
	return b
}

// sendAt sends mk(i) to "to" at rate datagrams a second, round-robin over
// conns, until stop closes; it returns how many it sent.
func sendAt(conns []net.PacketConn, to net.Addr, rate int, stop <-chan struct{}, mk func(int) []byte) int {
	tk := time.NewTicker(10 * time.Millisecond)
	defer tk.Stop()
	start, sent := time.Now(), 0
	for {
		select {
		case <-stop:
			return sent
		case <-tk.C:
		}
		for due := int(time.Since(start).Seconds() * float64(rate)); sent < due; sent++ {
			_, _ = conns[sent%len(conns)].WriteTo(mk(sent), to)
		}
	}
}

// attackSetupBound is the bound for a real site's phase 1 during
// an attack (its first IKE retransmission is due then).
const attackSetupBound = 2 * time.Second

// benchAttack measures the gateway's "under attack" rows: a spoofed Main
// Mode flood (finding 1) and junk with a site's own address (finding 5),
// with the shipped defaults.
func benchAttack(o *Options, rep *Report) {
	const floodRate, floodSources = 1000, 512
	_, msg, err := runScoped("attack", func(t testing.TB) {
		g := attackGateway(t, o.AttackSites+1)
		ts := g.eng.Tunnel()
		to := net.UDPAddrFromAddrPort(ts.IKEAddr())
		ist, es := ts.Stats().IKE, g.eng.Stats()

		// Finding 1: spoofed first messages from changing sources.
		var conns []net.PacketConn
		for i := range floodSources {
			c, err := net.ListenPacket("udp4", netip.AddrFrom4([4]byte{127, 1, byte(i >> 8), byte(i)}).String()+":0")
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { _ = c.Close() })
			conns = append(conns, c)
		}
		var before, after runtime.MemStats
		runtime.GC()
		runtime.ReadMemStats(&before)
		admitted0 := es.AdmissionAdmitted.Load()
		stop := make(chan struct{})
		var wg sync.WaitGroup
		var sent int
		wg.Add(1)
		go func() { defer wg.Done(); sent = sendAt(conns, to, floodRate, stop, wellFormedMM1) }()
		t0 := time.Now()
		gap := o.AttackDur / time.Duration(o.AttackSites+1)
		var took []time.Duration
		var failed []string
		for i := range o.AttackSites {
			time.Sleep(time.Until(t0.Add(gap * time.Duration(i+1))))
			cc := clientConfigTo(t, nil, ts.IKEAddr(), ts.NATTAddr().Port(), i, "aes128-sha256-modp2048", "aes128gcm16")
			cc.LocalIKE = fmt.Sprintf("127.0.0.%d:0", 10+i)
			cc.LocalNATT = cc.LocalIKE
			s0 := time.Now()
			tn, err := dialTunnel(cc)
			if err != nil {
				failed = append(failed, fmt.Sprintf("s%d: %v", i, err))
				continue
			}
			took = append(took, time.Since(s0))
			defer tn.Close()
		}
		time.Sleep(time.Until(t0.Add(o.AttackDur)))
		runtime.GC()
		runtime.ReadMemStats(&after)
		close(stop)
		wg.Wait()
		elapsed := time.Since(t0)
		slices.Sort(took)
		heapMB := float64(int64(after.HeapInuse)-int64(before.HeapInuse)) / (1 << 20)
		row := AttackRow{Target: "gateway",
			Attack: fmt.Sprintf("spoofed IKE Main Mode flood: %d well-formed first messages/s from %d changing source addresses for %v (finding 1; TestSpoofedMainModeFlood)",
				floodRate, floodSources, o.AttackDur.Round(time.Second)),
			Bound: fmt.Sprintf("every real site sets up within %v; gateway heap growth < 32 MB (the half-open table is capped by limits.ike_half_open)", attackSetupBound),
		}
		if len(took) > 0 {
			row.Measured = fmt.Sprintf("%d of %d sites up (whole tunnel), median %v, max %v; %d first messages sent in %v, %d half-open evicted, %d admitted by pacing (the sites); heap %+.1f MB",
				len(took), o.AttackSites, took[len(took)/2].Round(time.Millisecond), took[len(took)-1].Round(time.Millisecond),
				sent, elapsed.Round(100*time.Millisecond), ist.HalfOpenEvicted.Load(), es.AdmissionAdmitted.Load()-admitted0, heapMB)
			row.Held = len(failed) == 0 && took[len(took)-1] < attackSetupBound && heapMB < 32
		} else {
			row.Err = strings.Join(failed, "; ")
		}
		if len(failed) > 0 {
			row.Measured += "; failed: " + strings.Join(failed, "; ")
		}
		rep.attack(row)

		// Finding 5: junk with the site's own address.
		victim, err := net.ListenPacket("udp4", "127.0.0.200:0")
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = victim.Close() })
		refused0, junk0 := es.AdmissionRefused.Load(), es.AdmissionMalformed.Load()
		stop = make(chan struct{})
		wg.Add(1)
		go func() { defer wg.Done(); sent = sendAt([]net.PacketConn{victim}, to, 50, stop, junkMM1) }()
		time.Sleep(500 * time.Millisecond) // more than the per-source burst, before the site dials
		cc := clientConfigTo(t, nil, ts.IKEAddr(), ts.NATTAddr().Port(), o.AttackSites, "aes128-sha256-modp2048", "aes128gcm16")
		cc.LocalIKE, cc.LocalNATT = "127.0.0.200:0", "127.0.0.200:0"
		s0 := time.Now()
		tn, derr := dialTunnel(cc)
		d := time.Since(s0)
		close(stop)
		wg.Wait()
		row = AttackRow{Target: "gateway",
			Attack: "28-byte junk with a real site's source address, 50/s (finding 5; TestJunkDoesNotChargeVictim)",
			Bound:  fmt.Sprintf("the site sets up within %v; none of its messages refused by pacing", attackSetupBound),
		}
		refused := es.AdmissionRefused.Load() - refused0
		if derr != nil {
			row.Err = derr.Error()
		} else {
			defer tn.Close()
			row.Measured = fmt.Sprintf("site up in %v during %d junk datagrams (%d dropped as malformed, charged to nobody); pacing refused %d",
				d.Round(time.Millisecond), sent, es.AdmissionMalformed.Load()-junk0, refused)
			row.Held = d < attackSetupBound && refused == 0
		}
		rep.attack(row)
	})
	if err != nil {
		rep.attack(AttackRow{Target: "gateway", Attack: "IKE floods", Err: err.Error()})
	} else if msg != "" {
		rep.note("attack: %s", msg)
	}
}
