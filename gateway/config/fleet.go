package config

import (
	"bytes"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strings"

	"go.yaml.in/yaml/v3"
)

// poolSlice parses pool.slice: a prefix or a lo-hi range inside the pool.
func (v *validator) poolSlice() {
	pl := &v.c.Pool
	if pl.Slice == "" || !pl.PrefixP.IsValid() {
		return
	}
	lo, hi, ok := parseRange(pl.Slice)
	if !ok {
		v.errf(p("pool", "slice"), "pool.slice %q: want a prefix (10.10.0.64/26) or a range (10.10.0.64-10.10.0.127)", pl.Slice)
		return
	}
	if !pl.PrefixP.Contains(lo) || !pl.PrefixP.Contains(hi) {
		v.errf(p("pool", "slice"), "pool.slice %s is not inside pool.prefix %s", pl.Slice, pl.PrefixP)
		return
	}
	// The network and broadcast addresses are never handed out.
	if lo == pl.PrefixP.Addr() {
		lo = lo.Next()
	}
	if last := lastAddr(pl.PrefixP); hi == last {
		hi = hi.Prev()
	}
	if hi.Less(lo) {
		v.errf(p("pool", "slice"), "pool.slice %s holds no usable address", pl.Slice)
		return
	}
	pl.SliceLo, pl.SliceHi = lo, hi
}

func parseRange(s string) (lo, hi netip.Addr, ok bool) {
	if pf, err := netip.ParsePrefix(s); err == nil && pf.Addr().Is4() {
		pf = pf.Masked()
		return pf.Addr(), lastAddr(pf), true
	}
	a, b, found := strings.Cut(s, "-")
	if !found {
		return lo, hi, false
	}
	lo, err1 := netip.ParseAddr(strings.TrimSpace(a))
	hi, err2 := netip.ParseAddr(strings.TrimSpace(b))
	if err1 != nil || err2 != nil || !lo.Is4() || !hi.Is4() || hi.Less(lo) {
		return lo, hi, false
	}
	return lo, hi, true
}

func lastAddr(pf netip.Prefix) netip.Addr {
	b := pf.Masked().Addr().As4()
	host := uint32(1)<<(32-pf.Bits()) - 1
	v := (uint32(b[0])<<24 | uint32(b[1])<<16 | uint32(b[2])<<8 | uint32(b[3])) | host
	return netip.AddrFrom4([4]byte{byte(v >> 24), byte(v >> 16), byte(v >> 8), byte(v)})
}

// Fleet is the list of gateway configurations that share one address
// pool, as a fleet file names them:
//
//	gateways: [gw1.yaml, gw2.yaml]   # relative to the fleet file
type Fleet struct {
	Gateways []string `yaml:"gateways"`
}

// CheckFleet loads every gateway configuration of the fleet file and
// checks the rule that keeps addresses unique across the fleet (see
// gateway/README.md): one pool.prefix for all; with more than one
// gateway, each has a pool.slice and the slices are disjoint; no static
// address of any gateway lies in any slice; an identity configured on
// several gateways has the same address and framed routes on all. It
// returns the loaded configurations and every problem found.
func CheckFleet(path string) ([]*Config, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("config: %w", err)
	}
	var f Fleet
	dec := yaml.NewDecoder(bytes.NewReader(b))
	dec.KnownFields(true)
	if err := dec.Decode(&f); err != nil {
		return nil, yamlErrors(path, err)
	}
	if len(f.Gateways) == 0 {
		return nil, Errors{{File: path, Msg: "fleet file lists no gateways (gateways: [gw1.yaml, gw2.yaml])"}}
	}
	var errs Errors
	var cfgs []*Config
	for _, g := range f.Gateways {
		if !filepath.IsAbs(g) {
			g = filepath.Join(filepath.Dir(path), g)
		}
		c, err := Load(g)
		if err != nil {
			var es Errors
			if asErrors(err, &es) {
				errs = append(errs, es...)
			} else {
				errs = append(errs, &Error{File: path, Msg: err.Error()})
			}
			continue
		}
		cfgs = append(cfgs, c)
	}
	if len(errs) > 0 {
		return cfgs, errs
	}
	at := func(c *Config, msg string, path ...any) {
		errs = append(errs, &Error{File: c.File, Line: c.line(path...), Msg: msg})
	}
	first := cfgs[0]
	for _, c := range cfgs[1:] {
		if c.Pool.PrefixP != first.Pool.PrefixP {
			at(c, fmt.Sprintf("pool.prefix %s differs from %s in %s: a fleet shares one pool", c.Pool.PrefixP, first.Pool.PrefixP, first.File), "pool", "prefix")
		}
	}
	if len(cfgs) > 1 {
		for _, c := range cfgs {
			if !c.Pool.SliceLo.IsValid() {
				at(c, "pool.slice is required in a fleet (each gateway hands out its own disjoint part of pool.prefix)", "pool")
			}
		}
	}
	for i, a := range cfgs {
		for _, b := range cfgs[i+1:] {
			if a.Pool.SliceLo.IsValid() && b.Pool.SliceLo.IsValid() && !a.Pool.SliceHi.Less(b.Pool.SliceLo) && !b.Pool.SliceHi.Less(a.Pool.SliceLo) {
				at(b, fmt.Sprintf("pool.slice %s-%s overlaps %s-%s of %s:%d: make the slices disjoint", b.Pool.SliceLo, b.Pool.SliceHi,
					a.Pool.SliceLo, a.Pool.SliceHi, a.File, a.line("pool", "slice")), "pool", "slice")
			}
		}
	}
	type seen struct {
		c  *Config
		id *Identity
		i  int
	}
	byName := map[string]seen{}
	for _, c := range cfgs {
		for i := range c.Identities {
			id := &c.Identities[i]
			if id.Addr.IsValid() {
				for _, o := range cfgs {
					if o.Pool.SliceLo.IsValid() && !id.Addr.Less(o.Pool.SliceLo) && !o.Pool.SliceHi.Less(id.Addr) {
						at(c, fmt.Sprintf("identity %s: static address %s lies in the pool.slice of %s: another gateway could hand it out", id.Name, id.Addr, o.File), "identities", i, "address")
					}
				}
			}
			if s, ok := byName[id.Name]; ok {
				if s.id.Addr != id.Addr || !slices.Equal(s.id.RoutePrefixes, id.RoutePrefixes) {
					at(c, fmt.Sprintf("identity %s: address %v / routes %v differ from %s:%d (%v / %v): the same identity must get the same address on any gateway",
						id.Name, id.Addr, id.RoutePrefixes, s.c.File, s.c.line("identities", s.i, "name"), s.id.Addr, s.id.RoutePrefixes), "identities", i, "name")
				}
				continue
			}
			byName[id.Name] = seen{c, id, i}
		}
	}
	if len(errs) > 0 {
		return cfgs, errs
	}
	return cfgs, nil
}

func asErrors(err error, out *Errors) bool {
	es, ok := err.(Errors)
	if ok {
		*out = es
	}
	return ok
}
