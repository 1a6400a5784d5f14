package dataplane

import (
	"encoding/binary"
	"errors"

	"github.com/fleetgate/fleetgate/gateway/ipv4"
)

// Fragment splits h (DF clear) into fragments of at most mtu bytes (RFC 791
// §3.2, "fragmentation procedure") and calls emit with each; the buffer
// passed to emit is reused.
func Fragment(h ipv4.Header, mtu int, emit func([]byte) error) error {
	ihl := h.IHL()
	payload := h.Payload()
	chunk := (mtu - ihl) &^ 7
	if chunk <= 0 {
		return errors.New("dataplane: MTU too small to fragment")
	}
	ff := binary.BigEndian.Uint16(h[6:])
	baseOff := int(ff & 0x1fff)
	origMF := ff&0x2000 != 0
	buf := make([]byte, ihl+chunk)
	for off := 0; off < len(payload); off += chunk {
		end := off + chunk
		last := end >= len(payload)
		if last {
			end = len(payload)
		}
		n := copy(buf, h[:ihl])
		n += copy(buf[n:], payload[off:end])
		f := ipv4.Header(buf[:n])
		binary.BigEndian.PutUint16(f[2:], uint16(n))
		fo := uint16(baseOff + off/8)
		if !last || origMF {
			fo |= 0x2000
		}
		binary.BigEndian.PutUint16(f[6:], fo)
		f.SetChecksum()
		if err := emit(f); err != nil {
			return err
		}
	}
	return nil
}
