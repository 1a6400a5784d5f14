package realpeer

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/fleetgate/fleetgate/internal/netns"
	"github.com/fleetgate/fleetgate/internal/testenv"
)

// Capture is a running dumpcap writing a pcapng file.
type Capture struct {
	// Path is the capture file.
	Path string
	// Proc is the dumpcap process.
	Proc *netns.Proc
	// MTU is the largest IP packet the captured link can carry (the
	// largest veth MTU for "any"; 0: not checked, the root namespace's
	// "any"). Stop fails the test if a captured packet is larger.
	MTU int

	t       testing.TB
	checked sync.Once
}

// StartCapture captures on interface iface of host h (nil: root
// namespace, e.g. "lo") into a file in t.TempDir, with an optional capture
// filter (BPF syntax, e.g. "udp port 500 or udp port 4500"). It returns once
// a probe frame it sent out of iface is in the file, so that nothing sent
// afterwards can be missed (probe frames have EtherType 0x88b5, pass any
// filter and are dissected as plain data). If the test fails, a decoded
// summary is logged at cleanup.
//
// The capture sees wire-sized packets: before it starts, segmentation and
// receive offloads are turned off on the captured interface(s) and their
// veth peers (netns.Host.WireSized), since the product sends with UDP GSO
// and a super-frame of up to 64 KB would otherwise be captured (and
// dissected by tshark) as one packet. Stop checks that no captured IP
// packet exceeds the link MTU.
func StartCapture(t testing.TB, h *netns.Host, iface string, filter string) *Capture {
	t.Helper()
	return startCapture(t, h, iface, filter, true)
}

func startCapture(t testing.TB, h *netns.Host, iface string, filter string, wireSized bool) *Capture {
	t.Helper()
	testenv.RequireRoot(t)
	bin := testenv.RequireBinary(t, "dumpcap")
	testenv.RequireBinary(t, "tshark")
	c := &Capture{Path: filepath.Join(t.TempDir(), iface+".pcapng"), t: t}
	if wireSized {
		c.MTU = h.WireSized(t, iface)
	} else {
		c.MTU = h.MTU(t, iface)
	}
	args := []string{"-i", iface, "-w", c.Path}
	if filter != "" {
		args = append(args, "-f", captureFilter(filter))
	}
	c.Proc = netns.Start(t, h.Command(bin, args...))
	if !poll(10*time.Second, func() bool { return strings.Contains(c.Proc.Output(), "Capturing on") }) {
		t.Fatalf("%v: dumpcap did not start:\n%s", ErrNotReady, c.Proc.Output())
	}
	if err := c.awaitCapturing(h, iface); err != nil {
		t.Fatalf("%v: %v\n%s", ErrNotReady, err, c.Proc.Output())
	}
	t.Cleanup(func() {
		c.Proc.Stop()
		if t.Failed() {
			if s, err := summary(c.Path); err == nil {
				t.Logf("capture %s:\n%s", c.Path, s)
			}
		}
	})
	return c
}

// WaitFor waits (up to 20 s) until the capture file holds at least n
// packets matching the tshark display filter, and fails the test if it
// never does. A test that knows what it sent calls it before Stop, so
// that what it then judges does not depend on when libpcap retired its
// last block (captureDrain is only a margin for the packets nobody
// counted).
func (c *Capture) WaitFor(displayFilter string, n int) {
	c.t.Helper()
	got := 0
	ok := poll(20*time.Second, func() bool {
		out, err := tshark("-n", "-r", c.Path, "-Y", displayFilter, "-T", "fields", "-e", "frame.number")
		if err != nil {
			return false // the file may end in a partial block while dumpcap writes
		}
		got = len(strings.Fields(out))
		return got >= n
	})
	if !ok {
		c.t.Fatalf("capture %s: %d packets match %q after 20 s, want at least %d", c.Path, got, displayFilter, n)
	}
}

// captureDrain is how long Stop lets dumpcap run before stopping it:
// libpcap's TPACKET_V3 ring hands packets over in blocks retired by a
// timeout, and a block not yet retired when dumpcap stops is lost.
const captureDrain = 1200 * time.Millisecond

// Stop ends the capture, after letting in-flight packets reach the file
// (about a second: see captureDrain), and returns the file's path. The
// first Stop fails the test if a captured packet exceeds the link MTU.
func (c *Capture) Stop() string {
	select {
	case <-c.Proc.Done():
	default:
		time.Sleep(captureDrain) // no event tells when libpcap's block is retired
		c.Proc.Stop()
	}
	c.checked.Do(func() {
		if c.MTU <= 0 {
			return
		}
		if big := OverMTU(c.t, c.Path, c.MTU); len(big) > 0 {
			c.t.Errorf("capture %s: %d IP packets larger than the link MTU %d (a segmentation offload super-frame: tshark judges it as one packet):\n%s",
				c.Path, len(big), c.MTU, strings.Join(big, "\n"))
		}
	})
	return c.Path
}

// OverMTU lists (as summary lines) the IPv4 and IPv6 packets in pcap whose
// IP length exceeds mtu: packets no link of that MTU can carry.
func OverMTU(t testing.TB, pcap string, mtu int) []string {
	t.Helper()
	return Lines(t, pcap, fmt.Sprintf("ip.len > %d || ipv6.plen > %d", mtu, mtu-40))
}

func tshark(args ...string) (string, error) {
	cmd := exec.Command("tshark", args...)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		return string(out), fmt.Errorf("realpeer: tshark %s: %w: %s", strings.Join(args, " "), err, stderr.Bytes())
	}
	return string(out), nil
}

func summary(pcap string, opts ...string) (string, error) {
	return tshark(append([]string{"-n", "-r", pcap}, opts...)...)
}

// Summary returns tshark's one-line-per-packet summary of pcap; opts are
// extra tshark flags, e.g. "-o", "isakmp.ikev1_decryption_table:..." or
// "-d", "udp.port==14500,isakmp" to decode non-standard ports.
func Summary(t testing.TB, pcap string, opts ...string) string {
	t.Helper()
	testenv.RequireBinary(t, "tshark")
	s, err := summary(pcap, opts...)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// Decode returns tshark's full decode (-V) of the packets matching the
// display filter (all when empty), with extra opts as for Summary.
func Decode(t testing.TB, pcap, filter string, opts ...string) string {
	t.Helper()
	testenv.RequireBinary(t, "tshark")
	args := append([]string{"-V"}, opts...)
	if filter != "" {
		args = append(args, "-Y", filter)
	}
	s, err := summary(pcap, args...)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// malformedFilter selects packets Wireshark flags as malformed or with an
// expert-info item of severity Error (0x00800000).
const malformedFilter = "_ws.malformed || _ws.expert.severity >= 0x00800000"

// Malformed lists (as summary lines) the packets in pcap that Wireshark
// flags malformed or with an expert error; opts as for Summary. When it
// finds any, it also logs tshark's "-z expert" report. pcap may be any
// capture file, also one a test wrote itself (no live capture needed).
func Malformed(t testing.TB, pcap string, opts ...string) []string {
	t.Helper()
	return MalformedWhere(t, pcap, "", opts...)
}

// MalformedWhere is Malformed limited to the packets matching the display
// filter scope (all when empty), e.g. "udp.srcport == 40000" to judge only
// our side of an exchange with a peer known to send flagged packets.
func MalformedWhere(t testing.TB, pcap, scope string, opts ...string) []string {
	t.Helper()
	filter := malformedFilter
	if scope != "" {
		filter = "(" + scope + ") && (" + malformedFilter + ")"
	}
	bad := Lines(t, pcap, filter, opts...)
	if len(bad) > 0 {
		if rep, err := summary(pcap, append(opts, "-q", "-z", "expert")...); err == nil {
			t.Logf("tshark -z expert for %s:\n%s", pcap, rep)
		}
	}
	return bad
}

// Lines returns tshark's one-line summaries of the packets in pcap that
// match the display filter (all when empty), without empty lines; opts as
// for Summary. len(Lines(...)) counts packets of a kind.
func Lines(t testing.TB, pcap, filter string, opts ...string) []string {
	t.Helper()
	testenv.RequireBinary(t, "tshark")
	if _, err := os.Stat(pcap); err != nil {
		t.Fatalf("realpeer: %v", err)
	}
	if filter != "" {
		opts = append(opts[:len(opts):len(opts)], "-Y", filter)
	}
	out, err := summary(pcap, opts...)
	if err != nil {
		t.Fatal(err)
	}
	var lines []string
	for _, l := range strings.Split(out, "\n") {
		if strings.TrimSpace(l) != "" {
			lines = append(lines, strings.TrimSpace(l))
		}
	}
	return lines
}

// WritePcap writes raw IPv4 packets (LINKTYPE_RAW, 101) as a classic pcap
// file in t.TempDir and returns its path, for judging packets a test made
// itself with Malformed, Decode or Lines (no live capture needed).
func WritePcap(t testing.TB, pkts ...[]byte) string {
	t.Helper()
	b := make([]byte, 24)
	binary.LittleEndian.PutUint32(b[0:], 0xa1b2c3d4) // magic, microsecond timestamps
	binary.LittleEndian.PutUint16(b[4:], 2)          // version 2.4
	binary.LittleEndian.PutUint16(b[6:], 4)
	binary.LittleEndian.PutUint32(b[16:], 65535) // snaplen
	binary.LittleEndian.PutUint32(b[20:], 101)   // LINKTYPE_RAW
	for i, p := range pkts {
		rec := make([]byte, 16)
		binary.LittleEndian.PutUint32(rec[0:], uint32(1700000000+i))
		binary.LittleEndian.PutUint32(rec[8:], uint32(len(p)))
		binary.LittleEndian.PutUint32(rec[12:], uint32(len(p)))
		b = append(append(b, rec...), p...)
	}
	path := filepath.Join(t.TempDir(), "packets.pcap")
	if err := os.WriteFile(path, b, 0o644); err != nil {
		t.Fatal(err)
	}
	return path
}
