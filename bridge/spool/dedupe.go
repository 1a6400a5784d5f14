package spool

import "crypto/sha256"

// recentIDs remembers the last recentQoS2 device QoS 2 messages of one
// endpoint (packet id -> digest of topic and payload), in a ring.
type recentIDs struct {
	ids  [recentQoS2]uint16
	sums [recentQoS2][sha256.Size]byte
	next int
}

func digest(m *Message) [sha256.Size]byte {
	h := sha256.New()
	h.Write([]byte(m.Topic))
	h.Write([]byte{0})
	h.Write(m.Payload)
	var out [sha256.Size]byte
	h.Sum(out[:0])
	return out
}

func (s *Spool) rememberLocked(m *Message) {
	if m.QoS != 2 || m.DevicePacketID == 0 {
		return
	}
	r := s.recent[m.Endpoint]
	if r == nil {
		r = &recentIDs{}
		s.recent[m.Endpoint] = r
	}
	r.ids[r.next], r.sums[r.next] = m.DevicePacketID, digest(m)
	r.next = (r.next + 1) % recentQoS2
}

func (s *Spool) seenLocked(m *Message) bool {
	r := s.recent[m.Endpoint]
	if r == nil {
		return false
	}
	d := digest(m)
	for i := range r.ids {
		if r.ids[i] == m.DevicePacketID && r.sums[i] == d {
			return true
		}
	}
	return false
}
