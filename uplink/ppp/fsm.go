package ppp

import (
	"errors"
	"time"
)

// State is an RFC 1661 §4.2 automaton state.
//
//	            Open/Up                 RCA                 RCR+ (sca)
//	Initial ─Up─▶ Closed ─Open (scr)─▶ Req-Sent ──────▶ Ack-Rcvd ──────▶ Opened
//	                                     │ RCR+ (sca)                       ▲
//	                                     ▼                  RCA             │
//	                                   Ack-Sent ────────────────────────────┘
//	Close (str) ─▶ Closing ─RTA/TO-─▶ Closed;  RTR (sta) in Opened ─▶ Stopping ─TO-─▶ Stopped
//
// The full transition table of RFC 1661 §4.1 is implemented by fsm.event.
type State uint8

// Automaton states (RFC 1661 §4.2).
const (
	StateInitial  State = iota // lower layer down, no Open
	StateStarting              // lower layer down, Open
	StateClosed                // lower layer up, no Open
	StateStopped               // waiting for the peer after a failure or Terminate
	StateClosing               // Terminate-Request sent, after Close
	StateStopping              // Terminate-Request sent or received, Open still in force
	StateReqSent               // Configure-Request sent
	StateAckRcvd               // our request acknowledged, none acked yet
	StateAckSent               // peer's request acknowledged, ours not yet
	StateOpened                // both requests acknowledged
)

var stateNames = [...]string{"Initial", "Starting", "Closed", "Stopped", "Closing", "Stopping", "Req-Sent", "Ack-Rcvd", "Ack-Sent", "Opened"}

// String returns the RFC name.
func (s State) String() string {
	if int(s) < len(stateNames) {
		return stateNames[s]
	}
	return "state?"
}

// optionHandler is what a control protocol (LCP, IPCP) plugs into the
// automaton, a Go version of npppd's fsm callbacks.
type optionHandler interface {
	// reqOptions returns the options of our next Configure-Request.
	reqOptions() []byte
	// recvReq judges the peer's request: CodeConfAck (reply echoes the
	// options), CodeConfNak or CodeConfRej with the options to send.
	recvReq(opts []byte) (code byte, reply []byte)
	// recvAck checks that an Ack matches our request.
	recvAck(opts []byte) bool
	// recvNak and recvRej adjust our next request; an error gives up.
	recvNak(opts []byte) error
	recvRej(opts []byte) error
	// up, down, started and finished are tlu, tld, tls and tlf.
	up()
	down()
	started()
	finished()
	// extCode handles codes beyond 1..7 (LCP echo etc.); false means
	// unknown code (Code-Reject).
	extCode(p Packet) bool
}

// fsm is the RFC 1661 automaton for one control protocol. Pure: it emits
// packets through send and keeps one restart deadline.
type fsm struct {
	proto     uint16
	h         optionHandler
	send      func(proto uint16, p Packet)
	state     State
	restart   int
	failures  int
	id        byte // identifier of our last Configure- or Terminate-Request
	reqOpts   []byte
	deadline  time.Time // zero: timer stopped
	restartT  time.Duration
	maxConf   int
	maxTerm   int
	maxFail   int
	now       time.Time
	lastError error
}

func (f *fsm) setTimer()  { f.deadline = f.now.Add(f.restartT) }
func (f *fsm) stopTimer() { f.deadline = time.Time{} }

// irc initialises the restart counter (RFC 1661 §4.4).
func (f *fsm) irc(term bool) {
	if term {
		f.restart = f.maxTerm
	} else {
		f.restart = f.maxConf
	}
}

// scr sends a Configure-Request with a fresh identifier.
func (f *fsm) scr() {
	f.id++
	f.reqOpts = f.h.reqOptions()
	f.restart--
	f.setTimer()
	f.send(f.proto, Packet{Code: CodeConfReq, ID: f.id, Data: f.reqOpts})
}

func (f *fsm) str() {
	f.id++
	f.restart--
	f.setTimer()
	f.send(f.proto, Packet{Code: CodeTermReq, ID: f.id})
}

func (f *fsm) sta(id byte) { f.send(f.proto, Packet{Code: CodeTermAck, ID: id}) }

// Up is the lower-layer-up event.
func (f *fsm) Up() {
	switch f.state {
	case StateInitial:
		f.state = StateClosed
	case StateStarting:
		f.irc(false)
		f.scr()
		f.state = StateReqSent
	}
}

// Down is the lower-layer-down event.
func (f *fsm) Down() {
	switch f.state {
	case StateClosed, StateClosing:
		f.state = StateInitial
	case StateStopped:
		f.h.started()
		f.state = StateStarting
	case StateStopping, StateReqSent, StateAckRcvd, StateAckSent:
		f.state = StateStarting
	case StateOpened:
		f.h.down()
		f.state = StateStarting
	}
	f.stopTimer()
}

// Open is the administrative Open event.
func (f *fsm) Open() {
	switch f.state {
	case StateInitial:
		f.h.started()
		f.state = StateStarting
	case StateClosed:
		f.irc(false)
		f.scr()
		f.state = StateReqSent
	case StateClosing:
		f.state = StateStopping
	}
}

// Close is the administrative Close event.
func (f *fsm) Close() {
	switch f.state {
	case StateStarting:
		f.h.finished()
		f.state = StateInitial
	case StateStopped:
		f.state = StateClosed
	case StateStopping:
		f.state = StateClosing
	case StateReqSent, StateAckRcvd, StateAckSent:
		f.irc(true)
		f.str()
		f.state = StateClosing
	case StateOpened:
		f.h.down()
		f.irc(true)
		f.str()
		f.state = StateClosing
	}
}

// Tick fires the restart timer if due (TO+ / TO-).
func (f *fsm) Tick(now time.Time) {
	f.now = now
	if f.deadline.IsZero() || now.Before(f.deadline) {
		return
	}
	f.stopTimer()
	if f.restart > 0 {
		switch f.state {
		case StateClosing, StateStopping:
			f.str()
		case StateReqSent, StateAckRcvd:
			f.scr()
			f.state = StateReqSent
		case StateAckSent:
			f.scr()
		}
		return
	}
	switch f.state {
	case StateClosing:
		f.state = StateClosed
		f.h.finished()
	case StateStopping, StateReqSent, StateAckRcvd, StateAckSent:
		if f.lastError == nil && f.state != StateStopping {
			f.lastError = ErrNegotiation
		}
		f.state = StateStopped
		f.h.finished()
	}
}

// Input handles one packet of this protocol.
func (f *fsm) Input(now time.Time, p Packet) {
	f.now = now
	switch p.Code {
	case CodeConfReq:
		f.rcr(p)
	case CodeConfAck:
		if p.ID != f.id || !f.h.recvAck(p.Data) {
			return // stale or bogus: silently discarded (§5.2)
		}
		f.rca()
	case CodeConfNak, CodeConfRej:
		if p.ID != f.id {
			return
		}
		var err error
		if p.Code == CodeConfNak {
			err = f.h.recvNak(p.Data)
		} else {
			err = f.h.recvRej(p.Data)
		}
		if err != nil {
			f.lastError = err
			f.Close()
			return
		}
		f.rcn()
	case CodeTermReq:
		f.rtr(p.ID)
	case CodeTermAck:
		f.rta()
	case CodeCodeRej:
		// RXJ+: a rejected code we can live without (§4.1); only a
		// rejection of Configure or Terminate is fatal.
		if len(p.Data) > 0 && p.Data[0] >= CodeConfReq && p.Data[0] <= CodeTermAck {
			f.rxjMinus()
		}
	default:
		if f.state < StateClosed {
			return
		}
		if !f.h.extCode(p) {
			// RUC: Code-Reject carrying the rejected packet.
			rej := append([]byte{p.Code, p.ID, byte((4 + len(p.Data)) >> 8), byte(4 + len(p.Data))}, p.Data...)
			f.id++
			f.send(f.proto, Packet{Code: CodeCodeRej, ID: f.id, Data: rej})
		}
	}
}

func (f *fsm) rcr(p Packet) {
	switch f.state {
	case StateClosed:
		f.sta(p.ID)
		return
	case StateClosing, StateStopping, StateInitial, StateStarting:
		return
	}
	code, reply := f.h.recvReq(p.Data)
	if code != CodeConfAck {
		f.failures++
		if code == CodeConfNak && f.failures > f.maxFail {
			code = CodeConfRej // §4.6 Max-Failure: Nak turns into Reject
		}
	} else {
		f.failures = 0
	}
	good := code == CodeConfAck
	switch f.state {
	case StateStopped:
		f.irc(false)
		f.scr()
		if good {
			f.state = StateAckSent
		} else {
			f.state = StateReqSent
		}
	case StateReqSent:
		if good {
			f.state = StateAckSent
		}
	case StateAckRcvd:
		if good {
			defer f.tlu()
		}
	case StateAckSent:
		if !good {
			f.state = StateReqSent
		}
	case StateOpened:
		f.h.down()
		f.scr()
		if good {
			f.state = StateAckSent
		} else {
			f.state = StateReqSent
		}
	}
	f.send(f.proto, Packet{Code: code, ID: p.ID, Data: reply})
}

func (f *fsm) tlu() {
	f.state = StateOpened
	f.stopTimer()
	f.h.up()
}

func (f *fsm) rca() {
	switch f.state {
	case StateClosed, StateStopped:
		f.sta(f.id)
	case StateReqSent:
		f.irc(false)
		f.stopTimer()
		f.state = StateAckRcvd
	case StateAckRcvd:
		f.scr()
		f.state = StateReqSent
	case StateAckSent:
		f.irc(false)
		f.tlu()
	case StateOpened:
		f.h.down()
		f.scr()
		f.state = StateReqSent
	}
}

func (f *fsm) rcn() {
	switch f.state {
	case StateClosed, StateStopped:
		f.sta(f.id)
	case StateReqSent, StateAckSent:
		f.irc(false)
		f.scr()
	case StateAckRcvd:
		f.scr()
		f.state = StateReqSent
	case StateOpened:
		f.h.down()
		f.scr()
		f.state = StateReqSent
	}
}

func (f *fsm) rtr(id byte) {
	switch f.state {
	case StateReqSent, StateAckRcvd, StateAckSent:
		f.state = StateReqSent
	case StateOpened:
		f.h.down()
		f.restart = 0
		f.setTimer()
		f.state = StateStopping
		if f.lastError == nil {
			f.lastError = ErrPeerTerminated
		}
	}
	f.sta(id)
}

func (f *fsm) rta() {
	switch f.state {
	case StateClosing:
		f.stopTimer()
		f.state = StateClosed
		f.h.finished()
	case StateStopping:
		f.stopTimer()
		f.state = StateStopped
		f.h.finished()
	case StateAckRcvd:
		f.state = StateReqSent
	case StateOpened:
		f.h.down()
		f.scr()
		f.state = StateReqSent
	}
}

func (f *fsm) rxjMinus() {
	if f.lastError == nil {
		f.lastError = errors.New("ppp: peer rejected a required code")
	}
	switch f.state {
	case StateClosed, StateStopped:
		f.h.finished()
	case StateClosing:
		f.state = StateClosed
		f.h.finished()
	case StateStopping, StateReqSent, StateAckRcvd, StateAckSent:
		f.state = StateStopped
		f.h.finished()
	case StateOpened:
		f.h.down()
		f.irc(true)
		f.str()
		f.state = StateStopping
	}
}
