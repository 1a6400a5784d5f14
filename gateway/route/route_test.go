package route

import (
	"errors"
	"fmt"
	"net/netip"
	"runtime"
	"testing"
)

type fakeSession struct {
	id     uint64
	ident  string
	addr   netip.Addr
	routes []netip.Prefix
}

func (f *fakeSession) ID() uint64               { return f.id }
func (f *fakeSession) Identity() string         { return f.ident }
func (f *fakeSession) Addr() netip.Addr         { return f.addr }
func (f *fakeSession) Routes() []netip.Prefix   { return f.routes }
func (f *fakeSession) WritePacket([]byte) error { return nil }
func (f *fakeSession) MTU() int                 { return 1400 }

func sess(id uint64, ident, addr string, routes ...string) *fakeSession {
	s := &fakeSession{id: id, ident: ident, addr: netip.MustParseAddr(addr)}
	for _, r := range routes {
		s.routes = append(s.routes, netip.MustParsePrefix(r))
	}
	return s
}

func TestLongestPrefixMatch(t *testing.T) {
	tb := NewTable()
	a := sess(1, "hall7", "10.10.0.7", "10.10.8.0/24")
	b := sess(2, "pump2", "10.10.0.9", "10.10.8.128/25", "10.11.0.0/16")
	c := sess(3, "ops", "10.10.0.20")
	for _, s := range []*fakeSession{a, b, c} {
		if _, err := tb.Add(s, true); err != nil {
			t.Fatal(err)
		}
	}
	tests := []struct {
		dst  string
		want Session
	}{
		{"10.10.0.7", a},
		{"10.10.8.17", a},
		{"10.10.8.200", b}, // /25 beats /24
		{"10.11.3.4", b},
		{"10.10.0.20", c},
		{"10.10.0.21", nil},
		{"192.0.2.1", nil},
	}
	for _, tt := range tests {
		got := tb.Lookup(netip.MustParseAddr(tt.dst))
		if got != tt.want {
			t.Errorf("Lookup(%s) = %v, want %v", tt.dst, name(got), name(tt.want))
		}
	}
	if tb.Lookup(netip.MustParseAddr("2001:db8::1")) != nil {
		t.Error("IPv6 lookup returned a session")
	}
}

func name(s Session) string {
	if s == nil {
		return "<nil>"
	}
	return s.Identity()
}

func TestReplaceAndConflicts(t *testing.T) {
	tb := NewTable()
	old := sess(1, "hall7", "10.10.0.7", "10.10.8.0/24")
	if _, err := tb.Add(old, true); err != nil {
		t.Fatal(err)
	}
	// Another identity may not take the address or the framed route.
	if _, err := tb.Add(sess(2, "intruder", "10.10.0.7"), true); !errors.Is(err, ErrAddrInUse) {
		t.Errorf("address conflict: got %v, want ErrAddrInUse", err)
	}
	if _, err := tb.Add(sess(3, "intruder", "10.10.0.8", "10.10.8.0/24"), true); !errors.Is(err, ErrRouteInUse) {
		t.Errorf("route conflict: got %v, want ErrRouteInUse", err)
	}
	// Same identity logging in again with replacement off is refused.
	again := sess(4, "hall7", "10.10.0.7", "10.10.8.0/24")
	if _, err := tb.Add(again, false); !errors.Is(err, ErrLoggedIn) {
		t.Errorf("relogin without replace: got %v, want ErrLoggedIn", err)
	}
	// With replacement the old session is returned and the routes move.
	got, err := tb.Add(again, true)
	if err != nil || got != old {
		t.Fatalf("replace: got %v, %v; want old session", name(got), err)
	}
	if tb.Lookup(netip.MustParseAddr("10.10.8.1")) != again {
		t.Error("framed route not moved to the new session")
	}
	if tb.Remove(old) {
		t.Error("Remove(old) after replacement reported true")
	}
	if tb.Lookup(netip.MustParseAddr("10.10.8.1")) != again {
		t.Error("removing the replaced session dropped the new one's route")
	}
	if !tb.Remove(again) || tb.Len() != 0 || tb.Lookup(netip.MustParseAddr("10.10.0.7")) != nil {
		t.Error("table not empty after removing the last session")
	}
	if _, err := tb.Add(sess(5, "x", "10.10.0.5"), true); err != nil {
		t.Fatal(err)
	}
	if _, err := tb.Add(sess(5, "y", "10.10.0.6"), true); !errors.Is(err, ErrDuplicate) {
		t.Errorf("duplicate ID: got %v, want ErrDuplicate", err)
	}
}

func BenchmarkLookup(b *testing.B) {
	tb := NewTable()
	for i := 0; i < 1000; i++ {
		a := netip.AddrFrom4([4]byte{10, 10, byte(i >> 8), byte(i)})
		r := netip.PrefixFrom(netip.AddrFrom4([4]byte{10, 100 + byte(i>>8), byte(i), 0}), 24)
		if _, err := tb.Add(&fakeSession{id: uint64(i + 1), ident: a.String(), addr: a, routes: []netip.Prefix{r}}, true); err != nil {
			b.Fatal(err)
		}
	}
	dst := netip.MustParseAddr("10.100.200.17")
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		if tb.Lookup(dst) == nil {
			b.Fatal("miss")
		}
	}
}

// BenchmarkTableMemory reports the table's heap cost per session (address
// + one framed route) at 1k and 10k sessions.
func BenchmarkTableMemory(b *testing.B) {
	for _, n := range []int{1000, 10000} {
		b.Run(fmt.Sprint(n), func(b *testing.B) {
			for it := 0; it < b.N; it++ {
				sessions := make([]*fakeSession, n)
				for i := range sessions {
					a := netip.AddrFrom4([4]byte{10, byte(10 + i>>16), byte(i >> 8), byte(i)})
					sessions[i] = &fakeSession{id: uint64(i + 1), ident: a.String(), addr: a,
						routes: []netip.Prefix{netip.PrefixFrom(netip.AddrFrom4([4]byte{11, byte(i >> 16), byte(i >> 8), byte(i)}), 32)}}
				}
				runtime.GC()
				var m0, m1 runtime.MemStats
				runtime.ReadMemStats(&m0)
				tb := NewTable()
				for _, s := range sessions {
					if _, err := tb.Add(s, true); err != nil {
						b.Fatal(err)
					}
				}
				runtime.GC()
				runtime.ReadMemStats(&m1)
				b.ReportMetric(float64(m1.HeapAlloc-m0.HeapAlloc)/float64(n), "B/session")
				runtime.KeepAlive(tb)
			}
		})
	}
}
