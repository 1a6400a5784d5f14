// RADIUS accounting of sessions: the stop record, the record itself, Interim-Update.

package server

import (
	"time"

	"github.com/fleetgate/fleetgate/gateway/radius"
)

// finish ends accounting for a session once.
func (s *Server) finish(sess Session, cause int) {
	s.mu.Lock()
	st := s.states[sess.ID()]
	delete(s.states, sess.ID())
	s.mu.Unlock()
	if st == nil {
		return
	}
	s.log.Info("session closed", "session_id", sess.ID(), "identity", sess.Identity(), "duration", s.now().Sub(st.start).Truncate(time.Second), "cause", cause)
	s.account(st, radius.AcctStop, cause)
}

// account sends an accounting record if RADIUS accounting is configured.
// Per-session counters are the identity's router counters since Start.
func (s *Server) account(st *sessionState, status radius.AcctStatus, cause int) {
	cfg := s.cfg.Load()
	if s.fleet.spool == nil || cfg.RADIUS == nil {
		return
	}
	c := s.router.Identity(st.sess.Identity())
	rec := radius.AcctRecord{Status: status, SessionID: s.acctSessionID(st.sess), User: st.user,
		CallingID: st.outer, FramedIP: st.sess.Addr(), IPv6Prefix: sessionIPv6(st.sess), Class: st.class,
		InputBytes: c.RxBytes.Load() - st.rx0, OutputBytes: c.TxBytes.Load() - st.tx0,
		InputPackets: c.RxPackets.Load() - st.rxp0, OutputPackets: c.TxPackets.Load() - st.txp0,
		SessionTime: s.now().Sub(st.start), TerminateCause: cause}
	// Queued, never waited for: the spool delivers in order, with
	// Acct-Delay-Time, once a server answers.
	if err := s.fleet.spool.Submit(rec); err != nil {
		s.log.Warn("radius accounting record not queued", "session_id", st.sess.ID(), "status", int(status), "err", err)
	}
}

// interimLoop sends Interim-Update for every session each interval.
func (s *Server) interimLoop(stop <-chan struct{}) {
	cfg := s.cfg.Load()
	if cfg.RADIUS == nil || s.fleet.spool == nil {
		return
	}
	t := s.opts.Clock.NewTimer(cfg.RADIUS.InterimD)
	defer t.Stop()
	for {
		select {
		case <-stop:
			return
		case <-t.C():
			s.mu.Lock()
			sts := make([]*sessionState, 0, len(s.states))
			for _, st := range s.states {
				sts = append(sts, st)
			}
			s.mu.Unlock()
			for _, st := range sts {
				s.account(st, radius.AcctInterim, 0)
			}
			t.Reset(s.cfg.Load().RADIUS.InterimD)
		}
	}
}
