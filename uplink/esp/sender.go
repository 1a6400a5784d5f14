package esp

import (
	"net/netip"
	"sync"
	"time"
)

// outPkt is one sealed datagram on its way to the socket. buf is a pooled
// bufSize buffer owned by whoever holds the outPkt.
type outPkt struct {
	buf *[]byte
	n   int
	to  netip.AddrPort
}

const (
	// sendQueueLen bounds the datagrams waiting for the sender goroutine;
	// writers beyond it wait (the socket's back-pressure, as a blocking
	// sendmsg would give).
	sendQueueLen = 4 * batchLen
	// inlineGap: a datagram that finds the sender idle and comes this
	// long or longer after the previous one was handed over (the end of its
	// inline write, or its queueing) is written by its caller at once: no
	// hand-off, no added latency for a lone packet or a request/response
	// exchange (whose gap is at least a round trip). Datagrams closer
	// together are a stream — the caller is producing back to back — and
	// are queued for the sender goroutine, which writes them with sendmmsg,
	// batchLen per system call, while the caller seals the next ones.
	inlineGap = 10 * time.Microsecond
	// inlineAfterSingle: when the sender goroutine woke for a single
	// datagram, the caller is not outpacing the socket (a request/response
	// exchange in the same process has short gaps too), so the next this
	// many datagrams that find the socket idle are written inline whatever
	// their gap; then queueing is tried again.
	inlineAfterSingle = 16
)

// epoch anchors monoNow: I/O scheduling only, never protocol timing.
var epoch = time.Now()

func monoNow() time.Duration { return time.Since(epoch) }

// sender coalesces one socket's outbound ESP into sendmmsg batches.
type sender struct {
	t *Transport
	s *sock

	mu      sync.Mutex
	room    sync.Cond // writers waiting for queue space
	waiting int
	q       []outPkt // queued, in order
	spare   []outPkt // the other half of the double buffer
	busy    bool     // a send is in progress (inline or the goroutine)
	last    time.Duration
	credit  int // datagrams still to be written inline (inlineAfterSingle)
	held    int // Hold calls not yet Released: queue, write at Release
	closed  bool
	wake    chan struct{}
}

func newSender(t *Transport, s *sock) *sender {
	sd := &sender{t: t, s: s, q: make([]outPkt, 0, sendQueueLen), spare: make([]outPkt, 0, sendQueueLen), wake: make(chan struct{}, 1)}
	sd.room.L = &sd.mu
	return sd
}

// send hands p to the socket and takes ownership of p.buf. It returns an
// error only when p was written inline and the write failed, or the
// transport is closed; failures of queued datagrams are counted in
// SendErrors.
func (sd *sender) send(p outPkt) error {
	now := monoNow()
	sd.mu.Lock()
	if sd.closed {
		sd.mu.Unlock()
		sd.t.bufPool.Put(p.buf)
		return ErrClosed
	}
	if sd.held == 0 && !sd.busy && len(sd.q) == 0 && (sd.credit > 0 || now-sd.last >= inlineGap) {
		if sd.credit > 0 {
			sd.credit--
		}
		sd.busy = true
		sd.last = now
		sd.mu.Unlock()
		_, err := sd.s.writeTo((*p.buf)[:p.n], p.to)
		sd.t.bufPool.Put(p.buf)
		end := monoNow()
		sd.mu.Lock()
		sd.last = end
		if len(sd.q) > 0 {
			sd.kickLocked() // others queued meanwhile: the goroutine takes over
		} else {
			sd.busy = false
		}
		sd.mu.Unlock()
		return err
	}
	for len(sd.q) >= sendQueueLen && !sd.closed {
		sd.waiting++
		sd.room.Wait()
		sd.waiting--
	}
	if sd.closed {
		sd.mu.Unlock()
		sd.t.bufPool.Put(p.buf)
		return ErrClosed
	}
	sd.q = append(sd.q, p)
	sd.last = now
	if !sd.busy && (sd.held == 0 || len(sd.q) >= batchLen) {
		sd.busy = true
		sd.kickLocked()
	}
	sd.mu.Unlock()
	return nil
}

// hold makes send queue every datagram until the matching release: the
// caller has a burst in hand (a split GSO read from the TUN) and the
// goroutine writes it in full batches (one UDP GSO message per batchLen
// datagrams to one peer) instead of one inline write for its first
// datagram and small batches for the rest. A full batch is written at
// once; release hands over the rest.
func (sd *sender) hold() {
	sd.mu.Lock()
	sd.held++
	sd.mu.Unlock()
}

func (sd *sender) release() {
	sd.mu.Lock()
	if sd.held > 0 {
		sd.held--
	}
	if sd.held == 0 && len(sd.q) > 0 && !sd.busy {
		sd.busy = true
		sd.kickLocked()
	}
	sd.mu.Unlock()
}

// kickLocked wakes the sender goroutine; sd.mu is held and busy is set.
func (sd *sender) kickLocked() {
	select {
	case sd.wake <- struct{}{}:
	default:
	}
}

// run is the sender goroutine: it drains the queue in batches until it is
// empty, then sleeps until kicked.
func (sd *sender) run() {
	defer sd.t.wg.Done()
	for {
		select {
		case <-sd.wake:
		case <-sd.t.done:
			sd.drop()
			return
		}
		for {
			sd.mu.Lock()
			if len(sd.q) == 0 || (sd.held > 0 && len(sd.q) < batchLen) {
				// Empty, or a burst still being sealed: release (or a
				// full batch) kicks again.
				sd.busy = false
				sd.mu.Unlock()
				break
			}
			batch := sd.q
			sd.q, sd.spare = sd.spare[:0], nil
			if len(batch) == 1 {
				sd.credit = inlineAfterSingle
			}
			if sd.waiting > 0 {
				sd.room.Broadcast()
			}
			sd.mu.Unlock()
			for rest := batch; len(rest) > 0; {
				chunk := rest[:min(batchLen, len(rest))]
				rest = rest[len(chunk):]
				failed, err := sd.s.batch.write(chunk)
				sd.t.stats.SendBatches.Add(1)
				if err != nil {
					failed = len(chunk)
					sd.t.warn.log(sd.t.log, "ESP send failed", "err", err)
				}
				if failed > 0 {
					sd.t.stats.SendErrors.Add(uint64(failed))
				}
				for i := range chunk {
					sd.t.bufPool.Put(chunk[i].buf)
					chunk[i] = outPkt{}
				}
			}
			sd.mu.Lock()
			sd.spare = batch[:0]
			sd.mu.Unlock()
		}
	}
}

// close refuses further datagrams and releases waiting writers; the
// goroutine drops what is still queued when the transport's done closes.
func (sd *sender) close() {
	sd.mu.Lock()
	sd.closed = true
	sd.room.Broadcast()
	sd.mu.Unlock()
}

func (sd *sender) drop() {
	sd.mu.Lock()
	for i := range sd.q {
		sd.t.bufPool.Put(sd.q[i].buf)
	}
	sd.q = sd.q[:0]
	sd.mu.Unlock()
}
