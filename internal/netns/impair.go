package netns

import (
	"fmt"
	"strings"
	"testing"
)

// natPortBase is the first port of the masquerade range; each RebindNAT
// moves to the next block of natPortBlock ports so the new mapping always
// differs from the old one.
const (
	natPortBase  = 20000
	natPortBlock = 5000
	natPortMax   = 60000
)

// natRuleset is nat's masquerade towards wan. TCP and UDP sources are
// mapped into port block i (never port-preserving, like most consumer
// NATs, so NAT-T sees its source port change); other protocols (ICMP) are
// masqueraded as usual.
func natRuleset(i int) string {
	lo := natPortBase + (i*natPortBlock)%(natPortMax-natPortBase)
	return fmt.Sprintf(`table ip fgnat {
	chain post {
		type nat hook postrouting priority srcnat; policy accept;
		oifname "wan" meta l4proto { tcp, udp } masquerade to :%d-%d
		oifname "wan" masquerade
	}
}
`, lo, lo+natPortBlock-1)
}

// NATPorts returns the range (inclusive) the NAT currently maps TCP and UDP
// source ports into.
func (topo *Topology) NATPorts() (lo, hi uint16) {
	topo.mu.Lock()
	defer topo.mu.Unlock()
	l := natPortBase + (topo.natPort*natPortBlock)%(natPortMax-natPortBase)
	return uint16(l), uint16(l + natPortBlock - 1)
}

// RebindNAT makes the NAT forget every mapping and map new flows (and the
// next packet of existing ones) to a different source port range, as a home
// router does after a reboot or a mapping timeout. It removes and re-adds
// nat's public address: the kernel's masquerade code then drops the
// connection-tracking entries through that address.
func (topo *Topology) RebindNAT(t testing.TB) {
	t.Helper()
	if !topo.opts.NAT {
		t.Fatal(ErrNotNAT)
	}
	topo.mu.Lock()
	topo.natPort++
	i := topo.natPort
	topo.mu.Unlock()
	topo.mustNFT("nat", "flush table ip fgnat\ndelete table ip fgnat\n"+natRuleset(i))
	pub := topo.hosts["nat"].Ifaces["wan"].String()
	topo.mustRun("nat", "ip", "addr", "del", pub, "dev", "wan")
	topo.mustRun("nat", "ip", "addr", "add", pub, "dev", "wan")
	topo.mustRun("nat", "ip", "route", "replace", "default", "via", topo.hosts["wan"].Ifaces["nat"].Addr().String())
}

// Loss drops pct percent (0–100) of the packets crossing the veth between
// host and its neighbour iface, independently in each direction, with an
// nftables ingress rule "numgen random mod 100 < pct drop" on both ends
// (this kernel has no netem). pct 0 removes the loss.
func (topo *Topology) Loss(t testing.TB, host, iface string, pct int) {
	t.Helper()
	if pct < 0 || pct > 100 {
		t.Fatalf("netns: loss %d%% out of range", pct)
	}
	h := topo.Host(host)
	peer := topo.Host(iface)
	if _, ok := h.Ifaces[iface]; !ok {
		t.Fatalf("netns: %s has no interface %q", host, iface)
	}
	for _, end := range [][2]string{{h.Name, peer.Name}, {peer.Name, h.Name}} {
		table := "fgloss_" + end[1]
		_, _ = topo.hosts[end[0]].Run(t.Context(), "nft", "delete", "table", "netdev", table)
		if pct == 0 {
			continue
		}
		topo.mustNFT(end[0], fmt.Sprintf(`table netdev %s {
	chain loss {
		type filter hook ingress device "%s" priority -500; policy accept;
		%s
	}
}
`, table, end[1], lossRule(pct)))
	}
}

// siteIfaces are wan's interfaces toward the site side.
func (topo *Topology) siteIfaces() []string {
	var s []string
	for n := range topo.hosts["wan"].Ifaces {
		if n != "gw" {
			s = append(s, `"`+n+`"`)
		}
	}
	return s
}

// CutWAN silently drops everything between the site side and the internet
// at wan (no link goes down, as in a real upstream outage) until RestoreWAN.
func (topo *Topology) CutWAN(t testing.TB) {
	t.Helper()
	set := strings.Join(topo.siteIfaces(), ", ")
	topo.Host("wan")
	_, _ = topo.hosts["wan"].Run(t.Context(), "nft", "delete", "table", "inet", "fgcut")
	topo.mustNFT("wan", fmt.Sprintf(`table inet fgcut {
	chain cutfwd {
		type filter hook forward priority -10; policy accept;
		iifname { %[1]s } drop
		oifname { %[1]s } drop
	}
	chain cutin {
		type filter hook input priority -10; policy accept;
		iifname { %[1]s } drop
	}
	chain cutout {
		type filter hook output priority -10; policy accept;
		oifname { %[1]s } drop
	}
}
`, set))
}

// RestoreWAN ends a CutWAN outage.
func (topo *Topology) RestoreWAN(t testing.TB) {
	t.Helper()
	topo.Host("wan")
	topo.mustRun("wan", "nft", "delete", "table", "inet", "fgcut")
}

func lossRule(pct int) string {
	if pct >= 100 {
		return "counter drop"
	}
	return fmt.Sprintf("numgen random mod 100 < %d counter drop", pct)
}
