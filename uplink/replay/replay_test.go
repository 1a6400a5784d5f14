package replay

import (
	"encoding/binary"
	"testing"
)

func TestFilter(t *testing.T) {
	type step struct {
		seq  uint64
		want bool
	}
	tests := []struct {
		name  string
		steps []step
	}{
		{"zero is never valid", []step{{0, false}, {1, true}, {0, false}}},
		{"in order", []step{{1, true}, {2, true}, {3, true}, {4, true}}},
		{"duplicate", []step{{1, true}, {2, true}, {2, false}, {1, false}}},
		{"reorder inside window", []step{{5, true}, {3, true}, {4, true}, {1, true}, {2, true}, {3, false}}},
		{"edge of window", []step{
			{WindowSize + 10, true},
			{11, true},  // last - seq == WindowSize-1: inside
			{10, false}, // last - seq == WindowSize: outside
			{11, false}, // duplicate
		}},
		{"jump clears old bits", []step{
			{1, true}, {2, true},
			{2 + WindowSize + 5000, true},
			{2 + 5000 + 1, true}, // same ring slot as an old, cleared seq
			{2 + 5000 + 1, false},
			{2, false},
		}},
		{"jump by exactly one block", []step{{63, true}, {64, true}, {127, true}, {128, true}, {64, false}, {65, true}}},
		{"huge jump", []step{{1, true}, {1 << 40, true}, {1<<40 - 1, true}, {1<<40 - WindowSize, false}}},
		{"32-bit top", []step{{0xFFFFFFFF, true}, {0xFFFFFFFE, true}, {0xFFFFFFFF, false}}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var f Filter
			for i, s := range tt.steps {
				if got := f.Check(s.seq); got != s.want {
					t.Fatalf("step %d: Check(%d) = %v, want %v", i, s.seq, got, s.want)
				}
				if got := f.Update(s.seq); got != s.want {
					t.Fatalf("step %d: Update(%d) = %v, want %v", i, s.seq, got, s.want)
				}
			}
		})
	}
}

// TestFilterWholeWindow accepts every sequence number of a full window in
// reverse order after the top one, then rejects them all as duplicates.
func TestFilterWholeWindow(t *testing.T) {
	var f Filter
	top := uint64(10 * WindowSize)
	if !f.Update(top) {
		t.Fatal("top rejected")
	}
	for s := top - 1; s > top-WindowSize; s-- {
		if !f.Update(s) {
			t.Fatalf("Update(%d) = false, want true", s)
		}
	}
	for s := top; s > top-WindowSize; s-- {
		if f.Check(s) {
			t.Fatalf("Check(%d) after receipt = true, want false", s)
		}
	}
	if f.Check(top - WindowSize) {
		t.Fatalf("Check(top-WindowSize) = true, want false (outside window)")
	}
	if got := f.Last(); got != top {
		t.Fatalf("Last() = %d, want %d", got, top)
	}
	f.Reset()
	if !f.Check(1) || f.Last() != 0 {
		t.Fatal("Reset did not empty the filter")
	}
}

// reference is an obviously-correct model: a set of accepted numbers.
type reference struct {
	last uint64
	seen map[uint64]bool
}

func (r *reference) update(seq uint64) bool {
	if seq == 0 || r.seen[seq] {
		return false
	}
	if seq <= r.last && r.last-seq >= WindowSize {
		return false
	}
	if seq > r.last {
		r.last = seq
	}
	r.seen[seq] = true
	return true
}

// FuzzFilter compares the bitmap against the set model on arbitrary
// sequences of counters (each 2 bytes of input is a signed step).
func FuzzFilter(f *testing.F) {
	f.Add([]byte{0, 1, 0, 1, 0, 1})
	f.Add([]byte{0x10, 0, 0xFF, 0xF0, 0, 5, 0, 5})
	f.Add([]byte{0x7F, 0xFF, 0x80, 0x01, 0x04, 0x00})
	f.Fuzz(func(t *testing.T, b []byte) {
		var flt Filter
		ref := reference{seen: map[uint64]bool{}}
		cur := uint64(WindowSize * 4)
		for len(b) >= 2 {
			step := int64(int16(binary.BigEndian.Uint16(b)))
			b = b[2:]
			if step < 0 && uint64(-step) > cur {
				cur = 0
			} else {
				cur = uint64(int64(cur) + step)
			}
			want := ref.update(cur)
			if got := flt.Check(cur); got != want {
				t.Fatalf("Check(%d) = %v, model says %v", cur, got, want)
			}
			if got := flt.Update(cur); got != want {
				t.Fatalf("Update(%d) = %v, model says %v", cur, got, want)
			}
		}
	})
}

func BenchmarkFilterInOrder(b *testing.B) {
	var f Filter
	for i := 0; i < b.N; i++ {
		f.Update(uint64(i) + 1)
	}
}
