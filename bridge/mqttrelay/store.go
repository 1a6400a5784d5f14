package mqttrelay

import (
	"net"
	"sort"
	"strconv"
	"sync"

	paho "github.com/eclipse/paho.mqtt.golang"
	"github.com/eclipse/paho.mqtt.golang/packets"

	"github.com/fleetgate/fleetgate/bridge/spool"
)

// sessionStore is paho's persistence for one endpoint, backed by the spool:
//
//   - paho Puts an outbound PUBLISH under "o.<id>" synchronously inside
//     Client.Publish; the session announces which spool message it is
//     publishing (expect), so the store records a Bind (seq -> packet id,
//     stage 1) in the spool, fsynced for QoS 2.
//   - the connection sniffer reports PUBREC: Bind stage 2, fsynced.
//   - paho Dels "o.<id>" on PUBACK / PUBCOMP: the spool message is acked.
//   - after a restart the session preloads the store from the spool's bound
//     messages (PUBLISH with DUP for stage 1, PUBREL for stage 2), so paho's
//     resume sends the same packet identifiers on the persistent session
//     and the central broker drops QoS 2 duplicates (MQTT 3.1.1 §4.3.3).
//
// Subscriptions and inbound QoS 2 state are kept in memory only.
type sessionStore struct {
	sp       *spool.Spool
	endpoint string
	onAck    func(seq uint64, qos byte)
	onErr    func(err error)

	mu     sync.Mutex
	expect uint64 // spool seq of the PUBLISH being handed to paho now
	out    map[string]storeEntry
	in     map[string]packets.ControlPacket
	// carried holds the PUBREL keys present when the current connection
	// started. paho's resume re-sends them without reserving their packet
	// ids, so until their PUBCOMP arrives a new PUBLISH could get the same
	// id (and its PUBCOMP would release the wrong message): the session
	// publishes nothing new while any is pending.
	carried map[string]bool
	// done holds the spool seqs of messages completed (PUBACK / PUBCOMP)
	// that the session's pump may not have passed yet: after a restart
	// the pump starts at cursor 0 and skips the resumed messages because
	// the store holds them; a resumed message completing between the
	// pump's Pending snapshot and its holds check was sent again as a new
	// PUBLISH (new packet id: a QoS 2 duplicate at central). Pruned by
	// forget as the cursor passes.
	done  map[uint64]struct{}
	freed chan struct{} // signalled when an outbound message completes
	// conn is the current connection's socket (below TLS): closed when a
	// binding could not be written, so that paho cannot send what the
	// spool does not know about (see Put and pubrec).
	conn net.Conn
}

type storeEntry struct {
	seq uint64
	qos byte
	pkt packets.ControlPacket
}

var _ paho.Store = (*sessionStore)(nil)

func newSessionStore(sp *spool.Spool, endpoint string) *sessionStore {
	return &sessionStore{
		sp: sp, endpoint: endpoint,
		out:     make(map[string]storeEntry),
		in:      make(map[string]packets.ControlPacket),
		carried: make(map[string]bool),
		done:    make(map[uint64]struct{}),
		freed:   make(chan struct{}, 1),
		onAck:   func(uint64, byte) {},
		onErr:   func(error) {},
	}
}

func outKey(id uint16) string { return "o." + strconv.Itoa(int(id)) }

// preload registers a spool message that was bound before a restart.
func (s *sessionStore) preload(m spool.Message, pkt packets.ControlPacket) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.out[outKey(m.PacketID)] = storeEntry{seq: m.Seq, qos: m.QoS, pkt: pkt}
}

// carryOver records the PUBREL entries a new connection will resume and
// returns how many there are.
func (s *sessionStore) carryOver() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.carried = make(map[string]bool)
	for k, e := range s.out {
		if _, rel := e.pkt.(*packets.PubrelPacket); rel && e.seq != 0 {
			s.carried[k] = true
		}
	}
	return len(s.carried)
}

// carriedPending counts carried-over PUBRELs still awaiting PUBCOMP.
func (s *sessionStore) carriedPending() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.carried)
}

// setExpect announces the spool seq of the next PUBLISH (0 to clear).
func (s *sessionStore) setExpect(seq uint64) {
	s.mu.Lock()
	s.expect = seq
	s.mu.Unlock()
}

// holds reports whether spool message seq was handed to paho: in flight
// in this store, or completed and not yet passed by the pump (forget).
func (s *sessionStore) holds(seq uint64) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if _, ok := s.done[seq]; ok {
		return true
	}
	for _, e := range s.out {
		if e.seq == seq {
			return true
		}
	}
	return false
}

// forget drops the completed seqs up to cursor (the pump never asks
// about them again).
func (s *sessionStore) forget(cursor uint64) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for seq := range s.done {
		if seq <= cursor {
			delete(s.done, seq)
		}
	}
}

// inflight counts outbound messages awaiting their acknowledgement.
func (s *sessionStore) inflight() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	n := 0
	for _, e := range s.out {
		if e.seq != 0 {
			n++
		}
	}
	return n
}

// Open implements paho.Store.
func (s *sessionStore) Open() {}

// Close implements paho.Store.
func (s *sessionStore) Close() {}

// Reset implements paho.Store (called only for clean sessions, which the
// relay does not use).
func (s *sessionStore) Reset() {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.out = make(map[string]storeEntry)
	s.in = make(map[string]packets.ControlPacket)
	s.carried = make(map[string]bool)
	s.done = make(map[uint64]struct{})
}

// Put implements paho.Store.
func (s *sessionStore) Put(key string, m packets.ControlPacket) {
	if len(key) < 2 || key[0] != 'o' {
		s.mu.Lock()
		s.in[key] = m
		s.mu.Unlock()
		return
	}
	pub, isPub := m.(*packets.PublishPacket)
	s.mu.Lock()
	if !isPub || s.expect == 0 {
		s.out[key] = storeEntry{pkt: m}
		s.mu.Unlock()
		return
	}
	seq := s.expect
	s.expect = 0
	s.out[key] = storeEntry{seq: seq, qos: pub.Qos, pkt: m}
	s.mu.Unlock()
	// Still on the publishing goroutine, before paho writes the PUBLISH.
	// If the binding is not written, the PUBLISH must not go out: after a
	// kill the spool would send the message again under a new packet id,
	// a duplicate if central had it. Closing the socket makes paho's
	// write fail; on the next connection paho resumes it (same id, DUP)
	// and Put is not called again, so a QoS 2 message is bound when its
	// PUBREC arrives (pubrec).
	if err := s.sp.Bind(s.endpoint, seq, pub.MessageID, 1, pub.Qos == 2); err != nil {
		s.onErr(err)
		s.breakConn()
	}
}

// setConn records the socket of the connection being opened.
func (s *sessionStore) setConn(c net.Conn) {
	s.mu.Lock()
	s.conn = c
	s.mu.Unlock()
}

// breakConn closes the current connection's socket.
func (s *sessionStore) breakConn() {
	s.mu.Lock()
	c := s.conn
	s.mu.Unlock()
	if c != nil {
		_ = c.Close()
	}
}

// pubrec records that the central broker holds QoS 2 message id, before
// paho sees the PUBREC (and answers PUBREL). If the stage cannot be
// written it returns the error and the entry stays a PUBLISH: the caller
// drops the connection, so no PUBREL goes out that a restart could follow
// with the PUBLISH again (central, having released the message, would
// take it as new).
func (s *sessionStore) pubrec(id uint16) error {
	key := outKey(id)
	s.mu.Lock()
	e, ok := s.out[key]
	s.mu.Unlock()
	if !ok || e.seq == 0 || e.qos != 2 {
		return nil
	}
	if _, rel := e.pkt.(*packets.PubrelPacket); !rel {
		if err := s.sp.Bind(s.endpoint, e.seq, id, 2, true); err != nil {
			s.onErr(err)
			return err
		}
	}
	rel := packets.NewControlPacket(packets.Pubrel).(*packets.PubrelPacket)
	rel.MessageID = id
	s.mu.Lock()
	if cur, ok := s.out[key]; ok && cur.seq == e.seq {
		cur.pkt = rel
		s.out[key] = cur
	}
	s.mu.Unlock()
	return nil
}

// Get implements paho.Store.
func (s *sessionStore) Get(key string) packets.ControlPacket {
	s.mu.Lock()
	defer s.mu.Unlock()
	if e, ok := s.out[key]; ok {
		return e.pkt
	}
	return s.in[key]
}

// All implements paho.Store: outbound keys in spool order (so a resume
// after reconnect keeps the per-endpoint order), then inbound keys.
func (s *sessionStore) All() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	keys := make([]string, 0, len(s.out)+len(s.in))
	for k := range s.out {
		keys = append(keys, k)
	}
	sort.Slice(keys, func(i, j int) bool { return s.out[keys[i]].seq < s.out[keys[j]].seq })
	for k := range s.in {
		keys = append(keys, k)
	}
	return keys
}

// Del implements paho.Store: for an outbound message, the central broker
// acknowledged it (PUBACK / PUBCOMP), so the spool copy is released.
func (s *sessionStore) Del(key string) {
	s.mu.Lock()
	if len(key) < 2 || key[0] != 'o' {
		delete(s.in, key)
		s.mu.Unlock()
		return
	}
	e, ok := s.out[key]
	delete(s.out, key)
	delete(s.carried, key)
	if ok && e.seq != 0 {
		s.done[e.seq] = struct{}{}
	}
	s.mu.Unlock()
	if !ok || e.seq == 0 {
		return
	}
	if err := s.sp.Ack(s.endpoint, e.seq); err != nil {
		s.onErr(err)
	}
	s.onAck(e.seq, e.qos)
	select {
	case s.freed <- struct{}{}:
	default:
	}
}
