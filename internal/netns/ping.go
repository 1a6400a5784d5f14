package netns

import (
	"encoding/binary"
	"fmt"
	"net"
	"net/netip"
	"os"
	"time"
)

// Ping sends count ICMP echo requests (RFC 792) from the host to dst, 10 ms
// apart, and returns how many distinct replies arrived within wait after
// the last one. It needs no ping binary (Debian's minimal images have none):
// it opens a raw ICMP socket inside the namespace.
func (h *Host) Ping(dst netip.Addr, count int, wait time.Duration) (int, error) {
	var c net.PacketConn
	err := h.Do(func() (err error) {
		c, err = net.ListenPacket("ip4:icmp", "0.0.0.0")
		return err
	})
	if err != nil {
		return 0, fmt.Errorf("netns: ping socket: %w", err)
	}
	defer c.Close()
	id := uint16(os.Getpid()) ^ uint16(time.Now().UnixNano())
	to := &net.IPAddr{IP: dst.AsSlice()}
	for seq := range count {
		if _, err := c.WriteTo(echoRequest(id, uint16(seq)), to); err != nil {
			return 0, fmt.Errorf("netns: ping %v: %w", dst, err)
		}
		if seq < count-1 {
			time.Sleep(10 * time.Millisecond) // pacing, like ping -i
		}
	}
	seen := map[uint16]bool{}
	buf := make([]byte, 1500)
	_ = c.SetReadDeadline(time.Now().Add(wait))
	for len(seen) < count {
		n, from, err := c.ReadFrom(buf)
		if err != nil {
			break // deadline
		}
		b := buf[:n]
		if len(b) > 0 && b[0]>>4 == 4 { // some kernels hand the IP header
			b = b[int(b[0]&0x0f)*4:]
		}
		src, _ := netip.AddrFromSlice(from.(*net.IPAddr).IP)
		if len(b) < 8 || b[0] != 0 || src.Unmap() != dst || binary.BigEndian.Uint16(b[4:]) != id {
			continue
		}
		seen[binary.BigEndian.Uint16(b[6:])] = true
	}
	return len(seen), nil
}

// Reach reports whether one echo to dst is answered within three seconds
// (generous: the machine may be loaded).
func (h *Host) Reach(dst netip.Addr) bool {
	n, err := h.Ping(dst, 1, 3*time.Second)
	return err == nil && n == 1
}

func echoRequest(id, seq uint16) []byte {
	b := make([]byte, 8+16)
	b[0] = 8 // echo request
	binary.BigEndian.PutUint16(b[4:], id)
	binary.BigEndian.PutUint16(b[6:], seq)
	copy(b[8:], "fleetgate netns ")
	var sum uint32
	for i := 0; i < len(b); i += 2 {
		sum += uint32(b[i])<<8 | uint32(b[i+1])
	}
	for sum > 0xffff {
		sum = sum&0xffff + sum>>16
	}
	binary.BigEndian.PutUint16(b[2:], ^uint16(sum))
	return b
}
