package stacktest

import (
	"testing"
	"time"
)

func TestClockFiresInOrder(t *testing.T) {
	c := NewClock()
	t1 := c.NewTimer(2 * time.Second)
	t2 := c.NewTimer(1 * time.Second)
	c.Advance(1500 * time.Millisecond)
	select {
	case <-t1.C():
		t.Fatal("t1 fired early")
	default:
	}
	select {
	case got := <-t2.C():
		if want := c.Now().Add(-500 * time.Millisecond); !got.Equal(want) {
			t.Fatalf("t2 delivered %v, want %v", got, want)
		}
	default:
		t.Fatal("t2 did not fire")
	}
	if t1.Reset(time.Second) != true {
		t.Fatal("Reset of an armed timer reported inactive")
	}
	c.Advance(999 * time.Millisecond)
	if c.Pending() != 1 {
		t.Fatalf("pending = %d, want 1", c.Pending())
	}
	c.Advance(time.Millisecond)
	select {
	case <-t1.C():
	default:
		t.Fatal("t1 did not fire after Reset")
	}
	if t1.Stop() {
		t.Fatal("Stop of a fired timer reported active")
	}
}

func TestPipeDelivers(t *testing.T) {
	CheckGoroutines(t)
	p := NewPipe(PipeConfig{})
	defer p.A.Close()
	defer p.B.Close()
	if _, err := p.A.WriteTo([]byte("hello"), nil); err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 16)
	n, from, err := p.B.ReadFrom(buf)
	if err != nil || string(buf[:n]) != "hello" || from.String() != "a" {
		t.Fatalf("got %q from %v err %v, want hello from a", buf[:n], from, err)
	}
	p.B.SetReadDeadline(time.Now().Add(10 * time.Millisecond))
	if _, _, err := p.B.ReadFrom(buf); err == nil {
		t.Fatal("read on empty pipe did not time out")
	}
}

func TestPipeImpairment(t *testing.T) {
	p := NewPipe(PipeConfig{AtoB: Impairment{LossPercent: 10, DupPercent: 5, ReorderPercent: 5}, Seed: 1, Queue: 4096})
	defer p.A.Close()
	defer p.B.Close()
	const n = 2000
	for i := range n {
		p.A.WriteTo([]byte{byte(i >> 8), byte(i)}, nil)
	}
	got := len(p.B.in)
	dropped, dup := int(p.Stats.Dropped.Load()), int(p.Stats.Duplicated.Load())
	if dropped < n/20 || dropped > n/5 {
		t.Fatalf("dropped %d of %d, want about 10%%", dropped, n)
	}
	if dup == 0 || p.Stats.Reordered.Load() == 0 {
		t.Fatalf("dup=%d reordered=%d, want both > 0", dup, p.Stats.Reordered.Load())
	}
	// One reordered datagram may still be held back at the end.
	if want := n - dropped + dup; got != want && got != want-1 {
		t.Fatalf("delivered %d, want %d (or one less)", got, want)
	}
}

func TestPipeDeadlineWakesBlockedRead(t *testing.T) {
	CheckGoroutines(t)
	p := NewPipe(PipeConfig{})
	defer p.A.Close()
	defer p.B.Close()
	errc := make(chan error, 1)
	go func() {
		_, _, err := p.B.ReadFrom(make([]byte, 8))
		errc <- err
	}()
	time.Sleep(10 * time.Millisecond) // let the reader block without a deadline
	p.B.SetReadDeadline(time.Now().Add(-time.Second))
	select {
	case err := <-errc:
		if err == nil {
			t.Fatal("read returned no error after a past deadline was set")
		}
	case <-time.After(5 * time.Second):
		t.Fatal("blocked read did not wake when the deadline was set")
	}
}
