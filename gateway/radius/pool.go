package radius

import (
	"context"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"layeh.com/radius"
)

// DefaultDeadTime is how long a server that did not answer is skipped
// (FreeRADIUS home servers: revive_interval).
const DefaultDeadTime = 30 * time.Second

// serverPool is an ordered list of servers used in fail-over order, as a
// FreeRADIUS home_server_pool of type fail-over: the first live server gets
// every request; one that does not answer within the timeout is marked dead
// for the dead time and the request goes to the next; a dead server is
// tried again once its dead time has passed (revived on its first answer).
// When every server is dead, requests fail at once instead of waiting for
// timeouts: set-ups fall back to local identities and accounting stays in
// the spool.
type serverPool struct {
	kind  string // "auth" or "acct", for logs
	addrs []string
	dead  time.Duration
	now   func() time.Time
	log   *slog.Logger
	stats *Stats

	mu        sync.Mutex
	deadUntil []time.Time
	wasDead   []bool
}

func newServerPool(kind string, addrs []string, dead time.Duration, now func() time.Time, log *slog.Logger, st *Stats) *serverPool {
	return &serverPool{kind: kind, addrs: addrs, dead: dead, now: now, log: log, stats: st,
		deadUntil: make([]time.Time, len(addrs)), wasDead: make([]bool, len(addrs))}
}

// candidates are the servers to try now, in order: live ones first (in
// configured order); none when all are dead.
func (p *serverPool) candidates() []int {
	p.mu.Lock()
	defer p.mu.Unlock()
	now := p.now()
	var out []int
	for i := range p.addrs {
		if !now.Before(p.deadUntil[i]) {
			out = append(out, i)
		}
	}
	return out
}

func (p *serverPool) markDead(i int, err error) {
	p.mu.Lock()
	p.deadUntil[i] = p.now().Add(p.dead)
	first := !p.wasDead[i]
	p.wasDead[i] = true
	p.mu.Unlock()
	p.stats.ServerDead.Add(1)
	if first {
		p.log.Warn("radius server dead", "kind", p.kind, "server", p.addrs[i], "retry_in", p.dead, "err", err)
	}
}

func (p *serverPool) markAlive(i int) {
	p.mu.Lock()
	was := p.wasDead[i]
	p.wasDead[i] = false
	p.deadUntil[i] = time.Time{}
	p.mu.Unlock()
	if was {
		p.log.Info("radius server alive", "kind", p.kind, "server", p.addrs[i])
	}
}

// Alive reports per server whether it is currently considered alive.
func (p *serverPool) alive() map[string]bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	now := p.now()
	m := make(map[string]bool, len(p.addrs))
	for i, a := range p.addrs {
		m[a] = !p.wasDead[i] || !now.Before(p.deadUntil[i])
	}
	return m
}

// poolExchange sends p to the pool's servers in fail-over order.
func (c *Client) poolExchange(ctx context.Context, sp *serverPool, p *radius.Packet) (*radius.Packet, error) {
	cands := sp.candidates()
	if len(cands) == 0 {
		c.Stats.AllDead.Add(1)
		return nil, ErrAllDead
	}
	var last error
	for n, i := range cands {
		if n > 0 {
			c.Stats.Failovers.Add(1)
		}
		resp, err := c.exchange(ctx, p, sp.addrs[i])
		if err == nil {
			sp.markAlive(i)
			return resp, nil
		}
		last = err
		if ctx.Err() != nil {
			return nil, err
		}
		sp.markDead(i, err)
	}
	return nil, last
}

// ErrAllDead is returned when every server of a pool is marked dead; it
// wraps ErrNoServer.
var ErrAllDead = fmt.Errorf("%w: every server is marked dead", ErrNoServer)
