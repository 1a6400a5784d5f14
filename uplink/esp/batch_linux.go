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

	// UDP GRO (enableGRO): the kernel hands one message per run of
	// same-size datagrams from one source (a sender's UDP_SEGMENT burst
	// across a veth, or GRO at a NIC), with the segment size in a control
	// message. Each message then has a whole 64 KiB slot of gro (one
	// anonymous mapping, so pages are committed only as far as datagrams
	// reach), and read splits the messages into dgs.
	gro       []byte
	rcmsgs    [batchLen][groCmsgSpace]byte
	dgs       []groDatagram
	coalesced int // datagrams of the last read that came in a GRO message

	// Send half. Consecutive datagrams to one destination with one size
	// (the last may be shorter) go out as one message with UDP_SEGMENT
	// (UDP GSO, Linux 4.18): the kernel walks its stack once for the run
	// and splits it at the device (or the receiving socket across a veth).
	// msgs[k] is the first datagram and count of message k.
	shdrs   [batchLen]unix.Mmsghdr
	siovs   [batchLen]unix.Iovec
	snames  [batchLen]unix.RawSockaddrInet6
	scmsgs  [batchLen][gsoCmsgSpace]byte
	msgs    [batchLen]struct{ first, count int }
	scount  int
	sdone   int
	sfailed int
	skipped int   // datagrams left out of the last layout (address family)
	skipAt  []int // message index each skipped datagram preceded
	gsoErr  syscall.Errno
	resplit bool // the message at sdone failed as GSO: send its datagrams singly
	noGSO   bool // the kernel or device refused GSO (EIO): never again
	writeFn func(fd uintptr) bool
}

// gsoCmsgSpace is CMSG_SPACE(sizeof(uint16)) on 64-bit Linux; checked in
// newBatchConn.
const gsoCmsgSpace = 24

// udpMaxSegments is the kernel's UDP_MAX_SEGMENTS (64 before Linux 6.9).
const udpMaxSegments = 64

// gsoMaxBytes bounds a GSO message (an IPv4 UDP datagram's payload is
// at most 65507 bytes).
const gsoMaxBytes = 65000

// batchLen is the number of datagrams per recvmmsg/sendmmsg call.
const batchLen = 32

// groSlot is a message's buffer with GRO: the largest UDP payload.
const groSlot = 1 << 16

// groCmsgSpace holds CMSG_SPACE(sizeof(int)) (the UDP_GRO control
// message) on every Linux ABI.
const groCmsgSpace = 24

// groDatagram is one datagram of a GRO read: message m, bytes [off, end).
type groDatagram struct{ m, off, end int32 }

// newBatchConn prepares batched I/O on c, or returns nil when the socket
// cannot do it (then the caller reads and writes one datagram at a time).
func newBatchConn(c *net.UDPConn) *batchConn {
	rc, err := c.SyscallConn()
	if err != nil {
		return nil
	}
	b := &batchConn{rc: rc, over: make([]byte, 1<<16), lastSpill: -1, skipAt: make([]int, 0, batchLen)}
	if unix.CmsgSpace(2) != gsoCmsgSpace {
		b.noGSO = true
	}
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
		b.shdrs[i].Hdr.Name = (*byte)(unsafe.Pointer(&b.snames[i]))
		if !b.noGSO {
			c := (*unix.Cmsghdr)(unsafe.Pointer(&b.scmsgs[i][0]))
			c.Level, c.Type = unix.SOL_UDP, unix.UDP_SEGMENT
			c.SetLen(unix.CmsgLen(2))
		}
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

// enableGRO turns on UDP_GRO (Linux 5.0) on the socket and gives every
// message a 64 KiB slot for a coalesced run; false (and nothing changed)
// when the kernel refuses it. Call it before the first read; release
// returns the slots.
func (b *batchConn) enableGRO() bool {
	if b.gro != nil {
		return true
	}
	if unix.CmsgSpace(4) > groCmsgSpace {
		return false
	}
	mem, err := unix.Mmap(-1, 0, batchLen*groSlot, unix.PROT_READ|unix.PROT_WRITE, unix.MAP_PRIVATE|unix.MAP_ANONYMOUS)
	if err != nil {
		return false
	}
	var serr error
	if err := b.rc.Control(func(fd uintptr) {
		serr = unix.SetsockoptInt(int(fd), unix.IPPROTO_UDP, unix.UDP_GRO, 1)
	}); err != nil || serr != nil {
		_ = unix.Munmap(mem)
		return false
	}
	b.gro = mem
	b.dgs = make([]groDatagram, 0, batchLen*udpMaxSegments)
	for i := range b.rhdrs {
		b.rbufs[i] = nil
		b.riovs[i][0].Base = &mem[i*groSlot]
		b.riovs[i][0].SetLen(groSlot)
		b.riovs[i][1].Base = nil
		h := &b.rhdrs[i].Hdr
		h.SetIovlen(1)
		h.Control = &b.rcmsgs[i][0]
		h.SetControllen(unix.CmsgSpace(4))
	}
	b.over = nil
	return true
}

// coalescedCount is how many datagrams of the last read came in GRO
// messages.
func (b *batchConn) coalescedCount() int { return b.coalesced }

// release returns the GRO slots; the batch must not be read again.
func (b *batchConn) release() {
	if b.gro != nil {
		mem := b.gro
		b.gro = nil
		for i := range b.riovs {
			b.riovs[i][0].Base = nil
		}
		_ = unix.Munmap(mem)
	}
}

// read receives up to batchLen messages; msg returns their datagrams,
// whose number it returns (more than the messages when GRO coalesced).
func (b *batchConn) read() (int, error) {
	for i := range b.rn {
		b.rhdrs[i].Hdr.Namelen = unix.SizeofSockaddrInet6
		b.rhdrs[i].Hdr.Flags = 0
		b.rhdrs[i].Len = 0
		if b.gro != nil {
			b.rhdrs[i].Hdr.SetControllen(unix.CmsgSpace(4))
		}
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
	if b.gro != nil {
		return b.splitGRO(), nil
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

// splitGRO lists the datagrams of the last read's messages: a message
// with a UDP_GRO control message holds a run of segments of that size
// (the last may be shorter).
func (b *batchConn) splitGRO() int {
	b.dgs = b.dgs[:0]
	b.coalesced = 0
	for i := range b.rn {
		n := int(b.rhdrs[i].Len)
		seg := 0
		h := &b.rhdrs[i].Hdr
		if int(h.Controllen) >= unix.CmsgLen(4) {
			c := (*unix.Cmsghdr)(unsafe.Pointer(&b.rcmsgs[i][0]))
			if c.Level == unix.SOL_UDP && c.Type == unix.UDP_GRO && int(c.Len) >= unix.CmsgLen(4) {
				seg = int(*(*int32)(unsafe.Pointer(&b.rcmsgs[i][unix.CmsgLen(0)])))
			}
		}
		if seg <= 0 || seg >= n || h.Flags&unix.MSG_TRUNC != 0 {
			b.dgs = append(b.dgs, groDatagram{int32(i), 0, int32(n)})
			continue
		}
		for off := 0; off < n; off += seg {
			b.dgs = append(b.dgs, groDatagram{int32(i), int32(off), int32(min(off+seg, n))})
			b.coalesced++
		}
	}
	return len(b.dgs)
}

// msg returns datagram i of the last read and its source. ok is false for
// a datagram whose spilled tail was overwritten by a later one in the same
// batch; err is set when its source is not an IP address.
func (b *batchConn) msg(i int) (p []byte, from netip.AddrPort, ok bool, err error) {
	if b.gro != nil {
		d := b.dgs[i]
		from, err = b.source(int(d.m))
		if err != nil {
			return nil, from, false, err
		}
		if b.rhdrs[d.m].Hdr.Flags&unix.MSG_TRUNC != 0 {
			return nil, from, false, nil
		}
		return b.gro[int(d.m)*groSlot+int(d.off) : int(d.m)*groSlot+int(d.end)], from, true, nil
	}
	from, err = b.source(i)
	if err != nil {
		return nil, from, false, err
	}
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
	return p, from, true, nil
}

// source is message i's source address.
func (b *batchConn) source(i int) (from netip.AddrPort, err error) {
	sa := &b.rnames[i]
	port := htons(sa.Port) // network order in memory
	switch sa.Family {
	case unix.AF_INET:
		in4 := (*unix.RawSockaddrInet4)(unsafe.Pointer(sa))
		from = netip.AddrPortFrom(netip.AddrFrom4(in4.Addr), port)
	case unix.AF_INET6:
		from = netip.AddrPortFrom(netip.AddrFrom16(sa.Addr).Unmap(), port)
	default:
		return from, errAddrType
	}
	return from, nil
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
	n := len(pkts)
	// The iovecs are per datagram, in order: siovs[i] is pkts[i].
	for i := range pkts {
		b.siovs[i].Base = &(*pkts[i].buf)[0]
		b.siovs[i].SetLen(pkts[i].n)
	}
	for start := 0; start < n; {
		gso := !b.noGSO
		m := b.build(pkts, start, gso)
		b.scount, b.sdone, b.sfailed, b.resplit = m, 0, 0, false
		if m == 0 { // nothing addressable left
			failed += n - start
			break
		}
		werr := b.rc.Write(b.writeFn)
		failed += b.sfailed
		if werr != nil {
			// Closed socket: everything from the unsent message on failed.
			rest := n - start
			for k := range b.sdone {
				rest -= b.msgs[k].count
			}
			failed += rest
			err = werr
			break
		}
		if !b.resplit {
			failed += b.skipped // build laid out all of pkts[start:]
			break
		}
		// Message sdone was refused as GSO: everything before it went
		// out; send its datagrams (and the rest) again, singly for it.
		failed += b.skippedBefore(b.sdone)
		k := b.sdone
		first, count := b.msgs[k].first, b.msgs[k].count
		b.noGSO = b.noGSO || b.gsoErr == unix.EIO
		m = b.buildSingle(pkts, first, count)
		b.scount, b.sdone, b.sfailed = m, 0, 0
		if m > 0 {
			if werr := b.rc.Write(b.writeFn); werr != nil {
				failed += count - b.sdone
				err = werr
				break
			}
		}
		failed += b.sfailed + b.skipped
		start = first + count
	}
	// The kernel is done with the buffers: drop the references.
	for i := range n {
		b.siovs[i].Base = nil
	}
	return failed, err
}

// setName writes to's sockaddr into message slot k; false if the address
// does not fit the socket's family.
func (b *batchConn) setName(k int, to netip.AddrPort) bool {
	sa := &b.snames[k]
	addr := to.Addr()
	if b.v6 {
		sa.Family = unix.AF_INET6
		sa.Port = htons(to.Port())
		sa.Flowinfo = 0
		sa.Addr = addr.As16()
		sa.Scope_id = 0
		b.shdrs[k].Hdr.Namelen = unix.SizeofSockaddrInet6
		return true
	}
	if !addr.Is4() && !addr.Is4In6() {
		return false
	}
	in4 := (*unix.RawSockaddrInet4)(unsafe.Pointer(sa))
	in4.Family = unix.AF_INET
	in4.Port = htons(to.Port())
	in4.Addr = addr.Unmap().As4()
	in4.Zero = [8]uint8{}
	b.shdrs[k].Hdr.Namelen = unix.SizeofSockaddrInet4
	return true
}

// build lays out messages for pkts[start:]: runs of one destination and
// size as single GSO messages when gso, else one message per datagram.
// It returns the number of messages; b.skipped counts datagrams left out
// because of their address, and b.skipAt where.
func (b *batchConn) build(pkts []outPkt, start int, gso bool) int {
	m := 0
	b.skipped = 0
	b.skipAt = b.skipAt[:0]
	for i := start; i < len(pkts); {
		p := pkts[i]
		if !b.setName(m, p.to) {
			b.skipped++
			b.skipAt = append(b.skipAt, m)
			i++
			continue
		}
		count, total := 1, p.n
		if gso {
			for j := i + 1; j < len(pkts) && count < udpMaxSegments; j++ {
				q := pkts[j]
				if q.to != p.to || q.n > p.n || total+q.n > gsoMaxBytes {
					break
				}
				count++
				total += q.n
				if q.n < p.n { // a shorter datagram ends the run
					break
				}
			}
		}
		b.setMsg(m, i, count, p.n)
		m++
		i += count
	}
	return m
}

// buildSingle lays out pkts[first:first+count] one message each.
func (b *batchConn) buildSingle(pkts []outPkt, first, count int) int {
	m := 0
	b.skipped = 0
	b.skipAt = b.skipAt[:0]
	for i := first; i < first+count; i++ {
		if !b.setName(m, pkts[i].to) {
			b.skipped++
			continue
		}
		b.setMsg(m, i, 1, pkts[i].n)
		m++
	}
	return m
}

// setMsg points message k at count datagrams from first; more than one
// makes it a GSO message of segment size seg.
func (b *batchConn) setMsg(k, first, count, seg int) {
	h := &b.shdrs[k].Hdr
	h.Iov = &b.siovs[first]
	h.SetIovlen(count)
	if count > 1 {
		*(*uint16)(unsafe.Pointer(&b.scmsgs[k][unix.CmsgLen(0)])) = uint16(seg)
		h.Control = &b.scmsgs[k][0]
		h.SetControllen(gsoCmsgSpace)
	} else {
		h.Control = nil
		h.SetControllen(0)
	}
	b.msgs[k].first, b.msgs[k].count = first, count
}

// skippedBefore counts address-skipped datagrams laid out before message k.
func (b *batchConn) skippedBefore(k int) int {
	n := 0
	for _, at := range b.skipAt {
		if at <= k {
			n++
		}
	}
	return n
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
			k := b.sdone
			if b.msgs[k].count > 1 && (e == unix.EIO || e == unix.EINVAL || e == unix.EOPNOTSUPP) {
				// GSO refused (no checksum offload: EIO; a segment
				// larger than the path MTU: EINVAL): the caller resends
				// this run one datagram at a time.
				b.resplit, b.gsoErr = true, e
				return true
			}
			// The first remaining datagram failed (EMSGSIZE, EPERM from
			// a firewall, ...): skip it and send the rest.
			b.sdone++
			b.sfailed += b.msgs[k].count
		}
	}
	return true
}
