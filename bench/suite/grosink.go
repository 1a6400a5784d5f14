package suite

import (
	"encoding/binary"
	"net"

	"golang.org/x/sys/unix"
)

// serveGRO is serve for a kernel UDP socket with UDP_GRO on, as a central
// service that cares about throughput runs it (QUIC servers do): a run of
// same-size datagrams the kernel coalesced arrives as one read with its
// segment size, and is counted as the datagrams it holds. The kernel
// coalesces only what reaches it as one super-packet (a GSO write such as
// the vnet TUN's), so the old TUN path gains nothing from it. Without
// UDP_GRO (old kernels) it is serve.
func (s *sink) serveGRO(c *net.UDPConn) {
	rc, err := c.SyscallConn()
	if err != nil {
		s.serve(c)
		return
	}
	var serr error
	if err := rc.Control(func(fd uintptr) {
		serr = unix.SetsockoptInt(int(fd), unix.IPPROTO_UDP, unix.UDP_GRO, 1)
	}); err != nil || serr != nil {
		s.serve(c)
		return
	}
	buf := make([]byte, 65536)
	oob := make([]byte, unix.CmsgSpace(4))
	for {
		n, oobn, _, _, err := c.ReadMsgUDPAddrPort(buf, oob)
		if err != nil {
			return
		}
		seg := n
		if msgs, err := unix.ParseSocketControlMessage(oob[:oobn]); err == nil {
			for _, m := range msgs {
				if m.Header.Level == unix.SOL_UDP && m.Header.Type == unix.UDP_GRO && len(m.Data) >= 4 {
					if v := int(int32(binary.NativeEndian.Uint32(m.Data))); v > 0 {
						seg = v
					}
				}
			}
		}
		for off := 0; off < n; off += seg {
			s.count(min(seg, n-off))
		}
	}
}
