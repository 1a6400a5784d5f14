package engine

import "sync"

// inbox holds what a client sends between its IPCP opening and the
// gateway registering its session. The client's PPP opens when it gets
// our Configure-Ack and may send at once; our side learns of it on another
// goroutine (tunnel OnSession) and registers the session (route, policy,
// accounting) only after that. Packets in that window used to be dropped
// on the link for want of a handler. The inbox is the link's handler from
// address assignment (before our Configure-Ack can leave) until serve has
// registered the session: then open replays the held packets in order and
// the router's handler replaces it.
type inbox struct {
	stats *Stats

	mu   sync.Mutex
	live func([]byte) // set by open
	held [][]byte
	shut bool
}

func newInbox(st *Stats) *inbox { return &inbox{stats: st} }

// deliver is the link's packet handler until the session is registered.
// The link reuses pkt after the call: held packets are copied.
func (b *inbox) deliver(pkt []byte) {
	b.mu.Lock()
	if b.live != nil {
		fn := b.live
		b.mu.Unlock()
		fn(pkt)
		return
	}
	if b.shut || len(b.held) >= inboxMax {
		b.mu.Unlock()
		b.stats.HeldDropped.Add(1)
		return
	}
	b.held = append(b.held, append([]byte(nil), pkt...))
	b.mu.Unlock()
}

// open hands the held packets to fn, in order, and everything after them;
// called once the session is registered. A deliver racing with open waits
// for the replay, so order is kept.
func (b *inbox) open(fn func([]byte)) {
	b.mu.Lock()
	defer b.mu.Unlock()
	for _, p := range b.held {
		b.stats.HeldPackets.Add(1)
		fn(p)
	}
	b.held = nil
	b.live = fn
}

// close drops the held packets (the session was refused or ended before
// registration) and any that still arrive.
func (b *inbox) close() {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.stats.HeldDropped.Add(uint64(len(b.held)))
	b.held = nil
	b.shut = true
}
