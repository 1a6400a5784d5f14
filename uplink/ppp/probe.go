package ppp

import "time"

// On-demand liveness (Config.ProbeAfter), in the spirit of RFC 3706's
// on-demand DPD: an idle link only sends the EchoInterval keepalive
// (cellular sites pay for every byte), but once we have sent IPv4 and have
// received nothing at all from the peer for ProbeAfter, LCP echoes go out
// every ProbeAfter until one is answered; EchoFailures unanswered ones end
// the link (ErrEchoTimeout). A dead gateway under traffic is noticed after
// about ProbeAfter·(EchoFailures+1) instead of EchoInterval·EchoFailures.

// noteSent runs on the data path for every IPv4 packet written: the first
// one after the last frame received starts the unanswered period and
// wakes the owner goroutine.
func (c *Conn) noteSent() {
	if c.cfg.ProbeAfter <= 0 || c.unanswered.Load() != 0 {
		return
	}
	if c.unanswered.CompareAndSwap(0, c.cfg.Clock.Now().UnixNano()) {
		select {
		case c.probeCh <- struct{}{}:
		default:
		}
	}
}

// noteReceived runs for every frame received from the peer.
func (c *Conn) noteReceived() {
	if c.unanswered.Load() != 0 {
		c.unanswered.Store(0)
	}
}

// sentUnanswered is when the current unanswered period began (zero: none).
func (c *Conn) sentUnanswered() time.Time {
	if n := c.unanswered.Load(); n != 0 {
		return time.Unix(0, n)
	}
	return time.Time{}
}

// armProbe (owner goroutine) schedules the check ProbeAfter after the
// start of the unanswered period.
func (m *machine) armProbe() {
	if since := m.unansweredSince(); !since.IsZero() && m.probeAt.IsZero() && !m.probing {
		m.probeAt = since.Add(m.cfg.ProbeAfter)
	}
}

// checkProbe (from Tick): still nothing received since the period began →
// probe now and keep probing every ProbeAfter until an echo is answered.
func (m *machine) checkProbe(now time.Time) {
	if m.probeAt.IsZero() || now.Before(m.probeAt) {
		return
	}
	m.probeAt = time.Time{}
	since := m.unansweredSince()
	if since.IsZero() || now.Sub(since) < m.cfg.ProbeAfter {
		m.armProbe() // answered meanwhile, or a newer period
		return
	}
	if m.lcpF.state == StateOpened && !m.probing {
		m.probing = true
		m.stats.EchoProbes.Add(1)
		if m.echoAt.After(now) {
			m.echoAt = now
		}
	}
}

// echoInterval is the delay to the next echo.
func (m *machine) echoInterval() time.Duration {
	if m.probing {
		return m.cfg.ProbeAfter
	}
	return m.cfg.EchoInterval
}

func (m *machine) unansweredSince() time.Time {
	if m.sentUnanswered == nil {
		return time.Time{}
	}
	return m.sentUnanswered()
}
