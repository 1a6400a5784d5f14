package dataplane

import (
	"errors"
	"fmt"
	"os"
	"runtime"
	"sync"
	"testing"

	wgtun "golang.zx2c4.com/wireguard/tun"
)

// fakeVnet is a wgtun.Device whose reads come from a script (a packet or
// an error each) and whose writes are recorded per call.
type fakeVnet struct {
	mu      sync.Mutex
	reads   []any // []byte: one packet; error: returned
	writes  [][]int
	gate    chan struct{} // if set, the first Write waits for it
	entered chan struct{} // closed when the first Write starts
}

func (f *fakeVnet) File() *os.File { return nil }
func (f *fakeVnet) Read(bufs [][]byte, sizes []int, offset int) (int, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if len(f.reads) == 0 {
		return 0, os.ErrClosed
	}
	r := f.reads[0]
	f.reads = f.reads[1:]
	if err, ok := r.(error); ok {
		return 0, err
	}
	sizes[0] = copy(bufs[0][offset:], r.([]byte))
	return 1, nil
}
func (f *fakeVnet) Write(bufs [][]byte, offset int) (int, error) {
	f.mu.Lock()
	g := f.gate
	f.gate = nil
	f.mu.Unlock()
	if g != nil {
		close(f.entered)
		<-g
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	var lens []int
	for _, b := range bufs {
		lens = append(lens, len(b)-offset)
	}
	f.writes = append(f.writes, lens)
	return len(bufs), nil
}
func (f *fakeVnet) MTU() (int, error)          { return 1500, nil }
func (f *fakeVnet) Name() (string, error)      { return "fake0", nil }
func (f *fakeVnet) Events() <-chan wgtun.Event { return nil }
func (f *fakeVnet) Close() error               { return nil }
func (f *fakeVnet) BatchSize() int             { return 4 }

// TestVnetReadSkipsBadBursts: a read the driver cannot split is counted
// and skipped; the next packet is still delivered; a closed device ends
// the reader.
func TestVnetReadSkipsBadBursts(t *testing.T) {
	f := &fakeVnet{reads: []any{errors.New("virtioNetHdr.hdrLen (1) < virtioNetHdr.csumStart (2)"), []byte{0x45, 1, 2}}}
	d := newVnetDevice(f, 1500)
	defer d.close()
	buf := make([]byte, 100)
	n, err := d.readPacket(buf)
	if err != nil || n != 3 || buf[0] != 0x45 {
		t.Fatalf("read after a bad burst: %d %v, want the 3-byte packet", n, err)
	}
	if got := d.stats.ReadErrors.Load(); got != 1 {
		t.Errorf("ReadErrors %d, want 1", got)
	}
	if _, err := d.readPacket(buf); !errors.Is(err, os.ErrClosed) {
		t.Errorf("closed device: %v, want os.ErrClosed", err)
	}
}

// TestVnetWritesLoneInlineStreamBatched: a lone packet is written by its
// caller in a write of its own; packets that arrive while a write is in
// progress are queued and go out BatchSize at a time, none lost.
func TestVnetWritesLoneInlineStreamBatched(t *testing.T) {
	gate := make(chan struct{})
	f := &fakeVnet{gate: gate, entered: make(chan struct{})}
	d := newVnetDevice(f, 1500)
	defer d.close()
	first := make(chan error, 1)
	go func() { first <- d.writePacket(make([]byte, 100)) }()
	<-f.entered // the lone packet is being written inline, by its caller
	const n = 7 // the device has 2 × BatchSize = 8 slots; the lone packet holds one
	for i := range n {
		if err := d.writePacket(make([]byte, 200+i)); err != nil { // queued: returns at once
			t.Fatal(err)
		}
	}
	close(gate)
	if err := <-first; err != nil {
		t.Fatal(err)
	}
	for d.stats.PacketsWritten.Load() != n+1 {
		d.wmu.Lock()
		idle := !d.busy && len(d.pending) == 0
		d.wmu.Unlock()
		if idle && d.stats.PacketsWritten.Load() != n+1 {
			t.Fatalf("writer idle with %d of %d packets written", d.stats.PacketsWritten.Load(), n+1)
		}
		runtime.Gosched()
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	want := [][]int{{100}, {200, 201, 202, 203}, {204, 205, 206}}
	if fmt.Sprint(f.writes) != fmt.Sprint(want) {
		t.Errorf("writes %v, want %v (lone inline, then batches of BatchSize 4 in order)", f.writes, want)
	}
}
