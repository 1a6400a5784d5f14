package realpeer

import (
	"fmt"
	"net"
	"time"

	"golang.org/x/sys/unix"

	"github.com/fleetgate/fleetgate/internal/netns"
)

// probeEtherType marks the frames StartCapture sends to learn that dumpcap
// really captures: IEEE 802 "local experimental" EtherType 1, which no
// product traffic uses and which Wireshark dissects as plain data.
const probeEtherType = 0x88b5

// probeFilter is the display filter matching the probe frames (Ethernet
// links and the "any" device's cooked header).
const probeFilter = "eth.type == 0x88b5 || sll.etype == 0x88b5"

// captureFilter extends a BPF capture filter so that the probes pass it.
func captureFilter(filter string) string {
	if filter == "" {
		return ""
	}
	return fmt.Sprintf("(%s) or ether proto 0x%04x", filter, probeEtherType)
}

// sendProbe sends one probe frame out of iface of host h ("any": out of
// lo): a broadcast Ethernet frame the receiving stack drops.
func sendProbe(h *netns.Host, iface string) error {
	if iface == "any" {
		iface = "lo"
	}
	return h.Do(func() error {
		ifc, err := net.InterfaceByName(iface)
		if err != nil {
			return err
		}
		proto := int(htons(probeEtherType))
		fd, err := unix.Socket(unix.AF_PACKET, unix.SOCK_RAW, proto)
		if err != nil {
			return fmt.Errorf("realpeer: capture probe socket: %w", err)
		}
		defer unix.Close(fd)
		frame := make([]byte, 60) // Ethernet minimum, without FCS
		copy(frame[0:6], []byte{0xff, 0xff, 0xff, 0xff, 0xff, 0xff})
		copy(frame[6:12], ifc.HardwareAddr)
		frame[12], frame[13] = probeEtherType>>8, probeEtherType&0xff
		copy(frame[14:], "fleetgate capture probe")
		sa := &unix.SockaddrLinklayer{Protocol: htons(probeEtherType), Ifindex: ifc.Index, Halen: 6}
		copy(sa.Addr[:], frame[0:6])
		if err := unix.Sendto(fd, frame, 0, sa); err != nil {
			return fmt.Errorf("realpeer: capture probe on %s: %w", iface, err)
		}
		return nil
	})
}

func htons(v uint16) uint16 { return v<<8 | v>>8 }

// awaitCapturing sends probes until one shows up in the capture file:
// dumpcap prints "Capturing on" before its filter is in place, and
// libpcap drains what the socket received before that, so packets sent
// right after the message were missing from the file (the first three
// Main Mode packets of an exchange, one run in four on a loaded machine).
func (c *Capture) awaitCapturing(h *netns.Host, iface string) error {
	deadline := time.Now().Add(15 * time.Second)
	for time.Now().Before(deadline) {
		if err := sendProbe(h, iface); err != nil {
			return err
		}
		// libpcap hands packets over in blocks retired within ~250 ms.
		for end := time.Now().Add(time.Second); time.Now().Before(end); time.Sleep(150 * time.Millisecond) {
			if out, err := tshark("-n", "-r", c.Path, "-Y", probeFilter, "-T", "fields", "-e", "frame.number"); err == nil && len(out) > 0 {
				return nil
			}
		}
	}
	return fmt.Errorf("realpeer: no capture probe reached %s within 15 s", c.Path)
}
