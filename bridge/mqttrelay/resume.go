package mqttrelay

import (
	"errors"
	"net"
	"sync/atomic"
	"time"
)

// errUplinkResumed ends a central connection that outlived an uplink outage
// with work outstanding: its TCP connection sits in retransmission backoff
// (RTO doubled during the outage), so a fresh one is faster. paho resends
// the in-flight QoS 1/2 messages with DUP in the same persistent session:
// QoS 1 stays at-least-once, QoS 2 exactly-once (the store keeps the state).
var errUplinkResumed = errors.New("mqttrelay: uplink back after an outage; reconnecting at once")

// resumeState is a session's view of its current connection for UplinkUp.
type resumeState struct {
	gen      atomic.Uint64 // connection generation, +1 per open
	dropGen  atomic.Uint64 // generation UplinkUp asked to drop
	lastRead atomic.Int64  // unix nanos of the last byte read on gen
	kick     chan struct{} // cap 1: wakes pump and the backoff wait
}

// readTrackConn records when the central broker last sent a byte.
type readTrackConn struct {
	net.Conn
	s   *session
	gen uint64
}

func (c *readTrackConn) Read(p []byte) (int, error) {
	n, err := c.Conn.Read(p)
	if n > 0 && c.s.rs.gen.Load() == c.gen {
		c.s.rs.lastRead.Store(c.s.r.cfg.Clock.Now().UnixNano())
	}
	return n, err
}

// track wraps a fresh central connection (a new generation).
func (s *session) track(c net.Conn) net.Conn {
	g := s.rs.gen.Add(1)
	s.rs.lastRead.Store(s.r.cfg.Clock.Now().UnixNano())
	return &readTrackConn{Conn: c, s: s, gen: g}
}

// uplinkUp decides for one session; it returns true if the session's
// connection is dropped.
func (s *session) uplinkUp(downSince time.Time) bool {
	drop := false
	if s.State() == StateConnected {
		last := time.Unix(0, s.rs.lastRead.Load())
		if s.store.inflight() > 0 || last.Before(downSince) {
			s.rs.dropGen.Store(s.rs.gen.Load())
			drop = true
		}
	}
	select {
	case s.rs.kick <- struct{}{}:
	default:
	}
	return drop
}

// resumeNow is checked by pump on a kick: true if this connection is to be
// dropped.
func (s *session) resumeNow() bool {
	g := s.rs.gen.Load()
	return g != 0 && s.rs.dropGen.Load() == g
}

// UplinkUp tells the relay the uplink is back after being down since
// downSince (a new tunnel). Each connected session whose connection has
// messages in flight, or has received nothing since before the outage,
// drops it and reconnects at once; sessions waiting out a reconnect
// backoff retry at once. It returns how many connections were dropped.
func (r *Relay) UplinkUp(downSince time.Time) int {
	r.mu.Lock()
	ss := make([]*session, 0, len(r.sessions))
	for _, s := range r.sessions {
		ss = append(ss, s)
	}
	r.mu.Unlock()
	n := 0
	for _, s := range ss {
		if s.uplinkUp(downSince) {
			n++
		}
	}
	r.stats.Resumed.Add(uint64(n))
	if n > 0 {
		r.log.Info("mqttrelay: uplink back, reconnecting central sessions with outstanding work", "sessions", n, "of", len(ss))
	}
	return n
}
