// Read-side queries of the queue: pending messages, wake-ups, depths.

package spool

import (
	"sort"
	"time"
)

// Pending returns up to max live messages of endpoint with Seq > after, in
// order. The Payload slices are shared; do not modify them.
func (s *Spool) Pending(endpoint string, after uint64, max int) []Message {
	s.mu.Lock()
	defer s.mu.Unlock()
	q := s.queues[endpoint]
	i := sort.Search(len(q), func(i int) bool { return q[i].msg.Seq > after })
	var out []Message
	for ; i < len(q) && len(out) < max; i++ {
		out = append(out, q[i].msg)
	}
	return out
}

// Wait returns a channel closed at the next Append for endpoint (or Close).
// Call it before Pending to avoid missing a wake-up.
func (s *Spool) Wait(endpoint string) <-chan struct{} {
	s.mu.Lock()
	defer s.mu.Unlock()
	ch, ok := s.notify[endpoint]
	if !ok {
		ch = make(chan struct{})
		if s.closed {
			close(ch)
			return ch
		}
		s.notify[endpoint] = ch
	}
	return ch
}

// Depth reports one endpoint's queue: messages, bytes and the enqueue time
// of the oldest (zero if empty).
func (s *Spool) Depth(endpoint string) (n int, bytes int64, oldest time.Time) {
	s.mu.Lock()
	defer s.mu.Unlock()
	q := s.queues[endpoint]
	for _, e := range q {
		bytes += e.size
	}
	if len(q) > 0 {
		oldest = q[0].msg.Enqueued
	}
	return len(q), bytes, oldest
}

// OldestAge returns how long the oldest live message has waited (0 if the
// spool is empty).
func (s *Spool) OldestAge() time.Duration {
	s.mu.Lock()
	defer s.mu.Unlock()
	var oldest time.Time
	for _, q := range s.queues {
		if len(q) > 0 && (oldest.IsZero() || q[0].msg.Enqueued.Before(oldest)) {
			oldest = q[0].msg.Enqueued
		}
	}
	if oldest.IsZero() {
		return 0
	}
	return s.cfg.Clock.Now().Sub(oldest)
}

// Endpoints lists the endpoints with queued messages, sorted.
func (s *Spool) Endpoints() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := make([]string, 0, len(s.queues))
	for ep := range s.queues {
		out = append(out, ep)
	}
	sort.Strings(out)
	return out
}
