package dhcpinform

import (
	"errors"
	"net/netip"
	"reflect"
	"strings"
	"testing"

	"github.com/fleetgate/fleetgate/internal/realpeer"
)

var (
	testGW     = netip.MustParseAddr("10.10.0.1")
	testClient = netip.MustParseAddr("10.10.0.7")
	testRoutes = []Route{
		{netip.MustParsePrefix("10.20.0.0/16"), testGW},
		{netip.MustParsePrefix("10.10.8.0/24"), testGW},
	}
)

// TestClientRoundTrip: our INFORM is understood by our responder, and its
// ACK gives back the routes, DNS and server id, for the same transaction.
func TestClientRoundTrip(t *testing.T) {
	inform := AppendInform(nil, testClient, 0xfeedf00d, nil)
	in, err := Parse(inform)
	if err != nil {
		t.Fatalf("our INFORM does not parse: %v", err)
	}
	if in.CIAddr != testClient || in.XID != 0xfeedf00d || in.Dst != netip.AddrFrom4([4]byte{255, 255, 255, 255}) {
		t.Fatalf("parsed inform %+v", in)
	}
	if !strings.Contains(string(in.ParamRequest), string([]byte{optClasslessRoutes})) || !strings.Contains(string(in.ParamRequest), string([]byte{optMSClasslessRoute})) {
		t.Fatalf("option 55 %v lacks 121/249", in.ParamRequest)
	}
	ack, err := AppendAck(nil, in, Reply{ServerID: testGW, Routes: testRoutes, DNS: []netip.Addr{netip.MustParseAddr("10.20.0.53")}, Domain: "corp.example"})
	if err != nil {
		t.Fatal(err)
	}
	if !IsReply(ack) {
		t.Fatal("IsReply(ack) = false")
	}
	if IsReply(inform) {
		t.Fatal("IsReply(inform) = true")
	}
	a, err := ParseAck(ack)
	if err != nil {
		t.Fatal(err)
	}
	if a.XID != 0xfeedf00d || a.ServerID != testGW || !a.HaveRoutes || !reflect.DeepEqual(a.Routes, testRoutes) ||
		len(a.DNS) != 1 || a.DNS[0] != netip.MustParseAddr("10.20.0.53") || a.Domain != "corp.example" || a.Dst != testClient {
		t.Fatalf("ack %+v", a)
	}
}

// TestParseAckVariants: no route options, 249 only, not an ACK, and an
// INFORM handed to ParseAck.
func TestParseAckVariants(t *testing.T) {
	in, err := Parse(AppendInform(nil, testClient, 7, nil))
	if err != nil {
		t.Fatal(err)
	}
	ack, _ := AppendAck(nil, in, Reply{ServerID: testGW})
	a, err := ParseAck(ack)
	if err != nil || a.HaveRoutes || len(a.Routes) != 0 {
		t.Fatalf("ack without routes: %+v, %v", a, err)
	}

	// Only option 249 (some servers send just Microsoft's).
	ack, _ = AppendAck(nil, in, Reply{ServerID: testGW, Routes: testRoutes})
	renumberOption(t, ack, optClasslessRoutes, optPad+200) // unknown option 200 now
	a, err = ParseAck(ack)
	if err != nil || !a.HaveRoutes || !reflect.DeepEqual(a.Routes, testRoutes) {
		t.Fatalf("249 only: %+v, %v", a, err)
	}

	// A NAK-typed reply.
	ack, _ = AppendAck(nil, in, Reply{ServerID: testGW})
	setMessageType(t, ack, 6)
	if _, err := ParseAck(ack); !errors.Is(err, ErrNotAck) {
		t.Fatalf("NAK: err %v, want ErrNotAck", err)
	}
	if _, err := ParseAck(AppendInform(nil, testClient, 7, nil)); !errors.Is(err, ErrNotReply) {
		t.Fatalf("INFORM as ACK: err %v, want ErrNotReply", err)
	}
}

// options returns the option area of a DHCP packet built by this package
// (20-byte IP header, no IP options).
func options(pkt []byte) []byte { return pkt[20+8+bootpLen+4:] }

func renumberOption(t *testing.T, pkt []byte, from, to byte) {
	t.Helper()
	o := options(pkt)
	for i := 0; i < len(o) && o[i] != optEnd; {
		if o[i] == optPad {
			i++
			continue
		}
		if o[i] == from {
			o[i] = to
			return
		}
		i += 2 + int(o[i+1])
	}
	t.Fatalf("option %d not found", from)
}

func setMessageType(t *testing.T, pkt []byte, typ byte) {
	t.Helper()
	o := options(pkt)
	if o[0] != optMessageType {
		t.Fatal("message type is not the first option")
	}
	o[2] = typ
}

// TestTsharkDissectsInform has Wireshark judge our own client's INFORM.
func TestTsharkDissectsInform(t *testing.T) {
	path := realpeer.WritePcap(t, AppendInform(nil, testClient, 0x1234, nil))
	checks := []string{"-o", "ip.check_checksum:TRUE", "-o", "udp.check_checksum:TRUE"}
	text := realpeer.Decode(t, path, "", checks...)
	for _, want := range []string{"DHCP: Inform (8)", "Client IP address: 10.10.0.7", "Parameter Request List Item: (121) Classless Static Route",
		"Parameter Request List Item: (249) Private/Classless Static Route (Microsoft)", "[Checksum Status: Good]"} {
		if !strings.Contains(text, want) {
			t.Errorf("tshark output lacks %q", want)
		}
	}
	if mal := realpeer.Lines(t, path, "_ws.malformed || _ws.expert.severity >= warning", checks...); len(mal) > 0 {
		t.Errorf("tshark flags our INFORM:\n%s", strings.Join(mal, "\n"))
	}
	if t.Failed() {
		t.Logf("tshark -V:\n%s", text)
	}
}

func FuzzParseAck(f *testing.F) {
	in, err := Parse(AppendInform(nil, testClient, 1, nil))
	if err != nil {
		f.Fatal(err)
	}
	ack, _ := AppendAck(nil, in, Reply{ServerID: testGW, Routes: testRoutes, DNS: []netip.Addr{testGW}, Domain: "x"})
	f.Add(ack)
	ack, _ = AppendAck(nil, in, Reply{ServerID: testGW})
	f.Add(ack)
	f.Fuzz(func(t *testing.T, b []byte) {
		a, err := ParseAck(b)
		if err != nil {
			return
		}
		if !IsReply(b) {
			t.Fatal("ParseAck accepted a packet IsReply rejects")
		}
		if !a.HaveRoutes && len(a.Routes) != 0 {
			t.Fatal("routes without a route option")
		}
	})
}
