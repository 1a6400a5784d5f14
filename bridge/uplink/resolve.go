package uplink

import (
	"context"
	"fmt"
	"net"
	"net/netip"
	"slices"
	"strconv"
	"time"

	"github.com/fleetgate/fleetgate/uplink/l2tpipsec"
)

// Gateways behind DNS. The seed's HA advice is several gateways behind a
// DNS load balancer: a name with several A (and AAAA) records. A name is
// looked up again before every attempt (so a changed record set is
// followed), its addresses of each family are sorted and one of each is
// picked at an offset that is random per client: a fleet spreads over the
// set instead of all sites taking the first record. A failed attempt moves
// that gateway on to its next addresses, so a dead member is skipped at
// once; a working one is kept.
//
// A dual-stack name gives two targets, IPv6 first (RFC 8305 §4); the
// attempt races them Happy-Eyeballs style (dial.go).

// resolveTimeout bounds one lookup.
const resolveTimeout = 5 * time.Second

// targets returns the "ip:port" targets to dial for gateway i: one for an
// address or a single-family name, two (IPv6, then IPv4) for a dual-stack
// name.
func (c *Client) targets(i int) ([]string, error) {
	gw := c.cfg.Gateways[i]
	host, port, err := net.SplitHostPort(gw.Addr)
	if err != nil {
		host, port = gw.Addr, strconv.Itoa(l2tpipsec.DefaultIKEPort)
	}
	if a, err := netip.ParseAddr(host); err == nil {
		return []string{netip.AddrPortFrom(a.Unmap(), mustPort(port)).String()}, nil
	}
	ctx, cancel := context.WithTimeout(c.ctx, resolveTimeout)
	defer cancel()
	addrs, err := c.cfg.Resolve(ctx, host)
	if err != nil {
		return nil, &l2tpipsec.Error{Phase: l2tpipsec.PhaseTransport, Err: fmt.Errorf("resolve %s: %w", host, err)}
	}
	// A specific local address restricts the targets to its family.
	only4, only6 := c.cfg.NoIPv6, false
	if l, err := netip.ParseAddrPort(c.cfg.Tunnel.LocalIKE); err == nil && !l.Addr().IsUnspecified() {
		only4, only6 = l.Addr().Unmap().Is4(), !l.Addr().Unmap().Is4()
	}
	var v4, v6 []netip.Addr
	for _, a := range addrs {
		switch a = a.Unmap(); {
		case a.Is4() && !only6:
			v4 = append(v4, a)
		case a.Is6() && !only4 && a.Zone() == "":
			v6 = append(v6, a)
		}
	}
	if len(v4)+len(v6) == 0 {
		return nil, &l2tpipsec.Error{Phase: l2tpipsec.PhaseTransport, Err: fmt.Errorf("resolve %s: no usable address", host)}
	}
	c.mu.Lock()
	k := c.offset + c.health[i].failures
	c.mu.Unlock()
	var out []string
	for _, fam := range [][]netip.Addr{v6, v4} {
		if len(fam) == 0 {
			continue
		}
		slices.SortFunc(fam, netip.Addr.Compare)
		fam = slices.Compact(fam)
		out = append(out, netip.AddrPortFrom(fam[k%len(fam)], mustPort(port)).String())
	}
	return out, nil
}

// mustPort parses a port SplitHostPort returned (0 if not numeric: the
// dial then fails with a clear error).
func mustPort(s string) uint16 {
	p, _ := strconv.ParseUint(s, 10, 16)
	return uint16(p)
}

// defaultResolve looks up A and AAAA records (in parallel: Go's resolver
// sends both queries at once and returns when both answered).
func defaultResolve(ctx context.Context, host string) ([]netip.Addr, error) {
	return net.DefaultResolver.LookupNetIP(ctx, "ip", host)
}
