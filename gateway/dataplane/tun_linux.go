package dataplane

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"strings"
	"sync/atomic"

	"github.com/songgao/water"
	"github.com/vishvananda/netlink"
	vnetns "github.com/vishvananda/netns"
)

// TUN drivers (TUNConfig.Driver, config key dataplane.tun_driver).
const (
	// TUNDriverVnet opens the device with IFF_VNET_HDR and the kernel's
	// offloads (checksum, TSO4/6, USO where the kernel has it): a read
	// may return a TCP/UDP super-packet that is split into MTU-sized
	// packets in userspace, and packets written together are coalesced
	// (GRO) before they reach the kernel (golang.zx2c4.com/wireguard/tun).
	TUNDriverVnet = "vnet"
	// TUNDriverWater is the old one-packet-per-system-call driver
	// (songgao/water), for kernels without IFF_VNET_HDR offloads.
	TUNDriverWater = "water"
)

// TUNConfig configures OpenTUN.
type TUNConfig struct {
	// Name of the device (e.g. fg0).
	Name string
	// MTU of the device (default 1500). Packets up to this size go to the
	// kernel; the per-session MTU is enforced by the router.
	MTU int
	// LocalAddr is the gateway's VPN address, assigned to the device.
	LocalAddr netip.Addr
	// Routes are prefixes routed into the device: the pool and every
	// framed route (AddRoute adds more at run time, e.g. from RADIUS).
	Routes []netip.Prefix
	// NetNS, if set, configures the device (netlink) in that named network
	// namespace (tests); the device must then be opened from inside it.
	// Without it, the namespace OpenTUN runs in.
	NetNS string
	// Driver is TUNDriverVnet (default) or TUNDriverWater.
	Driver string
}

// ErrNoVnetHdr is returned (wrapped, with the cause) by OpenTUN when the
// kernel refuses IFF_VNET_HDR or its offloads.
var ErrNoVnetHdr = errors.New("the kernel refused IFF_VNET_HDR with TSO offloads (kernel older than 2.6.x or a restricted TUN driver); " +
	"set dataplane.tun_driver: water in the gateway config to use the one-packet-per-system-call driver")

// TUNStats counts the vnet driver's system calls and packets (the water
// driver does one call per packet and keeps none). All fields are safe
// for concurrent use.
type TUNStats struct {
	// Reads and PacketsRead: read(2) calls and the packets they carried
	// (more packets than reads: GSO super-packets split in userspace).
	Reads, PacketsRead atomic.Uint64
	// Writes and PacketsWritten: Write calls (each one write(2) per
	// coalesced flow) and the packets handed to them.
	Writes, PacketsWritten atomic.Uint64
	// WriteErrors counts failed writes (a batch counts once).
	WriteErrors atomic.Uint64
	// ReadErrors counts reads the driver could not split into packets
	// (their burst is dropped; reading goes on).
	ReadErrors atomic.Uint64
}

// tunDevice is the packet I/O of one TUN driver.
type tunDevice interface {
	readPacket(buf []byte) (int, error)
	writePacket(pkt []byte) error
	// buffered is how many packets the next readPacket calls return
	// without a system call (the rest of a split GSO read).
	buffered() int
	close() error
}

// TUN is a Host backed by a Linux TUN device. The kernel routes and NATs
// what the router writes to it. The device, its address, MTU and routes
// are managed over netlink (no ip binary). With the vnet driver (default)
// reads and writes go through IFF_VNET_HDR with GSO/GRO offloads: one
// read(2) can carry a 64 KB TCP super-packet the kernel did not segment,
// and packets written back to back by concurrent sessions are coalesced
// into one write per flow; with the water driver each packet is one system
// call.
type TUN struct {
	dev  tunDevice
	nl   *netlink.Handle
	link netlink.Link
	cfg  TUNConfig
}

// OpenTUN creates and configures the device: address, MTU, up, routes.
// It needs CAP_NET_ADMIN.
func OpenTUN(cfg TUNConfig) (*TUN, error) {
	if cfg.MTU == 0 {
		cfg.MTU = 1500
	}
	t := &TUN{cfg: cfg}
	switch cfg.Driver {
	case "", TUNDriverVnet:
		t.cfg.Driver = TUNDriverVnet
		d, name, err := openVnet(cfg.Name, cfg.MTU)
		if err != nil {
			return nil, err
		}
		t.dev, t.cfg.Name = d, name
	case TUNDriverWater:
		ifc, err := water.New(water.Config{DeviceType: water.TUN, PlatformSpecificParams: water.PlatformSpecificParams{Name: cfg.Name}})
		if err != nil {
			return nil, fmt.Errorf("dataplane: open TUN %q (driver water): %w (needs CAP_NET_ADMIN and /dev/net/tun)", cfg.Name, err)
		}
		t.dev, t.cfg.Name = waterDevice{ifc}, ifc.Name()
	default:
		return nil, fmt.Errorf("dataplane: TUN driver %q: want %s or %s (config key dataplane.tun_driver)", cfg.Driver, TUNDriverVnet, TUNDriverWater)
	}
	if err := t.configure(); err != nil {
		t.dev.close()
		if t.nl != nil {
			t.nl.Close()
		}
		return nil, err
	}
	return t, nil
}

// configure sets MTU, address, up and routes over netlink.
func (t *TUN) configure() error {
	var err error
	if t.cfg.NetNS != "" {
		ns, nerr := vnetns.GetFromName(t.cfg.NetNS)
		if nerr != nil {
			return fmt.Errorf("dataplane: TUN %s: network namespace %q: %w", t.cfg.Name, t.cfg.NetNS, nerr)
		}
		defer ns.Close()
		t.nl, err = netlink.NewHandleAt(ns)
	} else {
		t.nl, err = netlink.NewHandle()
	}
	if err != nil {
		return fmt.Errorf("dataplane: TUN %s: netlink: %w", t.cfg.Name, err)
	}
	if t.link, err = t.nl.LinkByName(t.cfg.Name); err != nil {
		return fmt.Errorf("dataplane: TUN %s: find device: %w", t.cfg.Name, err)
	}
	if err := t.nl.LinkSetMTU(t.link, t.cfg.MTU); err != nil {
		return fmt.Errorf("dataplane: TUN %s: set MTU %d: %w", t.cfg.Name, t.cfg.MTU, err)
	}
	addr := &netlink.Addr{IPNet: &net.IPNet{IP: t.cfg.LocalAddr.AsSlice(), Mask: net.CIDRMask(32, 32)}}
	if err := t.nl.AddrReplace(t.link, addr); err != nil {
		return fmt.Errorf("dataplane: TUN %s: add address %s/32: %w", t.cfg.Name, t.cfg.LocalAddr, err)
	}
	if err := t.nl.LinkSetUp(t.link); err != nil {
		return fmt.Errorf("dataplane: TUN %s: set up: %w", t.cfg.Name, err)
	}
	for _, p := range t.cfg.Routes {
		if err := t.AddRoute(p); err != nil {
			return err
		}
	}
	return nil
}

// Name is the device name.
func (t *TUN) Name() string { return t.cfg.Name }

// Driver is the TUN driver in use (TUNDriverVnet or TUNDriverWater).
func (t *TUN) Driver() string { return t.cfg.Driver }

// Stats returns the vnet driver's counters (nil with the water driver).
func (t *TUN) Stats() *TUNStats {
	if d, ok := t.dev.(*vnetDevice); ok {
		return d.stats
	}
	return nil
}

func (t *TUN) route(p netip.Prefix) *netlink.Route {
	p = p.Masked()
	r := &netlink.Route{
		LinkIndex: t.link.Attrs().Index,
		Dst:       &net.IPNet{IP: p.Addr().AsSlice(), Mask: net.CIDRMask(p.Bits(), p.Addr().BitLen())},
		Src:       t.cfg.LocalAddr.AsSlice(),
		Scope:     netlink.SCOPE_LINK,
	}
	if p.Addr().Is6() {
		// An IPv6 site prefix (identities.ipv6_prefix): the device has no
		// IPv6 address of ours to prefer as source; the kernel picks one.
		r.Src, r.Scope = nil, netlink.SCOPE_UNIVERSE
	}
	return r
}

// AddRoute routes p into the device (replacing an existing route).
func (t *TUN) AddRoute(p netip.Prefix) error {
	if err := t.nl.RouteReplace(t.route(p)); err != nil {
		return fmt.Errorf("dataplane: route %s dev %s src %s: %w", p, t.cfg.Name, t.cfg.LocalAddr, err)
	}
	return nil
}

// DelRoute removes a route added with AddRoute.
func (t *TUN) DelRoute(p netip.Prefix) error {
	if err := t.nl.RouteDel(t.route(p)); err != nil {
		return fmt.Errorf("dataplane: delete route %s dev %s: %w", p, t.cfg.Name, err)
	}
	return nil
}

// WritePacket writes one IPv4 packet to the kernel.
func (t *TUN) WritePacket(pkt []byte) error { return t.dev.writePacket(pkt) }

// ReadPacket reads one packet from the kernel.
func (t *TUN) ReadPacket(buf []byte) (int, error) { return t.dev.readPacket(buf) }

// Buffered is how many packets ReadPacket returns next without a system
// call: the rest of a GSO super-packet the vnet driver split (0 with the
// water driver). RunHost holds the session transport's sends while it
// routes them (Burster).
func (t *TUN) Buffered() int { return t.dev.buffered() }

// MTU is the device MTU.
func (t *TUN) MTU() int { return t.cfg.MTU }

// Close removes the device; a blocked ReadPacket returns an error.
func (t *TUN) Close() error {
	err := t.dev.close()
	if t.nl != nil {
		t.nl.Close()
	}
	return err
}

// waterDevice is the one-packet-per-system-call driver.
type waterDevice struct{ ifc *water.Interface }

func (w waterDevice) readPacket(buf []byte) (int, error) { return w.ifc.Read(buf) }
func (w waterDevice) writePacket(pkt []byte) error {
	_, err := w.ifc.Write(pkt)
	return err
}
func (w waterDevice) buffered() int { return 0 }
func (w waterDevice) close() error  { return w.ifc.Close() }

// ErrForwardingOff is returned by CheckIPForward when the kernel does not
// forward IPv4.
var ErrForwardingOff = errors.New("dataplane: IPv4 forwarding is off: the kernel will not route VPN traffic to the central network.\n" +
	"  Run:      sysctl -w net.ipv4.ip_forward=1\n" +
	"  Persist:  echo net.ipv4.ip_forward=1 > /etc/sysctl.d/90-fleetgate.conf\n" +
	"  To NAT the VPN towards the central network (nftables):\n" +
	"    nft add table ip fleetgate\n" +
	"    nft 'add chain ip fleetgate post { type nat hook postrouting priority 100; }'\n" +
	"    nft add rule ip fleetgate post ip saddr 10.10.0.0/16 oifname \"eth0\" masquerade")

// CheckIPForward reads /proc/sys/net/ipv4/ip_forward (or the given path)
// and returns ErrForwardingOff, with what to run, when it is 0.
func CheckIPForward(path string) error {
	if path == "" {
		path = "/proc/sys/net/ipv4/ip_forward"
	}
	b, err := os.ReadFile(path)
	if err != nil {
		return fmt.Errorf("dataplane: cannot read %s: %w", path, err)
	}
	if strings.TrimSpace(string(b)) != "1" {
		return ErrForwardingOff
	}
	return nil
}
