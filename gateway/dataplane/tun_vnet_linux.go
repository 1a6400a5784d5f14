package dataplane

import (
	"errors"
	"fmt"
	"sync"

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
// hand out. Writes: a WritePacket that finds no write in progress writes
// its packet and every packet other goroutines queued meanwhile, in one
// Write (GRO coalesces the TCP/UDP flows among them); one that finds a
// write in progress queues its packet for that writer and returns.
type vnetDevice struct {
	dev   wgtun.Device
	batch int

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
	writing bool
	wbatch  [][]byte
	wdone   []int
}

func newVnetDevice(dev wgtun.Device, mtu int) *vnetDevice {
	b := dev.BatchSize()
	d := &vnetDevice{dev: dev, batch: b, rsize: make([]int, b), plen: make([]int, 2*b)}
	for range b {
		d.rbufs = append(d.rbufs, make([]byte, vnetHeadroom+max(mtu, 1500)+64))
	}
	d.room.L = &d.wmu
	for i := range 2 * b {
		d.store = append(d.store, make([]byte, vnetWriteCap))
		d.free = append(d.free, i)
	}
	return d
}

func (d *vnetDevice) readPacket(buf []byte) (int, error) {
	d.rmu.Lock()
	defer d.rmu.Unlock()
	for d.rnext >= d.rn {
		n, err := d.dev.Read(d.rbufs, d.rsize, vnetHeadroom)
		if err != nil {
			d.rn, d.rnext = 0, 0
			return 0, err
		}
		d.rn, d.rnext = n, 0
	}
	i := d.rnext
	d.rnext++
	n := copy(buf, d.rbufs[i][vnetHeadroom:vnetHeadroom+d.rsize[i]])
	return n, nil
}

func (d *vnetDevice) writePacket(pkt []byte) error {
	if vnetHeadroom+len(pkt) > vnetWriteCap {
		return fmt.Errorf("dataplane: TUN write of %d bytes: larger than %d", len(pkt), vnetWriteCap-vnetHeadroom)
	}
	d.wmu.Lock()
	for len(d.free) == 0 {
		d.room.Wait()
	}
	k := d.free[len(d.free)-1]
	d.free = d.free[:len(d.free)-1]
	copy(d.store[k][vnetHeadroom:], pkt)
	d.plen[k] = len(pkt)
	d.pending = append(d.pending, k)
	if d.writing {
		d.wmu.Unlock()
		return nil // the writer in progress takes it
	}
	d.writing = true
	var first error
	for len(d.pending) > 0 {
		n := min(len(d.pending), d.batch)
		d.wdone = append(d.wdone[:0], d.pending[:n]...)
		d.pending = append(d.pending[:0], d.pending[n:]...)
		d.wbatch = d.wbatch[:0]
		for _, k := range d.wdone {
			d.wbatch = append(d.wbatch, d.store[k][:vnetHeadroom+d.plen[k]])
		}
		d.wmu.Unlock()
		_, err := d.dev.Write(d.wbatch, vnetHeadroom)
		d.wmu.Lock()
		if err != nil && first == nil {
			first = err
		}
		d.free = append(d.free, d.wdone...)
		d.room.Broadcast()
	}
	d.writing = false
	d.wmu.Unlock()
	return first
}

func (d *vnetDevice) close() error { return d.dev.Close() }
