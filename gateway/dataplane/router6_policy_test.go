package dataplane

import (
	"net/netip"
	"testing"

	"gvisor.dev/gvisor/pkg/tcpip/header"

	"github.com/fleetgate/fleetgate/gateway/ipv6"
	"github.com/fleetgate/fleetgate/gateway/policy"
	"github.com/fleetgate/fleetgate/gateway/route"
)

const testConfigDst6 = `
psk: {shared: x}
policies:
  v6dst:
    allow:
      - {dst: "2001:db8:200::10/128", proto: udp, ports: [5683]}
      - {dst: 10.20.0.0/16, proto: udp}
identities:
  - {name: site6, ppp: {password: p}, policy: v6dst, routes: [10.10.8.0/24], ipv6_prefix: "2001:db8:8::/64"}
`

// TestRouterIPv6PolicyDstAndReplies: a rule with an IPv6 dst lets the site
// reach exactly that address and port (another IPv6 address, and the IPv4
// rule's UDP, do not match it); a conversation central opens to the site
// (UDP and ICMPv6 echo) lets the site's replies through although the
// policy denies them, and only those replies (other ports, other hosts,
// echo requests are still denied).
func TestRouterIPv6PolicyDstAndReplies(t *testing.T) {
	c := mustConfig(t, testConfigDst6)
	tb := route.NewTable()
	s := &fakeSession6{fakeSession: fakeSession{id: 1, ident: "site6", addr: netip.MustParseAddr("10.10.0.7"), mtu: 1394},
		pfx: netip.MustParsePrefix("2001:db8:8::/64")}
	if _, err := tb.Add(s, true); err != nil {
		t.Fatal(err)
	}
	r := New(Config{Sessions: tb, Policies: policy.Compile(c), LocalAddr: netip.MustParseAddr("10.10.0.1")})
	host := &fakeHost{mtu: 1500}
	r.SetHost(host)
	other := netip.MustParseAddr("2001:db8:200::11")
	// pkt6 uses source port 40000: the site's reply from 40000 to dport.
	reply := func(src, dst netip.Addr, dport uint16) []byte {
		return pkt6(src, dst, nil, ipv6.ProtoUDP, dport, 20)
	}
	echo := func(src, dst netip.Addr, typ byte, id uint16) []byte {
		p := pkt6(src, dst, nil, ipv6.ProtoICMPv6, 0, 8)
		l4 := p[header.IPv6MinimumSize:]
		l4[0], l4[1], l4[2], l4[3], l4[4], l4[5] = typ, 0, 0, 0, byte(id>>8), byte(id)
		return p
	}
	denied := r.Stats.Drops(ReasonPolicy)
	for _, tc := range []struct {
		name  string
		p     []byte
		allow bool
	}{
		{"rule dst", pkt6(site6, central6, nil, ipv6.ProtoUDP, 5683, 20), true},
		{"other IPv6 host", pkt6(site6, other, nil, ipv6.ProtoUDP, 5683, 20), false},
		{"rule port only", pkt6(site6, central6, nil, ipv6.ProtoUDP, 53, 20), false},
		{"reply before central spoke", reply(site6, other, 7000), false},
		{"echo reply before a request", echo(site6, other, 129, 9), false},
	} {
		err := r.FromSession(s, tc.p)
		if (err == nil) != tc.allow {
			t.Fatalf("%s: err %v, want allowed %v", tc.name, err, tc.allow)
		}
	}
	if n := r.Stats.Drops(ReasonPolicy) - denied; n != 4 {
		t.Fatalf("policy drops %d, want 4", n)
	}
	// Central opens: UDP other:7000 -> site:40000 and an echo request id 9.
	p := pkt6(other, site6, nil, ipv6.ProtoUDP, 40000, 20)
	p[header.IPv6MinimumSize], p[header.IPv6MinimumSize+1] = 7000>>8, 7000&0xff
	if err := r.FromHost(p); err != nil {
		t.Fatal(err)
	}
	if err := r.FromHost(echo(other, site6, 128, 9)); err != nil {
		t.Fatal(err)
	}
	denied = r.Stats.Drops(ReasonPolicy)
	for _, tc := range []struct {
		name  string
		p     []byte
		allow bool
	}{
		{"UDP reply", reply(site6, other, 7000), true},
		{"reply to another port", reply(site6, other, 7001), false},
		{"reply to another host", reply(site6, netip.MustParseAddr("2001:db8:200::12"), 7000), false},
		{"echo reply", echo(site6, other, 129, 9), true},
		{"echo reply, other id", echo(site6, other, 129, 10), false},
		{"echo request from the site", echo(site6, other, 128, 9), false},
	} {
		err := r.FromSession(s, tc.p)
		if (err == nil) != tc.allow {
			t.Fatalf("%s: err %v, want allowed %v", tc.name, err, tc.allow)
		}
	}
	if n := r.Stats.Drops(ReasonPolicy) - denied; n != 4 {
		t.Fatalf("policy drops after central spoke %d, want 4", n)
	}
	if got := len(host.packets()); got != 3 {
		t.Fatalf("host got %d packets, want 3 (rule dst, UDP reply, echo reply)", got)
	}
}
