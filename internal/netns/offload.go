package netns

import (
	"maps"
	"net"
	"slices"
	"strings"
	"testing"

	"github.com/fleetgate/fleetgate/internal/testenv"
)

// offloadFeatures are the ethtool features that let a packet cross a veth
// (or lo) larger than the link MTU: segmentation offloads on the sending
// side (a UDP_SEGMENT or TSO super-frame is handed to the peer whole) and
// GRO on the receiving side (which merges segments before a capture sees
// them).
var offloadFeatures = []string{
	"tso", "gso", "gro",
	"tx-udp-segmentation", "tx-gso-list", "rx-gro-list",
}

// WireSized makes what crosses interface iface of h look as it would on a
// real wire: segmentation and receive offloads are turned off on iface and
// on its far end (the interface named h.Name in the neighbour host iface),
// so a UDP GSO or TSO super-frame is cut into link-sized packets before it
// is handed across, and no GRO merges them again. iface "any" does this for
// every interface of h (lo included). Tests that judge captured packets
// (tshark) call it before capturing; the product's own offloads still run,
// only the kernel segments their output earlier. It returns the largest MTU
// of the veths concerned (lo excluded), the size no captured IP packet may
// exceed. A nil host (root namespace) is left untouched: it returns the
// MTU of iface there (0 for "any"). It needs ethtool.
func (h *Host) WireSized(t testing.TB, iface string) int {
	t.Helper()
	if h == nil {
		if iface == "any" {
			return 0
		}
		ifc, err := net.InterfaceByName(iface)
		if err != nil {
			t.Fatalf("netns: root namespace: %v", err)
		}
		return ifc.MTU
	}
	bin := testenv.RequireBinary(t, "ethtool")
	ifaces := []string{iface}
	if iface == "any" {
		ifaces = append([]string{"lo"}, slices.Sorted(maps.Keys(h.Ifaces))...)
	}
	mtu := 0
	for _, name := range ifaces {
		offloadOff(t, h, bin, name)
		if name == "lo" {
			continue
		}
		if m := h.mtu(t, name); m > mtu {
			mtu = m
		}
		if h.topo == nil {
			continue
		}
		if peer := h.topo.hosts[name]; peer != nil {
			if _, ok := peer.Ifaces[h.Name]; ok {
				offloadOff(t, peer, bin, h.Name)
			}
		}
	}
	return mtu
}

func offloadOff(t testing.TB, h *Host, bin, iface string) {
	t.Helper()
	args := append([]string{"-K", iface}, featureArgs()...)
	if out, err := h.Command(bin, args...).CombinedOutput(); err != nil {
		t.Fatalf("netns: in %s: ethtool %s: %v: %s", h.ns(), strings.Join(args, " "), err, out)
	}
}

func featureArgs() []string {
	var a []string
	for _, f := range offloadFeatures {
		a = append(a, f, "off")
	}
	return a
}

func (h *Host) mtu(t testing.TB, iface string) int {
	t.Helper()
	var m int
	if err := h.Do(func() error {
		ifc, err := net.InterfaceByName(iface)
		if err != nil {
			return err
		}
		m = ifc.MTU
		return nil
	}); err != nil {
		t.Fatalf("netns: in %s: interface %s: %v", h.ns(), iface, err)
	}
	return m
}

// MTU returns the MTU of interface iface of h.
func (h *Host) MTU(t testing.TB, iface string) int {
	t.Helper()
	if h == nil {
		ifc, err := net.InterfaceByName(iface)
		if err != nil {
			t.Fatalf("netns: root namespace: interface %s: %v", iface, err)
		}
		return ifc.MTU
	}
	return h.mtu(t, iface)
}
