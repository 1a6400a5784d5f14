package config

import (
	"net/netip"
	"strconv"
	"strings"
	"time"
)

// BGP configures the gateway's BGP speaker (package gateway/bgp): while a
// session is up, its PPP /32 and framed routes are announced to the
// neighbours with NextHop, so central routers send return traffic to the
// gateway that holds the session.
type BGP struct {
	// LocalAS is the gateway's AS number (required).
	LocalAS uint32 `yaml:"local_as"`
	// RouterID is the BGP identifier, an IPv4 address (required).
	RouterID string `yaml:"router_id"`
	// NextHop is the gateway's central address, the next hop of every
	// announced prefix (default: router_id).
	NextHop string `yaml:"next_hop"`
	// NextHop6 is the gateway's central IPv6 address, the next hop of the
	// sites' IPv6 prefixes (static ipv6_prefix, RADIUS, pool.ipv6_prefix),
	// announced as IPv6 unicast (RFC 4760) over the same sessions. Unset:
	// IPv6 prefixes are not announced. A change needs a restart.
	NextHop6 string `yaml:"next_hop6"`
	// LocalAddress is the source address of the BGP connections
	// (default: chosen by the kernel).
	LocalAddress string `yaml:"local_address"`
	// Communities (RFC 1997) attached to every prefix: "65010:100",
	// "no-export", "no-advertise".
	Communities []string `yaml:"communities"`
	// MaxPrefixes bounds the announced prefixes (default 65536).
	MaxPrefixes int `yaml:"max_prefixes"`
	// Neighbors are the central routers (at least one).
	Neighbors []BGPNeighbor `yaml:"neighbors"`

	// Parsed values.
	RouterIDAddr    netip.Addr `yaml:"-"`
	NextHopAddr     netip.Addr `yaml:"-"`
	NextHop6Addr    netip.Addr `yaml:"-"`
	LocalAddr       netip.Addr `yaml:"-"`
	CommunityValues []uint32   `yaml:"-"`
}

// BGPNeighbor is one central router.
type BGPNeighbor struct {
	Address string `yaml:"address"`
	AS      uint32 `yaml:"as"`
	// Port is the neighbour's TCP port (default 179).
	Port int `yaml:"port"`
	// Password (or PasswordFile) turns on TCP MD5 signatures (RFC 2385).
	Password     string `yaml:"password"`
	PasswordFile string `yaml:"password_file"`
	// HoldTime (RFC 4271 §4.2): 0s or 3s..65535s (default 90s).
	HoldTime string `yaml:"hold_time"`
	// ConnectRetry is the wait between connection attempts (default 5s).
	ConnectRetry string `yaml:"connect_retry"`

	Addr          netip.Addr    `yaml:"-"`
	HoldTimeD     time.Duration `yaml:"-"`
	ConnectRetryD time.Duration `yaml:"-"`
}

// Well-known communities (RFC 1997).
var wellKnownCommunities = map[string]uint32{
	"no-export":           0xFFFFFF01,
	"no-advertise":        0xFFFFFF02,
	"no-export-subconfed": 0xFFFFFF03,
}

func (v *validator) bgp() {
	b := v.c.BGP
	if b == nil {
		return
	}
	if b.LocalAS == 0 {
		v.errf(p("bgp", "local_as"), "bgp.local_as is required (the gateway's AS number, e.g. 65010)")
	}
	b.RouterIDAddr = v.ipv4(b.RouterID, true, "bgp", "router_id")
	b.NextHopAddr = v.ipv4(b.NextHop, false, "bgp", "next_hop")
	if !b.NextHopAddr.IsValid() {
		b.NextHopAddr = b.RouterIDAddr
	}
	b.LocalAddr = v.ipv4(b.LocalAddress, false, "bgp", "local_address")
	if b.NextHop6 != "" {
		a, err := netip.ParseAddr(b.NextHop6)
		if err != nil || !a.Is6() || a.Is4In6() || a.IsLinkLocalUnicast() || a.IsMulticast() || a.IsUnspecified() {
			v.errf(p("bgp", "next_hop6"), "bgp.next_hop6 %q is not a global IPv6 address (the gateway's central IPv6 address, e.g. 2001:db8:200::1)", b.NextHop6)
		} else {
			b.NextHop6Addr = a
		}
	}
	for i, c := range b.Communities {
		val, ok := parseCommunity(c)
		if !ok {
			v.errf(p("bgp", "communities", i), "bgp.communities %q: want ASN:VALUE (each 0..65535, e.g. 65010:100) or no-export, no-advertise, no-export-subconfed", c)
			continue
		}
		b.CommunityValues = append(b.CommunityValues, val)
	}
	if b.MaxPrefixes < 0 {
		v.errf(p("bgp", "max_prefixes"), "bgp.max_prefixes %d must be positive (0 for the default 65536)", b.MaxPrefixes)
	}
	if len(b.Neighbors) == 0 {
		v.errf(p("bgp", "neighbors"), "bgp.neighbors: at least one neighbour (address, as) is required")
	}
	seen := map[netip.Addr]int{}
	for i := range b.Neighbors {
		n := &b.Neighbors[i]
		at := func(k string) []any { return p("bgp", "neighbors", i, k) }
		n.Addr = v.ipv4(n.Address, true, "bgp", "neighbors", i, "address")
		if j, dup := seen[n.Addr]; dup && n.Addr.IsValid() {
			v.errf(at("address"), "bgp neighbour %s listed twice (also neighbour %d)", n.Addr, j+1)
		}
		seen[n.Addr] = i
		if n.AS == 0 {
			v.errf(at("as"), "bgp.neighbors[%d].as is required (the neighbour's AS number)", i)
		}
		switch {
		case n.Port == 0:
			n.Port = 179
		case n.Port < 1 || n.Port > 65535:
			v.errf(at("port"), "bgp.neighbors[%d].port %d out of range 1..65535", i, n.Port)
		}
		if n.PasswordFile != "" {
			n.Password = v.secretFile(n.PasswordFile, "bgp", "neighbors", i, "password_file")
		}
		if len(n.Password) > 80 {
			v.errf(at("password"), "bgp.neighbors[%d].password is longer than the 80 bytes TCP MD5 allows", i)
		}
		n.HoldTimeD = 90 * time.Second
		if n.HoldTime != "" {
			d, err := time.ParseDuration(n.HoldTime)
			if err != nil || d < 0 || (d > 0 && d < 3*time.Second) || d > 65535*time.Second || d%time.Second != 0 {
				v.errf(at("hold_time"), "bgp.neighbors[%d].hold_time %q: want 0s or whole seconds 3s..65535s (RFC 4271 §4.2)", i, n.HoldTime)
			} else {
				n.HoldTimeD = d
			}
		}
		n.ConnectRetryD = 5 * time.Second
		if n.ConnectRetry != "" {
			d, err := time.ParseDuration(n.ConnectRetry)
			if err != nil || d < time.Second || d > time.Hour {
				v.errf(at("connect_retry"), "bgp.neighbors[%d].connect_retry %q: want a duration 1s..1h", i, n.ConnectRetry)
			} else {
				n.ConnectRetryD = d
			}
		}
	}
}

// ipv4 parses an optional or required IPv4 address at path.
func (v *validator) ipv4(s string, required bool, path ...any) netip.Addr {
	key := strings.Join(strPath(path), ".")
	if s == "" {
		if required {
			v.errf(path, "%s is required (an IPv4 address)", key)
		}
		return netip.Addr{}
	}
	a, err := netip.ParseAddr(s)
	if err != nil || !a.Is4() {
		v.errf(path, "%s %q is not an IPv4 address", key, s)
		return netip.Addr{}
	}
	return a
}

func parseCommunity(s string) (uint32, bool) {
	if v, ok := wellKnownCommunities[strings.ToLower(s)]; ok {
		return v, true
	}
	a, b, ok := strings.Cut(s, ":")
	if !ok {
		return 0, false
	}
	hi, err1 := strconv.ParseUint(a, 10, 16)
	lo, err2 := strconv.ParseUint(b, 10, 16)
	if err1 != nil || err2 != nil {
		return 0, false
	}
	return uint32(hi)<<16 | uint32(lo), true
}
