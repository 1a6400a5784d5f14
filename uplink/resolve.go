package uplink

import (
	"context"
	"fmt"
	"net"
	"net/netip"
	"slices"
	"strconv"
	"time"

	"github.com/fleetgate/fleetgate/uplink/tunnel"
)

// Gateways behind DNS. The seed's HA advice is several gateways behind a
// DNS load balancer: a name with several A records. A name is looked up
// again before every attempt (so a changed record set is followed), its
// IPv4 addresses are sorted and one is picked at an offset that is random
// per client: a fleet spreads over the set instead of all sites taking the
// first record. A failed attempt moves that gateway on to its next
// address, so a dead member is skipped at once; a working one is kept.

// resolveTimeout bounds one lookup.
const resolveTimeout = 5 * time.Second

// target returns the "ip:port" to dial for gateway i.
func (c *Client) target(i int) (string, error) {
	gw := c.cfg.Gateways[i]
	host, port, err := net.SplitHostPort(gw.Addr)
	if err != nil {
		host, port = gw.Addr, strconv.Itoa(tunnel.DefaultIKEPort)
	}
	if a, err := netip.ParseAddr(host); err == nil {
		return netip.AddrPortFrom(a.Unmap(), mustPort(port)).String(), nil
	}
	ctx, cancel := context.WithTimeout(c.ctx, resolveTimeout)
	defer cancel()
	addrs, err := c.cfg.Resolve(ctx, host)
	if err != nil {
		return "", &tunnel.Error{Phase: tunnel.PhaseTransport, Err: fmt.Errorf("resolve %s: %w", host, err)}
	}
	var v4 []netip.Addr
	for _, a := range addrs {
		if a = a.Unmap(); a.Is4() {
			v4 = append(v4, a)
		}
	}
	if len(v4) == 0 {
		return "", &tunnel.Error{Phase: tunnel.PhaseTransport, Err: fmt.Errorf("resolve %s: no IPv4 address", host)}
	}
	slices.SortFunc(v4, netip.Addr.Compare)
	v4 = slices.Compact(v4)
	c.mu.Lock()
	k := (c.offset + c.health[i].failures) % len(v4)
	c.mu.Unlock()
	return netip.AddrPortFrom(v4[k], mustPort(port)).String(), nil
}

// mustPort parses a port SplitHostPort returned (0 if not numeric: the
// dial then fails with a clear error).
func mustPort(s string) uint16 {
	p, _ := strconv.ParseUint(s, 10, 16)
	return uint16(p)
}

func defaultResolve(ctx context.Context, host string) ([]netip.Addr, error) {
	return net.DefaultResolver.LookupNetIP(ctx, "ip4", host)
}
