package admission

import (
	"net/netip"
	"testing"
	"time"

	"github.com/fleetgate/fleetgate/internal/stacktest"
)

func TestPerSourceAndGlobal(t *testing.T) {
	clk := stacktest.NewClock()
	l := New(Config{GlobalRate: 10, GlobalBurst: 10, PerSourceRate: 1, PerSourceBurst: 3, Clock: clk})
	flood := netip.MustParseAddr("203.0.113.66")
	var got [6]Decision
	for i := range got {
		got[i] = l.Allow(flood)
	}
	want := [6]Decision{Admit, Admit, Admit, RejectSource, RejectSource, RejectSource}
	if got != want {
		t.Errorf("flooding source: got %v, want %v", got, want)
	}
	// Other sources are unaffected by the flood; the global bucket (10)
	// has 7 tokens left.
	admitted := 0
	for i := 0; i < 10; i++ {
		if l.Allow(netip.AddrFrom4([4]byte{198, 51, 100, byte(i)})) == Admit {
			admitted++
		}
	}
	if admitted != 7 {
		t.Errorf("other sources admitted: got %d, want 7 (global burst 10 minus 3)", admitted)
	}
	if l.Stats.RejectedGlobal.Load() != 3 || l.Stats.RejectedSource.Load() != 3 || l.Stats.Admitted.Load() != 10 {
		t.Errorf("stats: admitted %d source %d global %d", l.Stats.Admitted.Load(), l.Stats.RejectedSource.Load(), l.Stats.RejectedGlobal.Load())
	}
	// One second later the flooding source has one new token.
	clk.Advance(time.Second)
	if d := l.Allow(flood); d != Admit {
		t.Errorf("after 1s: got %v, want admit", d)
	}
	if d := l.Allow(flood); d != RejectSource {
		t.Errorf("second after 1s: got %v, want source_rate", d)
	}
}

func TestSourceTableBounded(t *testing.T) {
	clk := stacktest.NewClock()
	l := New(Config{GlobalRate: 1e6, GlobalBurst: 1e6, PerSourceRate: 1, PerSourceBurst: 1, MaxSources: 4, Clock: clk})
	for i := 0; i < 4; i++ {
		l.Allow(netip.AddrFrom4([4]byte{192, 0, 2, byte(i)}))
	}
	// Table full, nobody idle: a new source is admitted on the global
	// bucket alone and not tracked.
	if d := l.Allow(netip.MustParseAddr("192.0.2.200")); d != Admit || l.Sources() != 4 {
		t.Errorf("full table: got %v with %d sources", d, l.Sources())
	}
	clk.Advance(time.Minute)
	l.Allow(netip.MustParseAddr("192.0.2.201"))
	if got := l.Sources(); got != 1 {
		t.Errorf("after idle eviction: got %d sources, want 1", got)
	}
}

// TestPerSourceIPv6Prefix: the addresses of one IPv6 /64 share one
// per-source bucket.
func TestPerSourceIPv6Prefix(t *testing.T) {
	l := New(Config{GlobalRate: 100, GlobalBurst: 100, PerSourceRate: 1, PerSourceBurst: 3, Clock: stacktest.NewClock()})
	admitted := 0
	for i := range 10 {
		a := netip.AddrFrom16([16]byte{0x20, 0x01, 0x0d, 0xb8, 0, 0x66, 0, 0, 0, 0, 0, 0, 0, 0, 0, byte(i + 1)})
		if l.Allow(a) == Admit {
			admitted++
		}
	}
	if admitted != 3 {
		t.Fatalf("10 addresses of one /64: %d admitted, want 3 (one bucket)", admitted)
	}
	if l.Allow(netip.MustParseAddr("2001:db8:66:1::1")) != Admit {
		t.Fatal("another /64 refused")
	}
}
