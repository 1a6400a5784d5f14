package esp

import (
	"crypto/aes"
	"crypto/cipher"
	"fmt"
	"testing"
)

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
