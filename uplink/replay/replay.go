// Package replay implements the ESP anti-replay window of RFC 4303 §3.4.3
// as the ring-of-blocks bitmap of RFC 6479 (the layout wireguard-go's replay
// package uses): accepting a packet costs a few word operations, sliding the
// window forward clears whole 64-bit blocks, and nothing is ever shifted.
//
// IKEv1 negotiates no Extended Sequence Numbers, so sequence numbers are the
// 32-bit ESP field; a Filter nonetheless works on uint64 counters.
package replay

// WindowSize is the number of sequence numbers below the highest one seen
// that are still accepted (once each). RFC 4303 §3.4.3 asks for at least 32
// and recommends 64; issue 4 asks for at least 128. 1024 keeps a fast
// gateway's reordering (several cores, bursts) out of the drop counter.
const WindowSize = 1024

const (
	blockBits = 64
	// ringBlocks is a power of two larger than WindowSize/blockBits + 1, so
	// the block holding the highest counter never overlaps the block holding
	// the lowest one still in the window (RFC 6479 §2.1).
	ringBlocks = 32
	blockMask  = ringBlocks - 1
	bitMask    = blockBits - 1
)

// Filter is one SA's receive window. The zero value is ready and accepts
// any sequence number above zero (ESP sequence number 0 is never sent,
// RFC 4303 §3.3.3).
//
// A Filter is not safe for concurrent use; the ESP SA serialises access.
type Filter struct {
	last uint64
	ring [ringBlocks]uint64
}

// Reset empties the window.
func (f *Filter) Reset() { *f = Filter{} }

// Last returns the highest sequence number accepted so far (0 if none).
func (f *Filter) Last() uint64 { return f.last }

// Check reports whether seq would be accepted, without recording it. ESP
// calls it before the (expensive) integrity check and Update after, as
// RFC 4303 §3.4.3 prescribes, so forged packets cannot move the window.
func (f *Filter) Check(seq uint64) bool {
	if seq == 0 {
		return false
	}
	if seq > f.last {
		return true
	}
	if f.last-seq >= WindowSize {
		return false
	}
	block := (seq / blockBits) & blockMask
	return f.ring[block]&(1<<(seq&bitMask)) == 0
}

// Update records seq as received and reports whether it was new and inside
// the window. A false result means the packet must be dropped as a replay
// (or as too old).
func (f *Filter) Update(seq uint64) bool {
	if seq == 0 {
		return false
	}
	if seq > f.last {
		// Slide forward: clear every block between the old and the new
		// highest block (at most the whole ring).
		cur := f.last / blockBits
		next := seq / blockBits
		diff := next - cur
		if diff > ringBlocks {
			diff = ringBlocks
		}
		for i := uint64(1); i <= diff; i++ {
			f.ring[(cur+i)&blockMask] = 0
		}
		f.last = seq
	} else if f.last-seq >= WindowSize {
		return false
	}
	block := (seq / blockBits) & blockMask
	bit := uint64(1) << (seq & bitMask)
	if f.ring[block]&bit != 0 {
		return false
	}
	f.ring[block] |= bit
	return true
}
