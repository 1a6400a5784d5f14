package ike

import (
	"errors"
	"sync"
)

// Responder key-exchange work off the engine's lock (issue 20).
//
// The engine's lock serialises every datagram, so a Diffie-Hellman
// computation (MODP-2048: milliseconds) or a certificate check and
// signature done under it makes every other peer wait, first messages
// included: during a reconnect storm a gateway answered MM1 seconds late
// and the edges backed off. A responder SA now hands that work to a small
// pool instead: the inputs are copied under the lock, the work runs
// without it, then the lock is taken again and the result applied only if
// the SA is still the one that asked (not torn down, not closed). While
// the work runs the SA is marked busy: a retransmission of the message
// being worked on is counted as a duplicate and dropped (the answer is on
// its way), anything else for that SA is dropped as unmatched.
//
// Bounds: at most Config.CryptoWorkers computations run at once (default
// GOMAXPROCS: more cannot go faster); at most Config.MaxCryptoQueue wait
// (default MaxNegotiating, which already bounds the SAs that can ask: one
// job each). Beyond that the message is dropped before any state changes
// (Stats.CryptoQueueFull): the initiator retransmits it. MM1/MM2 needs no
// such work (halfopen.go) and never waits for it. The initiator side runs
// inline: an edge has one Main Mode at a time.

// errBusy means: the message was not processed (the work queue is full);
// leave the SA as it was so a retransmission is processed afresh.
var errBusy = errors.New("ike: key-exchange work queue full")

// workPool runs jobs on at most max goroutines, started on demand and
// gone when the queue is empty (no goroutine while idle, none to stop).
type workPool struct {
	mu      sync.Mutex
	q       []func()
	running int
	max     int
	cap     int
}

// submit runs f on a worker, or queues it; false when the queue is full.
func (p *workPool) submit(f func()) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.running < p.max {
		p.running++
		go p.run(f)
		return true
	}
	if len(p.q) >= p.cap {
		return false
	}
	p.q = append(p.q, f)
	return true
}

func (p *workPool) run(f func()) {
	for f != nil {
		f()
		p.mu.Lock()
		if len(p.q) == 0 {
			p.q = nil
			p.running--
			f = nil
		} else {
			f = p.q[0]
			p.q[0] = nil
			p.q = p.q[1:]
		}
		p.mu.Unlock()
	}
}

// offloads reports whether responder key-exchange work runs off the lock.
func (e *Engine) offloads() bool { return e.cfg.CryptoWorkers > 0 }

// offload runs work off the engine's lock for sa (responder, called under
// the lock). work must only read what it captured; the function it
// returns runs under the lock to apply the result, and only while sa
// is still waiting for it. errBusy when the queue is full.
func (sa *ikeSA) offload(work func() (apply func() error)) error {
	e := sa.e
	ok := e.pool.submit(func() {
		if h := e.testHookWork; h != nil {
			h()
		}
		apply := work()
		e.mu.Lock()
		if sa.busy && sa.state != p1Dead && !e.closed {
			sa.busy = false
			if err := apply(); err != nil {
				sa.fail(err)
			}
		} else {
			sa.busy = false
			e.stats.CryptoStale.Add(1)
		}
		e.unlockAndFlush()
	})
	if !ok {
		e.stats.CryptoQueueFull.Add(1)
		e.warn("key-exchange work queue full, dropping Main Mode message", "peer", sa.remote, "queue", e.cfg.MaxCryptoQueue)
		return errBusy
	}
	sa.busy = true
	return nil
}
