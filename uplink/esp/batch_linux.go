//go:build linux

package esp

import (
	"net"
	"net/netip"
	"os"
	"syscall"
	"unsafe"

	"golang.org/x/sys/unix"
)

// batchConn reads and writes up to batchLen datagrams per system call
// (recvmmsg/sendmmsg) on one UDP socket. The receive half belongs to the
// socket's reader goroutine, the send half to its sender goroutine; the
// message headers are built once and reused, so a batch allocates nothing.
type batchConn struct {
	rc syscall.RawConn
	v6 bool // AF_INET6 socket: IPv4 peers are written v4-mapped

	// Receive half. Each message has its own bufSize slot and then spills
	// into over, shared by the batch: one datagram larger than a slot (IKE
	// with certificates) fits; when several spill in one batch only the
	// last one is intact and the others are dropped (counted; IKE
	// retransmits). This keeps a batch at batchLen×bufSize + 64 KiB instead
	// of batchLen×64 KiB per socket.
	rhdrs     [batchLen]unix.Mmsghdr
	riovs     [batchLen][2]unix.Iovec
	rnames    [batchLen]unix.RawSockaddrInet6
	rbufs     [batchLen][]byte
	over      []byte
	big       []byte // a spilled datagram made contiguous
	rn        int
	rerrno    syscall.Errno
	lastSpill int
	readFn    func(fd uintptr) bool

	// Send half.
	shdrs   [batchLen]unix.Mmsghdr
	siovs   [batchLen]unix.Iovec
	snames  [batchLen]unix.RawSockaddrInet6
	scount  int
	sdone   int
	sfailed int
	writeFn func(fd uintptr) bool
}

// batchLen is the number of datagrams per recvmmsg/sendmmsg call.
const batchLen = 32

// newBatchConn prepares batched I/O on c, or returns nil when the socket
// cannot do it (then the caller reads and writes one datagram at a time).
func newBatchConn(c *net.UDPConn) *batchConn {
	rc, err := c.SyscallConn()
	if err != nil {
		return nil
	}
	b := &batchConn{rc: rc, over: make([]byte, 1<<16), lastSpill: -1}
	var serr error
	if err := rc.Control(func(fd uintptr) {
		var sa unix.Sockaddr
		sa, serr = unix.Getsockname(int(fd))
		_, b.v6 = sa.(*unix.SockaddrInet6)
	}); err != nil || serr != nil {
		return nil
	}
	for i := range b.rhdrs {
		b.rbufs[i] = make([]byte, bufSize)
		b.riovs[i][0].Base = &b.rbufs[i][0]
		b.riovs[i][0].SetLen(bufSize)
		b.riovs[i][1].Base = &b.over[0]
		b.riovs[i][1].SetLen(len(b.over))
		h := &b.rhdrs[i].Hdr
		h.Name = (*byte)(unsafe.Pointer(&b.rnames[i]))
		h.Iov = &b.riovs[i][0]
		h.SetIovlen(2)
	}
	for i := range b.shdrs {
		h := &b.shdrs[i].Hdr
		h.Name = (*byte)(unsafe.Pointer(&b.snames[i]))
		h.Iov = &b.siovs[i]
		h.SetIovlen(1)
	}
	b.readFn = b.doRead
	b.writeFn = b.doWrite
	return b
}

func (b *batchConn) doRead(fd uintptr) bool {
	for {
		n, _, e := unix.Syscall6(unix.SYS_RECVMMSG, fd, uintptr(unsafe.Pointer(&b.rhdrs[0])), batchLen, unix.MSG_DONTWAIT, 0, 0)
		switch e {
		case unix.EINTR:
			continue
		case unix.EAGAIN:
			return false // wait until readable
		}
		b.rn, b.rerrno = int(n), e
		return true
	}
}

// read receives up to batchLen datagrams; msg returns them.
func (b *batchConn) read() (int, error) {
	for i := range b.rn {
		b.rhdrs[i].Hdr.Namelen = unix.SizeofSockaddrInet6
		b.rhdrs[i].Hdr.Flags = 0
		b.rhdrs[i].Len = 0
	}
	if b.rn == 0 { // first call
		for i := range b.rhdrs {
			b.rhdrs[i].Hdr.Namelen = unix.SizeofSockaddrInet6
		}
	}
	b.rn, b.rerrno = 0, 0
	if err := b.rc.Read(b.readFn); err != nil {
		return 0, err
	}
	if b.rerrno != 0 {
		return 0, os.NewSyscallError("recvmmsg", b.rerrno)
	}
	b.lastSpill = -1
	for i := b.rn - 1; i >= 0; i-- {
		if b.rhdrs[i].Len > bufSize {
			b.lastSpill = i
			break
		}
	}
	return b.rn, nil
}

// msg returns datagram i of the last read and its source. ok is false for
// a datagram whose spilled tail was overwritten by a later one in the same
// batch, or (err) whose source is not an IP address.
func (b *batchConn) msg(i int) (p []byte, from netip.AddrPort, ok bool, err error) {
	n := int(b.rhdrs[i].Len)
	if b.rhdrs[i].Hdr.Flags&unix.MSG_TRUNC != 0 {
		return nil, from, false, nil
	}
	p = b.rbufs[i][:min(n, bufSize)]
	if n > bufSize {
		if i != b.lastSpill {
			return nil, from, false, nil
		}
		if b.big == nil {
			b.big = make([]byte, bufSize+len(b.over))
		}
		copy(b.big, p)
		copy(b.big[bufSize:], b.over[:n-bufSize])
		p = b.big[:n]
	}
	sa := &b.rnames[i]
	port := htons(sa.Port) // network order in memory
	switch sa.Family {
	case unix.AF_INET:
		in4 := (*unix.RawSockaddrInet4)(unsafe.Pointer(sa))
		return p, netip.AddrPortFrom(netip.AddrFrom4(in4.Addr), port), true, nil
	case unix.AF_INET6:
		return p, netip.AddrPortFrom(netip.AddrFrom16(sa.Addr).Unmap(), port), true, nil
	}
	return p, from, false, errAddrType
}

// littleEndian is the byte order of this machine (sockaddr ports are in
// network order in memory, read here as a native uint16).
var littleEndian = func() bool { x := uint16(1); return *(*byte)(unsafe.Pointer(&x)) == 1 }()

// htons swaps between host and network byte order (its own inverse).
func htons(v uint16) uint16 {
	if littleEndian {
		return v<<8 | v>>8
	}
	return v
}

// write sends pkts (at most batchLen) with as few sendmmsg calls as the
// kernel allows. A datagram the kernel refuses (or whose address does not
// fit the socket's family) is skipped; failed counts them.
func (b *batchConn) write(pkts []outPkt) (failed int, err error) {
	n := 0
	for _, p := range pkts {
		sa := &b.snames[n]
		addr := p.to.Addr()
		if b.v6 {
			sa.Family = unix.AF_INET6
			sa.Port = htons(p.to.Port())
			sa.Flowinfo = 0
			sa.Addr = addr.As16()
			sa.Scope_id = 0
			b.shdrs[n].Hdr.Namelen = unix.SizeofSockaddrInet6
		} else {
			if !addr.Is4() && !addr.Is4In6() {
				failed++
				continue
			}
			in4 := (*unix.RawSockaddrInet4)(unsafe.Pointer(sa))
			in4.Family = unix.AF_INET
			in4.Port = htons(p.to.Port())
			in4.Addr = addr.Unmap().As4()
			in4.Zero = [8]uint8{}
			b.shdrs[n].Hdr.Namelen = unix.SizeofSockaddrInet4
		}
		b.siovs[n].Base = &(*p.buf)[0]
		b.siovs[n].SetLen(p.n)
		n++
	}
	if n == 0 {
		return failed, nil
	}
	b.scount, b.sdone, b.sfailed = n, 0, 0
	err = b.rc.Write(b.writeFn)
	// The kernel is done with the buffers: drop the references.
	for i := range n {
		b.siovs[i].Base = nil
	}
	return failed + b.sfailed, err
}

func (b *batchConn) doWrite(fd uintptr) bool {
	for b.sdone < b.scount {
		n, _, e := unix.Syscall6(unix.SYS_SENDMMSG, fd, uintptr(unsafe.Pointer(&b.shdrs[b.sdone])), uintptr(b.scount-b.sdone), unix.MSG_DONTWAIT, 0, 0)
		switch e {
		case 0:
			b.sdone += int(n)
		case unix.EINTR:
		case unix.EAGAIN:
			return false // wait until writable
		default:
			// The first remaining datagram failed (EMSGSIZE, EPERM from
			// a firewall, ...): skip it and send the rest.
			b.sdone++
			b.sfailed++
		}
	}
	return true
}
