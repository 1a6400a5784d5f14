//go:build linux

package esp

import (
	"net"
	"sync/atomic"
	"testing"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"

	"github.com/fleetgate/fleetgate/internal/testenv"
)

// BenchmarkOuterTransport is issue 21 item 7's measurement: the same
// 1400-byte ESP packets (+ ESP header, IV, padding, ICV of AES-GCM-16:
// 1436 bytes) carried the two ways the gateway could carry them, send and
// receive half together on loopback, batchLen per call:
//
//   - udp-gso: UDP-encapsulated on 4500 as the product does (batchConn:
//     sendmmsg with UDP GSO, recvmmsg);
//   - udp-sendmmsg: the same without GSO;
//   - raw-esp: IP protocol 50 on raw sockets (what answering NAT-D
//     truthfully would allow a non-NATed client to use): sendmmsg and
//     recvmmsg, no GSO (the kernel has none for raw IP), the receiver
//     gets every protocol-50 packet of the host with its IP header.
//
// It reports process CPU per received packet (cpu-ns/pkt) and loss.
// Run as root: go test -run '^$' -bench BenchmarkOuterTransport ./uplink/esp/
func BenchmarkOuterTransport(b *testing.B) {
	const size = 1436
	b.Run("udp-gso", func(b *testing.B) { benchUDPOuter(b, size, true) })
	b.Run("udp-sendmmsg", func(b *testing.B) { benchUDPOuter(b, size, false) })
	b.Run("raw-esp", func(b *testing.B) { benchRawESP(b, size) })
}

// outerWindow bounds the packets in flight so neither way loses packets
// to a full receive queue.
const outerWindow = 4096

func outerRun(b *testing.B, size int, got *atomic.Uint64, send func() error) {
	b.SetBytes(int64(size * batchLen))
	b.ResetTimer()
	cpu0 := cpuTime()
	var sent, lost uint64
	for i := 0; i < b.N; i++ {
		// A stalled window (packets lost) is written off after 20 ms.
		for t0 := time.Now(); sent-got.Load()-lost > outerWindow; time.Sleep(50 * time.Microsecond) {
			if time.Since(t0) > 20*time.Millisecond {
				lost = sent - got.Load()
			}
		}
		if err := send(); err != nil {
			b.Fatal(err)
		}
		sent += batchLen
	}
	deadline := time.Now().Add(2 * time.Second)
	for got.Load() < sent && time.Now().Before(deadline) {
		time.Sleep(time.Millisecond)
	}
	n := got.Load()
	if n == 0 {
		b.Fatal("nothing received")
	}
	b.ReportMetric(float64(cpuTime()-cpu0)/float64(n), "cpu-ns/pkt")
	b.ReportMetric(100*(1-float64(n)/float64(sent)), "loss-%")
}

func benchUDPOuter(b *testing.B, size int, gso bool) {
	rx, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		b.Fatal(err)
	}
	defer rx.Close()
	_ = rx.SetReadBuffer(4 << 20)
	rb := newBatchConn(rx)
	var got atomic.Uint64
	go func() {
		for {
			n, err := rb.read()
			if err != nil {
				return
			}
			got.Add(uint64(n))
		}
	}()
	tx, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		b.Fatal(err)
	}
	defer tx.Close()
	_ = tx.SetWriteBuffer(4 << 20)
	tb := newBatchConn(tx)
	tb.noGSO = tb.noGSO || !gso
	to := rx.LocalAddr().(*net.UDPAddr).AddrPort()
	pkts := make([]outPkt, batchLen)
	for i := range pkts {
		pkts[i] = pkt(size, byte(i), to)
	}
	outerRun(b, size, &got, func() error { _, err := tb.write(pkts); return err })
}

func benchRawESP(b *testing.B, size int) {
	testenv.RequireRoot(b) // raw IP sockets need CAP_NET_RAW
	raw := func() int {
		fd, err := unix.Socket(unix.AF_INET, unix.SOCK_RAW|unix.SOCK_CLOEXEC, unix.IPPROTO_ESP)
		if err != nil {
			b.Fatalf("raw IP protocol 50 socket: %v", err)
		}
		_ = unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_RCVBUFFORCE, 4<<20)
		_ = unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_SNDBUFFORCE, 4<<20)
		if err := unix.Bind(fd, &unix.SockaddrInet4{Addr: [4]byte{127, 0, 0, 1}}); err != nil {
			b.Fatal(err)
		}
		return fd
	}
	rfd := raw()
	// The sender is an IPPROTO_RAW socket (IP header written here, never
	// receives): a second protocol-50 socket would get a copy of every
	// packet on loopback, which a gateway on its own host would not.
	sfd, err := unix.Socket(unix.AF_INET, unix.SOCK_RAW|unix.SOCK_CLOEXEC, unix.IPPROTO_RAW)
	if err != nil {
		b.Fatalf("raw socket: %v", err)
	}
	_ = unix.SetsockoptInt(sfd, unix.SOL_SOCKET, unix.SO_SNDBUFFORCE, 4<<20)
	var got atomic.Uint64
	done := make(chan struct{})
	go func() {
		defer close(done)
		var hdrs [batchLen]unix.Mmsghdr
		var iovs [batchLen]unix.Iovec
		bufs := make([][]byte, batchLen)
		for i := range hdrs {
			bufs[i] = make([]byte, 2048)
			iovs[i].Base = &bufs[i][0]
			iovs[i].SetLen(len(bufs[i]))
			hdrs[i].Hdr.Iov = &iovs[i]
			hdrs[i].Hdr.SetIovlen(1)
		}
		for {
			n, _, e := unix.Syscall6(unix.SYS_RECVMMSG, uintptr(rfd), uintptr(unsafe.Pointer(&hdrs[0])), batchLen, unix.MSG_WAITFORONE, 0, 0)
			if e == unix.EINTR {
				continue
			}
			if e != 0 {
				return
			}
			for i := 0; i < int(n); i++ {
				// What a raw-ESP receiver must do per packet: skip the IP header.
				p := bufs[i][:hdrs[i].Len]
				if len(p) < 20 || p[9] != unix.IPPROTO_ESP {
					continue
				}
				got.Add(1)
			}
		}
	}()
	var hdrs [batchLen]unix.Mmsghdr
	var iovs [batchLen]unix.Iovec
	to := unix.RawSockaddrInet4{Family: unix.AF_INET, Addr: [4]byte{127, 0, 0, 1}}
	payload := make([]byte, 20+size)
	payload[0], payload[8], payload[9] = 0x45, 64, unix.IPPROTO_ESP
	payload[2], payload[3] = byte((20+size)>>8), byte(20+size)
	copy(payload[12:16], []byte{127, 0, 0, 1})
	copy(payload[16:20], []byte{127, 0, 0, 1})
	payload[23] = 0x7f // an SPI
	for i := range hdrs {
		iovs[i].Base = &payload[0]
		iovs[i].SetLen(len(payload))
		hdrs[i].Hdr.Iov = &iovs[i]
		hdrs[i].Hdr.SetIovlen(1)
		hdrs[i].Hdr.Name = (*byte)(unsafe.Pointer(&to))
		hdrs[i].Hdr.Namelen = unix.SizeofSockaddrInet4
	}
	outerRun(b, size, &got, func() error {
		for off := 0; off < batchLen; {
			n, _, e := unix.Syscall6(unix.SYS_SENDMMSG, uintptr(sfd), uintptr(unsafe.Pointer(&hdrs[off])), uintptr(batchLen-off), 0, 0, 0)
			if e == unix.EINTR {
				continue
			}
			if e != 0 {
				return e
			}
			off += int(n)
		}
		return nil
	})
	_ = unix.Close(sfd)
	_ = unix.Shutdown(rfd, unix.SHUT_RDWR)
	_ = unix.Close(rfd)
	select {
	case <-done:
	case <-time.After(time.Second):
	}
}
