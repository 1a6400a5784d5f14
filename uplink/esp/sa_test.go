package esp

import (
	"bytes"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/fleetgate/fleetgate/internal/testenv"
)

func unhex(t testing.TB, s string) []byte {
	t.Helper()
	b, err := hex.DecodeString(s)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// allSuites are the suites tests iterate over, legacy ones included.
var allSuites = []Suite{
	{Cipher: CipherAESGCM16, KeyBits: 128},
	{Cipher: CipherAESGCM16, KeyBits: 256},
	{Cipher: CipherAESCBC, KeyBits: 128, Integ: IntegHMACSHA1_96},
	{Cipher: CipherAESCBC, KeyBits: 256, Integ: IntegHMACSHA1_96},
	{Cipher: CipherAESCBC, KeyBits: 128, Integ: IntegHMACSHA256_128},
	{Cipher: CipherAESCBC, KeyBits: 256, Integ: IntegHMACSHA256_128},
	{Cipher: CipherAESCBC, KeyBits: 256, Integ: IntegHMACSHA384_192},
	{Cipher: CipherAESCBC, KeyBits: 256, Integ: IntegHMACSHA512_256},
	{Cipher: Cipher3DES, KeyBits: 192, Integ: IntegHMACSHA1_96},
	{Cipher: CipherAESCBC, KeyBits: 128, Integ: IntegHMACMD5_96},
}

func testKeymat(s Suite, seed byte) []byte {
	k := make([]byte, s.KeymatLen())
	for i := range k {
		k[i] = seed + byte(i)*7
	}
	return k
}

// newPair returns an outbound and an inbound SA sharing keys.
func newPair(t testing.TB, s Suite, spi uint32, opt Options) (out, in *SA) {
	t.Helper()
	opt.AllowLegacy = true
	km := testKeymat(s, byte(spi))
	out, err := NewSA(s, spi, km, Outbound, opt)
	if err != nil {
		t.Fatal(err)
	}
	in, err = NewSA(s, spi, km, Inbound, opt)
	if err != nil {
		t.Fatal(err)
	}
	return out, in
}

func TestSealOpenAllSuites(t *testing.T) {
	for _, suite := range allSuites {
		for _, n := range []int{0, 1, 14, 15, 16, 17, 64, 1400} {
			t.Run(fmt.Sprintf("%s/%d", suite, n), func(t *testing.T) {
				out, in := newPair(t, suite, 0xc0ffee, Options{})
				payload := bytes.Repeat([]byte{0xab}, n)
				pkt, err := out.Seal(make([]byte, 0, 2048), payload, NextHeaderUDP)
				if err != nil {
					t.Fatal(err)
				}
				if got, want := len(pkt), n+out.Overhead(n); got != want {
					t.Fatalf("len = %d, want %d", got, want)
				}
				if (len(pkt)-HeaderLen-out.ivLen-out.icvLen)%out.align != 0 {
					t.Fatalf("ciphertext not aligned to %d", out.align)
				}
				got, nh, err := in.Open(pkt)
				if err != nil {
					t.Fatal(err)
				}
				if !bytes.Equal(got, payload) || nh != NextHeaderUDP {
					t.Fatalf("Open = %x/%d, want %x/%d", got, nh, payload, NextHeaderUDP)
				}
			})
		}
	}
}

// TestSealInPlace lays the payload out at PayloadOffset and checks that
// Seal neither copies nor allocates and that the result opens.
func TestSealInPlace(t *testing.T) {
	for _, suite := range allSuites {
		t.Run(suite.String(), func(t *testing.T) {
			out, in := newPair(t, suite, 9, Options{})
			buf := make([]byte, 2048)
			payload := buf[out.PayloadOffset() : out.PayloadOffset()+100]
			for i := range payload {
				payload[i] = byte(i)
			}
			pkt, err := out.Seal(buf[:0], payload, NextHeaderUDP)
			if err != nil {
				t.Fatal(err)
			}
			if &pkt[0] != &buf[0] {
				t.Fatal("Seal reallocated although the buffer was large enough")
			}
			got, _, err := in.Open(pkt)
			if err != nil {
				t.Fatal(err)
			}
			for i := range got {
				if got[i] != byte(i) {
					t.Fatalf("byte %d = %d after round trip", i, got[i])
				}
			}
		})
	}
}

func TestZeroAllocs(t *testing.T) {
	testenv.SkipUnderRace(t, "allocation counts are not meaningful under -race (sync.Pool drops items); CI's benchmarks and the non-race run check them")
	for _, suite := range allSuites {
		t.Run(suite.String(), func(t *testing.T) {
			out, in := newPair(t, suite, 5, Options{})
			buf := make([]byte, 2048)
			payload := make([]byte, 512)
			// Warm the scratch pools.
			pkt, _ := out.Seal(buf[:0], payload, NextHeaderUDP)
			in.Open(pkt)
			allocs := testing.AllocsPerRun(100, func() {
				pkt, err := out.Seal(buf[:0], payload, NextHeaderUDP)
				if err != nil {
					t.Fatal(err)
				}
				if _, _, err := in.Open(pkt); err != nil {
					t.Fatal(err)
				}
			})
			if allocs != 0 {
				t.Fatalf("Seal+Open allocated %.1f times per packet, want 0", allocs)
			}
		})
	}
}

func TestOpenRejects(t *testing.T) {
	suites := []Suite{allSuites[0], allSuites[4]}
	for _, suite := range suites {
		t.Run(suite.String(), func(t *testing.T) {
			out, in := newPair(t, suite, 77, Options{})
			seal := func() []byte {
				p, err := out.Seal(nil, []byte("hello l2tp"), NextHeaderUDP)
				if err != nil {
					t.Fatal(err)
				}
				return p
			}
			p1 := seal()
			if _, _, err := in.Open(append([]byte(nil), p1...)); err != nil {
				t.Fatal(err)
			}
			if _, _, err := in.Open(append([]byte(nil), p1...)); !errors.Is(err, ErrReplay) {
				t.Fatalf("replay: err = %v, want ErrReplay", err)
			}
			if got := in.Stats().ReplayDrops.Load(); got != 1 {
				t.Fatalf("ReplayDrops = %d, want 1", got)
			}
			for i := HeaderLen; i < len(p1); i += 5 {
				p := seal()
				p[i] ^= 0x01
				if _, _, err := in.Open(p); !errors.Is(err, ErrAuth) {
					t.Fatalf("flip byte %d: err = %v, want ErrAuth", i, err)
				}
			}
			// A packet whose sequence number was tampered with fails
			// authentication and must not move the window.
			p := seal()
			binary.BigEndian.PutUint32(p[4:], 1000)
			if _, _, err := in.Open(p); !errors.Is(err, ErrAuth) {
				t.Fatalf("seq tamper: err = %v, want ErrAuth", err)
			}
			if got := in.Seq(); got != 1 {
				t.Fatalf("window moved to %d by a forged packet, want 1", got)
			}
			if _, _, err := in.Open(p1[:HeaderLen+3]); !errors.Is(err, ErrShort) {
				t.Fatalf("short: err = %v, want ErrShort", err)
			}
			q := seal()
			binary.BigEndian.PutUint32(q, 78)
			if _, _, err := in.Open(q); !errors.Is(err, ErrSPI) {
				t.Fatalf("spi: err = %v, want ErrSPI", err)
			}
			if _, err := in.Seal(nil, nil, 17); !errors.Is(err, ErrDirection) {
				t.Fatalf("Seal on inbound: err = %v, want ErrDirection", err)
			}
		})
	}
}

// TestBadPaddingAndDummy seals packets with a hand-made trailer.
func TestBadPaddingAndDummy(t *testing.T) {
	suite := allSuites[0]
	out, in := newPair(t, suite, 3, Options{})
	s := out.scratch.Get().(*scratch)
	// mk seals a body that already carries its (possibly bad) trailer.
	mk := func(body []byte, seq uint32) []byte {
		pkt := make([]byte, HeaderLen+gcmIVLen, 64)
		Header(pkt).Encode(&HeaderFields{SPI: 3, Seq: seq})
		binary.BigEndian.PutUint64(pkt[HeaderLen:], uint64(seq))
		copy(s.nonce[:4], out.salt[:])
		copy(s.nonce[4:], pkt[HeaderLen:])
		return out.aead.Seal(pkt, s.nonce[:], body, pkt[:HeaderLen])
	}
	if _, _, err := in.Open(mk([]byte{0, 0, 9, 17}, 1)); !errors.Is(err, ErrPadding) {
		t.Fatalf("pad length 9 in a 4-byte body: err = %v, want ErrPadding", err)
	}
	if _, _, err := in.Open(mk([]byte{'a', 7, 1, 17}, 2)); !errors.Is(err, ErrPadding) {
		t.Fatalf("pad byte 7 where 1 is due: err = %v, want ErrPadding", err)
	}
	if _, _, err := in.Open(mk([]byte{'a', 'b', 0, NextHeaderNone}, 3)); !errors.Is(err, ErrDummy) {
		t.Fatalf("dummy: err = %v, want ErrDummy", err)
	}
	if got := in.Stats().BadPadding.Load(); got != 2 {
		t.Fatalf("BadPadding = %d, want 2", got)
	}
	if got := in.Stats().DummyDropped.Load(); got != 1 {
		t.Fatalf("DummyDropped = %d, want 1", got)
	}
	if _, _, err := in.Open(mk([]byte{'a', 'b', 0, 17}, 4)); err != nil {
		t.Fatalf("valid hand-made packet: %v", err)
	}
}

func TestSeqOverflowAndLimits(t *testing.T) {
	suite := allSuites[2]
	soft := 0
	out, _ := newPair(t, suite, 1, Options{OnSoftLimit: func(*SA) { soft++ }})
	out.seq.Store(MaxSeq - 1)
	if _, err := out.Seal(nil, []byte("x"), 17); err != nil {
		t.Fatalf("seal of MaxSeq: %v", err)
	}
	if soft != 1 {
		t.Fatalf("soft-limit callbacks = %d, want 1 (within SeqSoftMargin)", soft)
	}
	if _, err := out.Seal(nil, []byte("x"), 17); !errors.Is(err, ErrSeqOverflow) {
		t.Fatalf("seal past MaxSeq: err = %v, want ErrSeqOverflow", err)
	}
	if soft != 1 || out.Stats().SeqOverflows.Load() != 1 {
		t.Fatalf("soft = %d, overflows = %d; want 1, 1", soft, out.Stats().SeqOverflows.Load())
	}

	soft = 0
	lim := Limits{SoftPackets: 3, HardPackets: 5, SoftBytes: 1 << 20, HardBytes: 1 << 21}
	out, in := newPair(t, suite, 2, Options{Limits: lim, OnSoftLimit: func(*SA) { soft++ }})
	for i := 1; i <= 6; i++ {
		pkt, err := out.Seal(nil, []byte("payload"), 17)
		if i <= 5 && err != nil {
			t.Fatalf("packet %d: %v", i, err)
		}
		if i == 6 {
			if !errors.Is(err, ErrHardLimit) {
				t.Fatalf("packet 6: err = %v, want ErrHardLimit", err)
			}
			break
		}
		if _, _, err := in.Open(pkt); err != nil {
			t.Fatalf("open %d: %v", i, err)
		}
		if wantSoft := i >= 3; out.Expiring() != wantSoft || in.Expiring() != wantSoft {
			t.Fatalf("after %d packets Expiring = %v/%v, want %v", i, out.Expiring(), in.Expiring(), wantSoft)
		}
	}
	if soft != 2 { // once per SA
		t.Fatalf("soft-limit callbacks = %d, want 2", soft)
	}

	out, _ = newPair(t, suite, 4, Options{Limits: Limits{HardBytes: 100}})
	if _, err := out.Seal(nil, make([]byte, 101), 17); !errors.Is(err, ErrHardLimit) {
		t.Fatalf("byte limit: err = %v, want ErrHardLimit", err)
	}
}

func TestNewSAErrors(t *testing.T) {
	gcm := Suite{Cipher: CipherAESGCM16, KeyBits: 128}
	if _, err := NewSA(gcm, 1, make([]byte, 19), Outbound, Options{}); !errors.Is(err, ErrKeymat) {
		t.Fatalf("short keymat: err = %v, want ErrKeymat", err)
	}
	des := Suite{Cipher: Cipher3DES, KeyBits: 192, Integ: IntegHMACSHA1_96}
	if _, err := NewSA(des, 1, make([]byte, des.KeymatLen()), Outbound, Options{}); !errors.Is(err, ErrLegacy) {
		t.Fatalf("3DES without legacy: err = %v, want ErrLegacy", err)
	}
	md5 := Suite{Cipher: CipherAESCBC, KeyBits: 128, Integ: IntegHMACMD5_96}
	if _, err := NewSA(md5, 1, make([]byte, md5.KeymatLen()), Outbound, Options{}); !errors.Is(err, ErrLegacy) {
		t.Fatalf("MD5 without legacy: err = %v, want ErrLegacy", err)
	}
	if _, err := NewSA(Suite{Cipher: CipherAESCBC, KeyBits: 192, Integ: IntegHMACSHA1_96}, 1, nil, Outbound, Options{}); err == nil {
		t.Fatal("AES-192 accepted, want error")
	}
	if _, err := NewSA(gcm, 1, make([]byte, 20), 0, Options{}); err == nil {
		t.Fatal("direction 0 accepted, want error")
	}
}

// TestCBCIVsDiffer checks that consecutive CBC IVs are distinct and not a
// plain counter.
func TestCBCIVsDiffer(t *testing.T) {
	out, _ := newPair(t, allSuites[4], 1, Options{})
	seen := map[string]bool{}
	for i := 0; i < 1000; i++ {
		p, err := out.Seal(nil, []byte("x"), 17)
		if err != nil {
			t.Fatal(err)
		}
		iv := string(p[HeaderLen : HeaderLen+16])
		if seen[iv] {
			t.Fatalf("IV repeated after %d packets", i)
		}
		seen[iv] = true
	}
}

func TestHeader(t *testing.T) {
	h := Header(make([]byte, 12))
	h.Encode(&HeaderFields{SPI: 0xdeadbeef, Seq: 42})
	if !h.IsValid() || h.SPI() != 0xdeadbeef || h.Seq() != 42 || len(h.Payload()) != 4 {
		t.Fatalf("header round trip: valid=%v spi=%x seq=%d", h.IsValid(), h.SPI(), h.Seq())
	}
	if Header(make([]byte, 7)).IsValid() {
		t.Fatal("7-byte header reported valid")
	}
}

func TestLimitsFromKB(t *testing.T) {
	if got := LimitsFromKB(0); got != (Limits{}) {
		t.Fatalf("LimitsFromKB(0) = %+v, want zero", got)
	}
	got := LimitsFromKB(1000)
	if got.HardBytes != 1024000 || got.SoftBytes != 921600 || got.SoftPackets != 0 || got.HardPackets != 0 {
		t.Fatalf("LimitsFromKB(1000) = %+v", got)
	}
}

func TestNewSAPair(t *testing.T) {
	s := allSuites[0]
	kIn, kOut := testKeymat(s, 1), testKeymat(s, 2)
	in, out, err := NewSAPair(s, 10, kIn, 20, kOut, Options{})
	if err != nil {
		t.Fatal(err)
	}
	if in.SPI() != 10 || in.Direction() != Inbound || out.SPI() != 20 || out.Direction() != Outbound {
		t.Fatalf("got in %d/%v out %d/%v", in.SPI(), in.Direction(), out.SPI(), out.Direction())
	}
	// The peer's outbound SA with kIn is what our inbound SA opens.
	peerOut, err := NewSA(s, 10, kIn, Outbound, Options{})
	if err != nil {
		t.Fatal(err)
	}
	p, _ := peerOut.Seal(nil, []byte("x"), 17)
	if _, _, err := in.Open(p); err != nil {
		t.Fatalf("inbound SA cannot open the peer's packet: %v", err)
	}
	if _, _, err := NewSAPair(s, 1, kIn[:3], 2, kOut, Options{}); err == nil {
		t.Fatal("short inbound key accepted")
	}
	if _, _, err := NewSAPair(s, 1, kIn, 2, kOut[:3], Options{}); err == nil {
		t.Fatal("short outbound key accepted")
	}
}

// TestConcurrentSealOpen seals from several goroutines on one SA and opens
// on several goroutines (run it with -race): every packet opens once, the
// sequence numbers are all distinct.
func TestConcurrentSealOpen(t *testing.T) {
	for _, suite := range []Suite{allSuites[0], allSuites[4]} {
		t.Run(suite.String(), func(t *testing.T) {
			out, in := newPair(t, suite, 0x77, Options{})
			const workers, per = 4, 100
			pkts := make(chan []byte, workers*per)
			errs := make(chan error, 2*workers)
			var wg sync.WaitGroup
			for w := 0; w < workers; w++ {
				wg.Add(1)
				go func() {
					defer wg.Done()
					for i := 0; i < per; i++ {
						p, err := out.Seal(nil, []byte("concurrent"), NextHeaderUDP)
						if err != nil {
							errs <- err
							return
						}
						pkts <- p
					}
				}()
			}
			wg.Wait()
			close(pkts)
			var opened atomic.Int64
			seqs := sync.Map{}
			for w := 0; w < workers; w++ {
				wg.Add(1)
				go func() {
					defer wg.Done()
					for p := range pkts {
						if _, dup := seqs.LoadOrStore(Header(p).Seq(), true); dup {
							errs <- fmt.Errorf("sequence number %d used twice", Header(p).Seq())
							return
						}
						if _, _, err := in.Open(p); err != nil {
							errs <- err
							return
						}
						opened.Add(1)
					}
				}()
			}
			wg.Wait()
			close(errs)
			for err := range errs {
				t.Fatal(err)
			}
			if got := opened.Load(); got != workers*per {
				t.Fatalf("opened %d packets, want %d", got, workers*per)
			}
		})
	}
}
