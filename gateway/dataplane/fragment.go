package dataplane

import (
	"errors"

	"gvisor.dev/gvisor/pkg/tcpip/header"
)

// Fragment splits h (DF clear) into fragments of at most mtu bytes (RFC 791
// §3.2, "fragmentation procedure") and calls emit with each; the buffer
// passed to emit is reused.
func Fragment(h header.IPv4, mtu int, emit func([]byte) error) error {
	ihl := int(h.HeaderLength())
	payload := h.Payload()
	chunk := (mtu - ihl) &^ 7
	if chunk <= 0 {
		return errors.New("dataplane: MTU too small to fragment")
	}
	baseOff, origMF := h.FragmentOffset(), h.More()
	buf := make([]byte, ihl+chunk)
	for off := 0; off < len(payload); off += chunk {
		end := off + chunk
		last := end >= len(payload)
		if last {
			end = len(payload)
		}
		n := copy(buf, h[:ihl])
		n += copy(buf[n:], payload[off:end])
		f := header.IPv4(buf[:n])
		f.SetTotalLength(uint16(n))
		var flags uint8
		if !last || origMF {
			flags = header.IPv4FlagMoreFragments
		}
		f.SetFlagsFragmentOffset(flags, baseOff+uint16(off)) // off is a multiple of 8
		f.SetChecksum(0)
		f.SetChecksum(^f.CalculateChecksum())
		if err := emit(f); err != nil {
			return err
		}
	}
	return nil
}
