package mqttrelay

import (
	"bufio"
	"fmt"
	"net"
)

// pubrecScanner follows MQTT control-packet boundaries in the byte stream
// from the central broker (fixed header: type nibble, flags nibble,
// Remaining Length as a variable byte integer of at most 4 bytes, MQTT
// 3.1.1 §2.2.3) and reports the packet identifier of every PUBREC. It is an
// incremental, allocation-free state machine over arbitrary chunks; it
// never panics (FuzzPubrecScanner).
type pubrecScanner struct {
	state    uint8 // 0 header, 1 length, 2 body
	typ      uint8
	length   uint32
	mult     uint32
	lenBytes uint8
	left     uint32
	idBytes  uint8
	id       uint16
}

// feed consumes b, calling onPubrec for each PUBREC packet identifier as
// soon as its two bytes have been seen.
func (s *pubrecScanner) feed(b []byte, onPubrec func(id uint16)) error {
	for i := 0; i < len(b); {
		switch s.state {
		case 0:
			s.typ = b[i] >> 4
			s.length, s.mult, s.lenBytes = 0, 1, 0
			s.state = 1
			i++
		case 1:
			c := b[i]
			i++
			s.length += uint32(c&0x7f) * s.mult
			s.mult *= 128
			s.lenBytes++
			if c&0x80 != 0 {
				if s.lenBytes == 4 {
					return fmt.Errorf("%w: remaining length over 4 bytes", ErrMalformed)
				}
				continue
			}
			if s.length == 0 {
				s.state = 0
				continue
			}
			s.left, s.idBytes, s.id = s.length, 0, 0
			s.state = 2
		case 2:
			if s.typ == packetPUBREC && s.idBytes < 2 {
				s.id = s.id<<8 | uint16(b[i])
				s.idBytes++
				i++
				s.left--
				if s.idBytes == 2 {
					onPubrec(s.id)
				}
			} else {
				n := uint32(len(b) - i)
				if n > s.left {
					n = s.left
				}
				i += int(n)
				s.left -= n
			}
			if s.left == 0 {
				s.state = 0
			}
		}
	}
	return nil
}

// sniffConn passes the central broker's stream to paho unchanged, but
// first tells the session about each PUBREC, so that a QoS 2 message's
// "central broker has it" stage is durable before paho answers with PUBREL
// (paho itself does not persist that stage). If it cannot be recorded the
// connection is closed before paho sees the PUBREC.
//
// Reads are buffered: paho reads a packet's header byte by byte, which
// would otherwise cost one read(2) each.
type sniffConn struct {
	net.Conn
	br       *bufio.Reader
	scan     pubrecScanner
	onPubrec func(id uint16) error
}

func newSniffConn(c net.Conn, onPubrec func(id uint16) error) *sniffConn {
	return &sniffConn{Conn: c, br: bufio.NewReaderSize(c, 4096), onPubrec: onPubrec}
}

// Read implements net.Conn.
func (c *sniffConn) Read(b []byte) (int, error) {
	n, err := c.br.Read(b)
	if n > 0 {
		var perr error
		ferr := c.scan.feed(b[:n], func(id uint16) {
			if perr == nil {
				perr = c.onPubrec(id)
			}
		})
		if ferr == nil {
			ferr = perr
		}
		if ferr != nil { // paho sees none of these bytes
			_ = c.Conn.Close()
			return 0, ferr
		}
	}
	return n, err
}
