package realpeer

import (
	"net"
	"net/netip"
	"strings"
	"testing"
	"time"

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
