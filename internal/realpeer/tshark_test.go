package realpeer

import (
	"encoding/binary"
	"net"
	"net/netip"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/fleetgate/fleetgate/internal/netns"
)

// TestCaptureMalformed: a capture of a clean xl2tpd exchange has no
// malformed packets and shows L2TP control messages; a truncated L2TP
// header sent to UDP 1701 is flagged.
func TestCaptureMalformed(t *testing.T) {
	p := netns.Pair(t)
	a, b := p.Host("a"), p.Host("b")
	capture := StartCapture(t, b, "a", "udp port 1701")
	StartXL2TPD(t, b, XL2TPDConfig{})
	lac := StartXL2TPD(t, a, XL2TPDConfig{LNS: netip.AddrPortFrom(b.Addr, 1701)})
	lac.WaitOutput(t, 10*time.Second, "Call established with 192.0.2.2")
	clean := capture.Stop()
	if bad := Malformed(t, clean); len(bad) != 0 {
		t.Errorf("clean exchange: %d malformed packets, want none:\n%s", len(bad), strings.Join(bad, "\n"))
	}
	if s := Summary(t, clean); !strings.Contains(s, "SCCRQ") || !strings.Contains(s, "ICCN") {
		t.Errorf("summary lacks SCCRQ/ICCN:\n%s", s)
	}

	capture = StartCapture(t, b, "a", "udp port 1701")
	err := a.Do(func() error {
		c, err := net.DialUDP("udp4", nil, &net.UDPAddr{IP: b.Addr.AsSlice(), Port: 1701})
		if err != nil {
			return err
		}
		defer c.Close()
		// L2TP control header claiming 200 bytes, 12 present.
		_, err = c.Write([]byte{0xc8, 0x02, 0x00, 0xc8, 0x00, 0x01, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00})
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	if bad := Malformed(t, capture.Stop()); len(bad) != 1 {
		t.Errorf("truncated L2TP: %d flagged packets %q, want 1", len(bad), bad)
	}
}

// udp4 builds an IPv4/UDP packet from 192.0.2.1:40000 to 192.0.2.2:dport
// with correct header checksum (UDP checksum 0: none).
func udp4(dport uint16, payload []byte) []byte {
	b := make([]byte, 28+len(payload))
	b[0], b[8], b[9] = 0x45, 64, 17
	binary.BigEndian.PutUint16(b[2:], uint16(len(b)))
	copy(b[12:], []byte{192, 0, 2, 1, 192, 0, 2, 2})
	var s uint32
	for i := 0; i < 20; i += 2 {
		s += uint32(binary.BigEndian.Uint16(b[i:]))
	}
	for s>>16 != 0 {
		s = s&0xffff + s>>16
	}
	binary.BigEndian.PutUint16(b[10:], ^uint16(s))
	binary.BigEndian.PutUint16(b[20:], 40000)
	binary.BigEndian.PutUint16(b[22:], dport)
	binary.BigEndian.PutUint16(b[24:], uint16(8+len(payload)))
	copy(b[28:], payload)
	return b
}

// TestWritePcapJudged: packets a test made itself are judged without a
// live capture: a well-formed L2TP Hello passes, a truncated L2TP header
// is flagged, and MalformedWhere and Lines select by display filter.
func TestWritePcapJudged(t *testing.T) {
	hello := []byte{0xc8, 0x02, 0x00, 0x14, 0x00, 0x01, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,
		0x80, 0x08, 0x00, 0x00, 0x00, 0x00, 0x00, 0x06} // Message Type AVP: HELLO (6)
	truncated := []byte{0xc8, 0x02, 0x00, 0xc8, 0x00, 0x01, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00}
	good := WritePcap(t, udp4(1701, hello))
	if bad := Malformed(t, good); len(bad) != 0 {
		t.Errorf("Hello: %d flagged packets %q, want none", len(bad), bad)
	}
	if l := Lines(t, good, "l2tp"); len(l) != 1 || !strings.Contains(l[0], "Hello") {
		t.Errorf("Lines(l2tp) = %q, want one Hello", l)
	}
	mixed := WritePcap(t, udp4(1701, hello), udp4(1701, truncated))
	if bad := Malformed(t, mixed); len(bad) != 1 {
		t.Errorf("Hello+truncated: %d flagged packets %q, want 1", len(bad), bad)
	}
	if bad := MalformedWhere(t, mixed, "frame.number == 1"); len(bad) != 0 {
		t.Errorf("scope frame 1: %d flagged packets %q, want none", len(bad), bad)
	}
	if n := len(Lines(t, mixed, "")); n != 2 {
		t.Errorf("Lines(all) = %d packets, want 2", n)
	}
}

// sendGSO sends one UDP_SEGMENT write of n bytes cut into seg-byte
// datagrams from host a to b:9999 (what the product's ESP path does).
func sendGSO(t *testing.T, a *netns.Host, to netip.Addr, n, seg int) {
	t.Helper()
	err := a.Do(func() error {
		c, err := net.DialUDP("udp4", nil, &net.UDPAddr{IP: to.AsSlice(), Port: 9999})
		if err != nil {
			return err
		}
		defer c.Close()
		rc, err := c.SyscallConn()
		if err != nil {
			return err
		}
		var serr error
		if err := rc.Control(func(fd uintptr) {
			serr = unix.SetsockoptInt(int(fd), unix.IPPROTO_UDP, unix.UDP_SEGMENT, seg)
		}); err != nil {
			return err
		}
		if serr != nil {
			return serr
		}
		_, err = c.Write(make([]byte, n))
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
}

// TestCaptureWireSized: a UDP GSO write of 10,000 bytes in 1,400-byte
// segments crosses a veth as one 10,028-byte super-frame while the veth's
// offloads are on (OverMTU finds it: the check can fail), and as 8
// datagrams none larger than the MTU once StartCapture has made the link
// wire-sized.
func TestCaptureWireSized(t *testing.T) {
	p := netns.Pair(t)
	a, b := p.Host("a"), p.Host("b")

	raw := startCapture(t, b, "a", "udp port 9999", false)
	sendGSO(t, a, b.Addr, 10000, 1400)
	raw.checked.Do(func() {}) // this capture is meant to hold a super-frame
	if big := OverMTU(t, raw.Stop(), raw.MTU); len(big) != 1 {
		t.Errorf("offloads on: %d packets over MTU %d, want the one super-frame: %q", len(big), raw.MTU, big)
	}

	capture := StartCapture(t, b, "a", "udp port 9999")
	if capture.MTU != 1500 {
		t.Errorf("capture MTU %d, want the veth's 1500", capture.MTU)
	}
	sendGSO(t, a, b.Addr, 10000, 1400)
	path := capture.Stop()
	if n := len(Lines(t, path, "udp.dstport == 9999")); n != 8 {
		t.Errorf("wire-sized: %d datagrams captured, want 8 (10000 B in 1400 B segments)", n)
	}
	if big := OverMTU(t, path, capture.MTU); len(big) != 0 {
		t.Errorf("wire-sized: %d packets over MTU: %q", len(big), big)
	}
}
