package esp

import (
	"crypto/aes"
	"crypto/cipher"
	"fmt"
	"net/netip"
	"syscall"
	"testing"
	"time"
)

// cpuTime is the process's user+system CPU time: on a shared machine CPU
// per packet is steadier than wall time per packet.
func cpuTime() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// BenchmarkSealOpen measures one Seal plus one Open per iteration for each
// suite and size, next to BenchmarkBareGCM (the AES-GCM primitive alone)
// so the ESP overhead can be read off one run.
func BenchmarkSealOpen(b *testing.B) {
	for _, suite := range allSuites {
		for _, n := range []int{64, 512, 1400} {
			b.Run(fmt.Sprintf("%s/%d", suite, n), func(b *testing.B) {
				out, in := newPair(b, suite, 1, Options{})
				buf := make([]byte, 2048)
				payload := make([]byte, n)
				b.SetBytes(int64(n))
				b.ReportAllocs()
				b.ResetTimer()
				for i := 0; i < b.N; i++ {
					pkt, err := out.Seal(buf[:0], payload, NextHeaderUDP)
					if err != nil {
						b.Fatal(err)
					}
					if _, _, err := in.Open(pkt); err != nil {
						b.Fatal(err)
					}
				}
			})
		}
	}
}

// BenchmarkBareGCM is the floor: AES-128-GCM Seal and Open of the same
// sizes, no ESP framing, replay window or counters.
func BenchmarkBareGCM(b *testing.B) {
	for _, bits := range []int{128, 256} {
		for _, n := range []int{64, 512, 1400} {
			b.Run(fmt.Sprintf("aes%d/%d", bits, n), func(b *testing.B) {
				blk, _ := aes.NewCipher(make([]byte, bits/8))
				aead, _ := cipher.NewGCM(blk)
				nonce := make([]byte, 12)
				aad := make([]byte, 8)
				buf := make([]byte, 2048)
				payload := make([]byte, n)
				b.SetBytes(int64(n))
				b.ReportAllocs()
				b.ResetTimer()
				for i := 0; i < b.N; i++ {
					ct := aead.Seal(buf[:0], nonce, payload, aad)
					if _, err := aead.Open(ct[:0], nonce, ct, aad); err != nil {
						b.Fatal(err)
					}
				}
			})
		}
	}
}

// BenchmarkTransportL2TP sends 1400-byte L2TP payloads from one transport
// to another over loopback UDP and reads them: the whole per-packet path
// (UDP header, Seal, sendmsg, recvmsg, classify, SPI lookup, Open,
// selectors, queue, copy to the reader).
func BenchmarkTransportL2TP(b *testing.B) {
	for _, single := range []bool{false, true} {
		b.Run(ioName(single), func(b *testing.B) { benchTransportL2TP(b, single) })
	}
}

func ioName(single bool) string {
	if single {
		return "single"
	}
	return "batch"
}

func benchTransportL2TP(b *testing.B, single bool) {
	mk := func() *Transport {
		tr, err := NewTransport(TransportConfig{NATTAddr: "127.0.0.1:0", KeepaliveInterval: -1, SingleIO: single,
			IKE: IKEHandlerFunc(func([]byte, netip.AddrPort, netip.AddrPort, bool) {})})
		if err != nil {
			b.Fatal(err)
		}
		b.Cleanup(func() { tr.Close() })
		return tr
	}
	a, c := mk(), mk()
	aOut, cIn := newPair(b, Suite{Cipher: CipherAESGCM16, KeyBits: 128}, 1, Options{})
	cOut, aIn := newPair(b, Suite{Cipher: CipherAESGCM16, KeyBits: 128}, 2, Options{})
	pa, err := a.AddSA(aIn, aOut, PeerConfig{Remote: c.NATTAddr()})
	if err != nil {
		b.Fatal(err)
	}
	if _, err := c.AddSA(cIn, cOut, PeerConfig{Remote: a.NATTAddr()}); err != nil {
		b.Fatal(err)
	}
	payload := make([]byte, 1400)
	buf := make([]byte, 2048)
	to := pa.Addr(0)
	b.SetBytes(1400)
	b.ReportAllocs()
	b.ResetTimer()
	cpu0 := cpuTime()
	for i := 0; i < b.N; i++ {
		if _, err := a.L2TP().WriteTo(payload, to); err != nil {
			b.Fatal(err)
		}
		if _, _, err := c.L2TP().ReadFrom(buf); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportMetric(float64(cpuTime()-cpu0)/float64(b.N), "cpu-ns/op")
	b.ReportMetric(float64(a.Stats().SendBatches.Load())/float64(b.N), "batches/op")
}

// BenchmarkTransportStream measures one-way streaming: a goroutine writes
// 1400-byte L2TP payloads through transport A while the benchmark reads
// them from transport B (packets lost to a full socket buffer are not
// retried; the loss rate is reported).
func BenchmarkTransportStream(b *testing.B) {
	for _, single := range []bool{false, true} {
		b.Run(ioName(single), func(b *testing.B) { benchTransportStream(b, single) })
	}
}

func benchTransportStream(b *testing.B, single bool) {
	mk := func() *Transport {
		tr, err := NewTransport(TransportConfig{NATTAddr: "127.0.0.1:0", KeepaliveInterval: -1, ReadQueue: 4096, SingleIO: single,
			IKE: IKEHandlerFunc(func([]byte, netip.AddrPort, netip.AddrPort, bool) {})})
		if err != nil {
			b.Fatal(err)
		}
		b.Cleanup(func() { tr.Close() })
		return tr
	}
	a, c := mk(), mk()
	aOut, cIn := newPair(b, Suite{Cipher: CipherAESGCM16, KeyBits: 128}, 1, Options{})
	cOut, aIn := newPair(b, Suite{Cipher: CipherAESGCM16, KeyBits: 128}, 2, Options{})
	pa, err := a.AddSA(aIn, aOut, PeerConfig{Remote: c.NATTAddr()})
	if err != nil {
		b.Fatal(err)
	}
	if _, err := c.AddSA(cIn, cOut, PeerConfig{Remote: a.NATTAddr()}); err != nil {
		b.Fatal(err)
	}
	payload := make([]byte, 1400)
	to := pa.Addr(0)
	b.SetBytes(1400)
	b.ReportAllocs()
	b.ResetTimer()
	cpu0 := cpuTime()
	done := make(chan struct{})
	go func() {
		defer close(done)
		for i := 0; i < b.N; i++ {
			a.L2TP().WriteTo(payload, to)
		}
	}()
	buf := make([]byte, 2048)
	got := 0
	for got < b.N {
		c.L2TP().SetReadDeadline(time.Now().Add(200 * time.Millisecond))
		if _, _, err := c.L2TP().ReadFrom(buf); err != nil {
			break // the rest was dropped
		}
		got++
	}
	<-done
	b.ReportMetric(100*float64(b.N-got)/float64(b.N), "%lost")
	if got > 0 {
		b.ReportMetric(float64(cpuTime()-cpu0)/float64(got), "cpu-ns/pkt")
	}
	if n := a.Stats().SendBatches.Load(); n > 0 {
		b.ReportMetric(float64(a.Stats().ESPOut.Load())/float64(n), "sent/batch")
	}
	if n := c.Stats().Batches.Load(); n > 0 {
		b.ReportMetric(float64(c.Stats().ESPIn.Load())/float64(n), "pkts/batch")
	}
}
