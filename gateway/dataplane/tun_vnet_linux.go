package dataplane

import (
	"errors"
	"fmt"
	"os"
	"sync"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
	wgtun "golang.zx2c4.com/wireguard/tun"
)

// tunClonePath is the TUN clone device (a variable for tests).
var tunClonePath = "/dev/net/tun"

// createVnet turns an IFF_VNET_HDR TUN descriptor into a batching device:
// it sets the offloads (TUNSETOFFLOAD TSO4/6 + checksum, USO when the
// kernel has it) and fails if the kernel refuses them. A variable for
// tests.
var createVnet = func(fd int) (wgtun.Device, string, error) { return wgtun.CreateUnmonitoredTUNFromFD(fd) }

// vnetHeadroom is the space left in front of every packet buffer: the
// virtio-net header (10 bytes) the vnet driver reads and writes there.
const vnetHeadroom = 16

// vnetWriteCap is the capacity of a write buffer: GRO coalesces later
// packets of a flow into the first one's buffer, up to its capacity.
const vnetWriteCap = 16 << 10

// openVnet creates (or attaches to) TUN device name with IFF_VNET_HDR and
// offloads. Errors name the device, the cause and the fallback.
func openVnet(name string, mtu int) (*vnetDevice, string, error) {
	fd, err := unix.Open(tunClonePath, unix.O_RDWR|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, "", fmt.Errorf("dataplane: open TUN %q: cannot open %s: %w (needs CAP_NET_ADMIN and the tun driver)", name, tunClonePath, err)
	}
	ifr, err := unix.NewIfreq(name)
	if err != nil {
		unix.Close(fd)
		return nil, "", fmt.Errorf("dataplane: open TUN %q: %w", name, err)
	}
	ifr.SetUint16(unix.IFF_TUN | unix.IFF_NO_PI | unix.IFF_VNET_HDR)
	if err := unix.IoctlIfreq(fd, unix.TUNSETIFF, ifr); err != nil {
		unix.Close(fd)
		if errors.Is(err, unix.EINVAL) {
			return nil, "", fmt.Errorf("dataplane: open TUN %q: TUNSETIFF with IFF_VNET_HDR: %w: %w", name, err, ErrNoVnetHdr)
		}
		return nil, "", fmt.Errorf("dataplane: open TUN %q: TUNSETIFF: %w (needs CAP_NET_ADMIN; is the name taken by a non-TUN device?)", name, err)
	}
	if err := unix.SetNonblock(fd, true); err != nil {
		unix.Close(fd)
		return nil, "", fmt.Errorf("dataplane: open TUN %q: %w", name, err)
	}
	dev, got, err := createVnet(fd)
	if err != nil {
		unix.Close(fd)
		return nil, "", fmt.Errorf("dataplane: open TUN %q: offloads: %w: %w", name, err, ErrNoVnetHdr)
	}
	if dev.BatchSize() < 2 {
		dev.Close()
		return nil, "", fmt.Errorf("dataplane: open TUN %q: the device came up without IFF_VNET_HDR: %w", name, ErrNoVnetHdr)
	}
	return newVnetDevice(dev, mtu), got, nil
}

// vnetDevice adapts the batching wireguard TUN to the router's
// one-packet calls. Reads: one read(2) may return a GSO super-packet,
// split into up to BatchSize packets that the following ReadPacket calls
// hand out. Writes: a packet that finds the device idle and comes a while
// after the previous one (a lone packet, a request/response) is written at
// once by its caller; packets that come back to back (a stream, or many
// sessions at once) are queued for a writer goroutine that writes them
// BatchSize at a time in one Write, where GRO coalesces each TCP/UDP flow
// into one super-packet for the kernel (the router calls WritePacket from
// one goroutine, so without the queue nothing would ever be coalesced).
type vnetDevice struct {
	dev   wgtun.Device
	batch int
	stats *TUNStats

	rmu   sync.Mutex
	rbufs [][]byte
	rsize []int
	rn    int // packets in the last read
	rnext int // next one to hand out

	wmu     sync.Mutex
	room    sync.Cond
	store   [][]byte // write buffers, vnetWriteCap each
	free    []int    // indices of unused store buffers
	pending []int    // queued packets (store indices), in order
	plen    []int    // their lengths, by store index
	busy    bool     // a write is in progress (inline or the writer's)
	last    time.Duration
	credit  int // packets still to be written inline (see writeLoop)
	closed  bool
	kick    chan struct{}
	done    chan struct{}
	wbatch  [][]byte
	wdone   []int
	one     [][]byte
}

// vnetInlineGap: a packet that finds the device idle this long after the
// previous one was handed over is written by its caller (no hand-off);
// closer ones are a stream and go through the writer goroutine.
const vnetInlineGap = 10 * time.Microsecond

// vnetInlineAfterSingle: when the writer woke for a single packet the
// caller is not outpacing the device, so this many further packets that
// find it idle are written inline whatever their gap.
const vnetInlineAfterSingle = 16

var vnetEpoch = time.Now()

func newVnetDevice(dev wgtun.Device, mtu int) *vnetDevice {
	b := dev.BatchSize()
	d := &vnetDevice{dev: dev, batch: b, stats: &TUNStats{}, rsize: make([]int, b), plen: make([]int, 2*b),
		kick: make(chan struct{}, 1), done: make(chan struct{}), one: make([][]byte, 1)}
	for range b {
		d.rbufs = append(d.rbufs, make([]byte, vnetHeadroom+max(mtu, 1500)+64))
	}
	d.room.L = &d.wmu
	for i := range 2 * b {
		d.store = append(d.store, make([]byte, vnetWriteCap))
		d.free = append(d.free, i)
	}
	go d.writeLoop()
	return d
}

func (d *vnetDevice) readPacket(buf []byte) (int, error) {
	d.rmu.Lock()
	defer d.rmu.Unlock()
	for d.rnext >= d.rn {
		n, err := d.dev.Read(d.rbufs, d.rsize, vnetHeadroom)
		if err != nil {
			d.rn, d.rnext = 0, 0
			var errno syscall.Errno
			if errors.Is(err, os.ErrClosed) || errors.As(err, &errno) {
				return 0, err
			}
			// A read the driver could not split (a virtio header it
			// refuses, more segments than a batch holds): that burst is
			// lost, counted, and the device keeps being read: returning
			// would stop the router's only reader.
			d.stats.ReadErrors.Add(1)
			continue
		}
		d.stats.Reads.Add(1)
		d.stats.PacketsRead.Add(uint64(n))
		d.rn, d.rnext = n, 0
	}
	i := d.rnext
	d.rnext++
	n := copy(buf, d.rbufs[i][vnetHeadroom:vnetHeadroom+d.rsize[i]])
	return n, nil
}

func (d *vnetDevice) buffered() int {
	d.rmu.Lock()
	defer d.rmu.Unlock()
	return d.rn - d.rnext
}

// takeSlot waits for a free buffer and copies pkt into it; wmu is held.
func (d *vnetDevice) takeSlot(pkt []byte) (int, bool) {
	for len(d.free) == 0 && !d.closed {
		d.room.Wait()
	}
	if d.closed {
		return 0, false
	}
	k := d.free[len(d.free)-1]
	d.free = d.free[:len(d.free)-1]
	copy(d.store[k][vnetHeadroom:], pkt)
	d.plen[k] = len(pkt)
	return k, true
}

func (d *vnetDevice) writePacket(pkt []byte) error {
	if vnetHeadroom+len(pkt) > vnetWriteCap {
		return fmt.Errorf("dataplane: TUN write of %d bytes: larger than %d", len(pkt), vnetWriteCap-vnetHeadroom)
	}
	now := time.Since(vnetEpoch)
	d.wmu.Lock()
	if !d.busy && len(d.pending) == 0 && (d.credit > 0 || now-d.last >= vnetInlineGap) {
		if d.credit > 0 {
			d.credit--
		}
		k, ok := d.takeSlot(pkt)
		if !ok {
			d.wmu.Unlock()
			return os.ErrClosed
		}
		d.busy = true
		d.wmu.Unlock()
		d.one[0] = d.store[k][:vnetHeadroom+len(pkt)]
		_, err := d.dev.Write(d.one, vnetHeadroom)
		d.one[0] = nil
		d.stats.Writes.Add(1)
		d.stats.PacketsWritten.Add(1)
		if err != nil {
			d.stats.WriteErrors.Add(1)
		}
		d.wmu.Lock()
		d.free = append(d.free, k)
		d.room.Broadcast()
		d.last = time.Since(vnetEpoch)
		if len(d.pending) > 0 {
			d.kickLocked() // others queued meanwhile: the writer takes over
		} else {
			d.busy = false
		}
		d.wmu.Unlock()
		return err
	}
	k, ok := d.takeSlot(pkt)
	if !ok {
		d.wmu.Unlock()
		return os.ErrClosed
	}
	d.pending = append(d.pending, k)
	d.last = now
	if !d.busy {
		d.busy = true
		d.kickLocked()
	}
	d.wmu.Unlock()
	return nil
}

func (d *vnetDevice) kickLocked() {
	select {
	case d.kick <- struct{}{}:
	default:
	}
}

// writeLoop writes queued packets in batches until the queue is empty,
// then sleeps until kicked. A failed batch write is counted in
// TUNStats.WriteErrors (the router already counted its packets as sent).
func (d *vnetDevice) writeLoop() {
	for {
		select {
		case <-d.kick:
		case <-d.done:
			return
		}
		for {
			d.wmu.Lock()
			if len(d.pending) == 0 {
				d.busy = false
				d.wmu.Unlock()
				break
			}
			n := min(len(d.pending), d.batch)
			if n == 1 {
				d.credit = vnetInlineAfterSingle
			}
			d.wdone = append(d.wdone[:0], d.pending[:n]...)
			d.pending = append(d.pending[:0], d.pending[n:]...)
			d.wbatch = d.wbatch[:0]
			for _, k := range d.wdone {
				d.wbatch = append(d.wbatch, d.store[k][:vnetHeadroom+d.plen[k]])
			}
			d.wmu.Unlock()
			if _, err := d.dev.Write(d.wbatch, vnetHeadroom); err != nil {
				d.stats.WriteErrors.Add(1)
			}
			d.stats.Writes.Add(1)
			d.stats.PacketsWritten.Add(uint64(len(d.wbatch)))
			d.wmu.Lock()
			d.free = append(d.free, d.wdone...)
			d.room.Broadcast()
			d.wmu.Unlock()
		}
	}
}

func (d *vnetDevice) close() error {
	d.wmu.Lock()
	if !d.closed {
		d.closed = true
		close(d.done)
		d.room.Broadcast()
	}
	d.wmu.Unlock()
	return d.dev.Close()
}
