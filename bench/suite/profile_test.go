package suite

import (
	"strings"
	"testing"
	"time"

	"github.com/google/pprof/profile"
)

func TestAreaOf(t *testing.T) {
	for _, c := range []struct {
		stack []string
		want  string
	}{
		{[]string{"runtime.scanobject", "runtime.gcDrain", "runtime.gcBgMarkWorker"}, "garbage collection"},
		{[]string{"runtime.memclrNoHeapPointers", "runtime.mallocgc", "github.com/plgd-dev/go-coap/v3/message/pool.New"}, "allocation"},
		{[]string{"internal/runtime/syscall.Syscall6", "syscall.Syscall6", "syscall.sendto"}, "system calls"},
		{[]string{"crypto/internal/fips140/aes.encryptBlock", "github.com/pion/dtls/v3/pkg/crypto/ccm.(*ccm).tag"}, "crypto (standard library)"},
		{[]string{"sync.(*Mutex).Lock", "github.com/plgd-dev/go-coap/v3/udp/client.(*Conn).Run"}, "github.com/plgd-dev/go-coap"},
		{[]string{"github.com/pion/dtls/v3.(*Conn).Read"}, "github.com/pion/dtls"},
		{[]string{"gvisor.dev/gvisor/pkg/tcpip/stack.(*NIC).DeliverNetworkPacket"}, "gvisor.dev/gvisor"},
		{[]string{"golang.org/x/net/ipv4.(*payloadHandler).ReadBatch"}, "golang.org/x/net"},
		{[]string{"bytes.(*Buffer).Write", "github.com/fleetgate/fleetgate/bridge/proxy.(*Proxy).HandleDevice"}, "ours: bridge/proxy"},
		{[]string{"github.com/fleetgate/fleetgate/ipstack.parseUDP"}, "ours: ipstack"},
		{[]string{"runtime.memmove"}, "runtime, other"},
	} {
		if got := areaOf(c.stack); got != c.want {
			t.Errorf("areaOf(%v) = %q, want %q", c.stack, got, c.want)
		}
	}
}

// TestSummarize: a fixed profile gives fixed shares (by the cpu sample
// type), the label filter keeps only that side's samples, and the note
// names the largest area that is neither GC, allocation nor syscalls.
func TestSummarize(t *testing.T) {
	fn := func(id uint64, name string) *profile.Function { return &profile.Function{ID: id, Name: name} }
	coap, gc, sys := fn(1, "github.com/plgd-dev/go-coap/v3/udp/client.(*Conn).Run"), fn(2, "runtime.gcBgMarkWorker"), fn(3, "syscall.sendmsg")
	loc := func(id uint64, f *profile.Function) *profile.Location {
		return &profile.Location{ID: id, Line: []profile.Line{{Function: f}}}
	}
	lc, lg, ls := loc(1, coap), loc(2, gc), loc(3, sys)
	p := &profile.Profile{
		SampleType: []*profile.ValueType{{Type: "samples", Unit: "count"}, {Type: "cpu", Unit: "nanoseconds"}},
		Function:   []*profile.Function{coap, gc, sys},
		Location:   []*profile.Location{lc, lg, ls},
		Sample: []*profile.Sample{
			{Location: []*profile.Location{lc}, Value: []int64{1, 300}, Label: map[string][]string{"side": {"bridge"}}},
			{Location: []*profile.Location{lg}, Value: []int64{1, 500}},
			{Location: []*profile.Location{ls}, Value: []int64{1, 200}, Label: map[string][]string{"side": {"bridge"}}},
			{Location: []*profile.Location{lc}, Value: []int64{1, 1000}, Label: map[string][]string{"side": {"bare"}}},
		},
	}
	all := summarize(p, "")
	if len(all) != 3 || all[0].name != "github.com/plgd-dev/go-coap" || all[0].share != 1300.0/2000 || all[1].name != "garbage collection" {
		t.Fatalf("summarize = %+v", all)
	}
	bridge := summarize(p, "side=bridge")
	if len(bridge) != 2 || bridge[0].share != 0.6 || bridge[1].name != "system calls" {
		t.Fatalf("summarize(side=bridge) = %+v", bridge)
	}
	got := describeAreas([]area{{"garbage collection", 0.4}, {"system calls", 0.3}, {"github.com/pion/dtls", 0.28}, {"ours: ipstack", 0.02}})
	want := "garbage collection 40 %, system calls 30 %, github.com/pion/dtls 28 %; next bottleneck by name: github.com/pion/dtls"
	if got != want {
		t.Fatalf("describeAreas = %q, want %q", got, want)
	}
	if strings.Contains(got, "ipstack") {
		t.Fatal("an area under 3 % was listed")
	}
}

func TestDescribeExtra(t *testing.T) {
	ns := func(n int) time.Duration { return time.Duration(n) * time.Nanosecond }
	ours := map[string]time.Duration{"crypto (standard library)": ns(800), "ours: ipstack": ns(300), "system calls": ns(400), "ours: uplink/l2tp": ns(30), "runtime, other": ns(10)}
	ceiling := map[string]time.Duration{"crypto (standard library)": ns(790), "system calls": ns(350), "runtime, other": ns(5)}
	got := describeExtra(ours, ceiling)
	want := "395ns more CPU per packet in all: ours: ipstack +300ns, system calls +50ns, ours: uplink/l2tp +30ns"
	if got != want {
		t.Errorf("describeExtra:\n got %q\nwant %q", got, want)
	}
}
