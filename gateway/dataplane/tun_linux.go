package dataplane

import (
	"errors"
	"fmt"
	"net/netip"
	"os"
	"os/exec"
	"strconv"
	"strings"

	"github.com/songgao/water"
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
	// NetNS, if set, runs the ip commands in that named network namespace
	// (tests); the device must then be opened from inside it.
	NetNS string
}

// TUN is a Host backed by a Linux TUN device (songgao/water). The kernel
// routes and NATs what the router writes to it. Reads and writes are one
// packet per system call: water offers no batching (no IFF_MULTI_QUEUE
// queues or GSO here), which bounds throughput at roughly one syscall per
// packet.
type TUN struct {
	ifc *water.Interface
	cfg TUNConfig
}

// OpenTUN creates and configures the device: address, MTU, up, routes.
// It needs CAP_NET_ADMIN.
func OpenTUN(cfg TUNConfig) (*TUN, error) {
	if cfg.MTU == 0 {
		cfg.MTU = 1500
	}
	ifc, err := water.New(water.Config{DeviceType: water.TUN, PlatformSpecificParams: water.PlatformSpecificParams{Name: cfg.Name}})
	if err != nil {
		return nil, fmt.Errorf("dataplane: open TUN %q: %w", cfg.Name, err)
	}
	t := &TUN{ifc: ifc, cfg: cfg}
	t.cfg.Name = ifc.Name()
	cmds := [][]string{
		{"link", "set", "dev", t.cfg.Name, "mtu", strconv.Itoa(cfg.MTU)},
		{"addr", "add", cfg.LocalAddr.String() + "/32", "dev", t.cfg.Name},
		{"link", "set", "dev", t.cfg.Name, "up"},
	}
	for _, c := range cmds {
		if err := t.ip(c...); err != nil {
			ifc.Close()
			return nil, err
		}
	}
	for _, p := range cfg.Routes {
		if err := t.AddRoute(p); err != nil {
			ifc.Close()
			return nil, err
		}
	}
	return t, nil
}

func (t *TUN) ip(args ...string) error {
	if t.cfg.NetNS != "" {
		args = append([]string{"-n", t.cfg.NetNS}, args...)
	}
	out, err := exec.Command("ip", args...).CombinedOutput()
	if err != nil {
		return fmt.Errorf("dataplane: ip %s: %v: %s", strings.Join(args, " "), err, strings.TrimSpace(string(out)))
	}
	return nil
}

// Name is the device name.
func (t *TUN) Name() string { return t.cfg.Name }

// AddRoute routes p into the device (replacing an existing route).
func (t *TUN) AddRoute(p netip.Prefix) error {
	return t.ip("route", "replace", p.String(), "dev", t.cfg.Name, "src", t.cfg.LocalAddr.String())
}

// DelRoute removes a route added with AddRoute.
func (t *TUN) DelRoute(p netip.Prefix) error {
	return t.ip("route", "del", p.String(), "dev", t.cfg.Name)
}

// WritePacket writes one IPv4 packet to the kernel.
func (t *TUN) WritePacket(pkt []byte) error {
	_, err := t.ifc.Write(pkt)
	return err
}

// ReadPacket reads one packet from the kernel.
func (t *TUN) ReadPacket(buf []byte) (int, error) { return t.ifc.Read(buf) }

// MTU is the device MTU.
func (t *TUN) MTU() int { return t.cfg.MTU }

// Close removes the device; a blocked ReadPacket returns an error.
func (t *TUN) Close() error { return t.ifc.Close() }

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
