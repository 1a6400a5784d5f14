package esp

import (
	"crypto/aes"
	"crypto/cipher"
	"crypto/des"
	"crypto/hmac"
	"crypto/md5"
	"crypto/rand"
	"crypto/sha1"
	"crypto/sha256"
	"crypto/sha512"
	"encoding/binary"
	"fmt"
	"hash"
	"sync"
	"sync/atomic"

	"github.com/fleetgate/fleetgate/uplink/replay"
)

// Direction says whether an SA protects traffic we send or traffic we
// receive. An IPsec SA is unidirectional (RFC 4301 §4.1); Quick Mode makes
// one of each.
type Direction uint8

const (
	// Inbound SAs open packets the peer sealed.
	Inbound Direction = iota + 1
	// Outbound SAs seal packets for the peer.
	Outbound
)

// String names the direction.
func (d Direction) String() string {
	switch d {
	case Inbound:
		return "inbound"
	case Outbound:
		return "outbound"
	}
	return fmt.Sprintf("direction(%d)", uint8(d))
}

// Limits is an SA's lifetime in traffic (IKEv1 lifetime in kilobytes,
// RFC 2407 §4.5, plus a packet count). Zero means no limit of that kind.
// Reaching a soft limit calls Options.OnSoftLimit once (start a rekey);
// reaching a hard limit makes Seal and Open refuse packets.
type Limits struct {
	SoftPackets, HardPackets uint64
	SoftBytes, HardBytes     uint64
}

// LimitsFromKB converts a negotiated IKEv1 lifetime in kilobytes (RFC 2407
// §4.5, SA Life Type "kilobytes") into byte limits: hard at the lifetime,
// soft at 90 % of it so that Quick Mode can finish before traffic stops.
// Zero means no byte lifetime.
func LimitsFromKB(kb uint64) Limits {
	if kb == 0 {
		return Limits{}
	}
	hard := kb * 1024
	return Limits{SoftBytes: hard - hard/10, HardBytes: hard}
}

// Options are the optional parts of an SA.
type Options struct {
	// AllowLegacy permits 3DES and HMAC-MD5, which are off by default.
	AllowLegacy bool
	// Limits are the soft and hard lifetimes in traffic.
	Limits Limits
	// OnSoftLimit is called once, from the data path, when the SA reaches a
	// soft limit or comes within SeqSoftMargin of MaxSeq. It must not block:
	// typically it sends an event to the IKE SA's owner loop.
	OnSoftLimit func(*SA)
	// Stats, if set, is where the SA counts; several SAs (all of one
	// transport) may share one. If nil the SA has its own.
	Stats *Stats
}

// SA is one direction of an ESP security association in transport mode
// (RFC 4303). Its keys are fixed at creation and never change, so Seal and
// Open take no control-plane lock: rekeying makes a new SA (cf. wireguard-go
// keypairs). Seal and Open are safe for concurrent use and do not allocate
// when the destination buffer is large enough.
type SA struct {
	suite  Suite
	spi    uint32
	dir    Direction
	ivLen  int
	icvLen int
	align  int

	aead  cipher.AEAD // AES-GCM
	salt  [gcmSaltLen]byte
	block cipher.Block // AES-CBC / 3DES
	// ivGen encrypts a counter under a random key of its own to make CBC
	// IVs: unique and unpredictable without a syscall per packet (NIST SP
	// 800-38A Appendix C, first method, with an independent key).
	ivGen   cipher.Block
	newHash func() hash.Hash
	authKey []byte
	scratch sync.Pool // *scratch: per-call MAC state and buffers

	seq     atomic.Uint64 // outbound: last sequence number used
	packets atomic.Uint64 // inbound: packets accepted
	bytes   atomic.Uint64 // payload bytes sealed or opened
	soft    atomic.Bool   // soft limit signalled
	limits  Limits
	onSoft  func(*SA)
	stats   *Stats

	// replayMu serialises the inbound window. It is a data-path lock held
	// for a few word operations, never a control-plane one.
	replayMu sync.Mutex
	window   replay.Filter
}

// scratch is the per-call state that cannot live on the stack because it is
// handed to interface methods (which makes it escape).
type scratch struct {
	mac   hash.Hash
	sum   [64]byte
	nonce [gcmNonceLen]byte
	ctr   [maxIVLen]byte
	iv    [maxIVLen]byte
	enc   cbcMode
	dec   cbcMode
}

// cbcMode is a CBC BlockMode whose IV can be changed without allocating a
// new one; the standard library's CBC encrypters and decrypters have SetIV.
type cbcMode interface {
	cipher.BlockMode
	SetIV([]byte)
}

// NewSA makes one direction of an SA from its Quick Mode keying material
// (RFC 2409 §5.5): encryption key (with the 4-byte salt at its end for
// AES-GCM, RFC 4106 §8.1) followed by the integrity key.
func NewSA(suite Suite, spi uint32, keymat []byte, dir Direction, opt Options) (*SA, error) {
	if err := suite.Validate(); err != nil {
		return nil, err
	}
	if suite.Legacy() && !opt.AllowLegacy {
		return nil, fmt.Errorf("%w: %s", ErrLegacy, suite)
	}
	if len(keymat) != suite.KeymatLen() {
		return nil, fmt.Errorf("%w: got %d bytes, %s needs %d", ErrKeymat, len(keymat), suite, suite.KeymatLen())
	}
	if dir != Inbound && dir != Outbound {
		return nil, fmt.Errorf("esp: invalid direction %d", dir)
	}
	sa := &SA{suite: suite, spi: spi, dir: dir, icvLen: suite.ICVLen(), limits: opt.Limits, onSoft: opt.OnSoftLimit, stats: opt.Stats}
	if sa.stats == nil {
		sa.stats = new(Stats)
	}
	encKey := keymat[:suite.EncKeyLen()]
	switch suite.Cipher {
	case CipherAESGCM16:
		key := encKey[:len(encKey)-gcmSaltLen]
		copy(sa.salt[:], encKey[len(key):])
		b, err := aes.NewCipher(key)
		if err != nil {
			return nil, fmt.Errorf("esp: %w", err)
		}
		if sa.aead, err = cipher.NewGCM(b); err != nil {
			return nil, fmt.Errorf("esp: %w", err)
		}
		sa.ivLen, sa.align = gcmIVLen, gcmAlign
	case CipherAESCBC, Cipher3DES:
		var err error
		if suite.Cipher == CipherAESCBC {
			sa.block, err = aes.NewCipher(encKey)
		} else {
			sa.block, err = des.NewTripleDESCipher(encKey)
		}
		if err != nil {
			return nil, fmt.Errorf("esp: %w", err)
		}
		sa.ivLen, sa.align = sa.block.BlockSize(), sa.block.BlockSize()
		var ivKey [16]byte
		if _, err := rand.Read(ivKey[:]); err != nil {
			return nil, fmt.Errorf("esp: IV key: %w", err)
		}
		if sa.ivGen, err = aes.NewCipher(ivKey[:]); err != nil {
			return nil, fmt.Errorf("esp: %w", err)
		}
		sa.authKey = append([]byte(nil), keymat[suite.EncKeyLen():]...)
		switch suite.Integ {
		case IntegHMACMD5_96:
			sa.newHash = md5.New
		case IntegHMACSHA1_96:
			sa.newHash = sha1.New
		case IntegHMACSHA256_128:
			sa.newHash = sha256.New
		case IntegHMACSHA384_192:
			sa.newHash = sha512.New384
		case IntegHMACSHA512_256:
			sa.newHash = sha512.New
		}
	}
	sa.scratch.New = sa.newScratch
	return sa, nil
}

// NewSAPair makes both directions of a Quick Mode result: inbound on inSPI
// (the SPI we chose, which the peer puts on packets to us) with inKey, and
// outbound on outSPI with outKey. Both share opt.
func NewSAPair(suite Suite, inSPI uint32, inKey []byte, outSPI uint32, outKey []byte, opt Options) (in, out *SA, err error) {
	if in, err = NewSA(suite, inSPI, inKey, Inbound, opt); err != nil {
		return nil, nil, err
	}
	if out, err = NewSA(suite, outSPI, outKey, Outbound, opt); err != nil {
		return nil, nil, err
	}
	return in, out, nil
}

func (sa *SA) newScratch() any {
	s := new(scratch)
	if sa.newHash != nil {
		s.mac = hmac.New(sa.newHash, sa.authKey)
		s.enc = cipher.NewCBCEncrypter(sa.block, s.iv[:sa.ivLen]).(cbcMode)
		s.dec = cipher.NewCBCDecrypter(sa.block, s.iv[:sa.ivLen]).(cbcMode)
	}
	return s
}

// SPI returns the SA's Security Parameters Index.
func (sa *SA) SPI() uint32 { return sa.spi }

// Suite returns the SA's transforms.
func (sa *SA) Suite() Suite { return sa.suite }

// Direction returns whether the SA seals or opens.
func (sa *SA) Direction() Direction { return sa.dir }

// Stats returns the counters the SA increments.
func (sa *SA) Stats() *Stats { return sa.stats }

// Seq returns the last sequence number sent (outbound) or the highest
// received (inbound).
func (sa *SA) Seq() uint64 {
	if sa.dir == Outbound {
		return sa.seq.Load()
	}
	sa.replayMu.Lock()
	defer sa.replayMu.Unlock()
	return sa.window.Last()
}

// Overhead returns how many bytes ESP adds around a payload of n bytes:
// header, IV, padding, trailer and ICV.
func (sa *SA) Overhead(n int) int {
	return HeaderLen + sa.ivLen + sa.paddedLen(n) - n + sa.icvLen
}

// PayloadOffset is where the payload starts in a sealed packet: callers
// that build the payload at dst[len(dst)+PayloadOffset():] let Seal encrypt
// it in place without a copy.
func (sa *SA) PayloadOffset() int { return HeaderLen + sa.ivLen }

func (sa *SA) paddedLen(n int) int {
	return (n + TrailerLen + sa.align - 1) / sa.align * sa.align
}

// checkLimits counts n bytes (and one packet, whose number is pkts) against
// the lifetimes; it reports false when the hard limit is reached.
func (sa *SA) checkLimits(pkts uint64, n int) bool {
	b := sa.bytes.Add(uint64(n))
	l := &sa.limits
	if (l.HardPackets != 0 && pkts > l.HardPackets) || (l.HardBytes != 0 && b > l.HardBytes) {
		sa.stats.LimitDrops.Add(1)
		return false
	}
	if (l.SoftPackets != 0 && pkts >= l.SoftPackets) || (l.SoftBytes != 0 && b >= l.SoftBytes) ||
		(sa.dir == Outbound && pkts >= MaxSeq-SeqSoftMargin) {
		sa.signalSoft()
	}
	return true
}

func (sa *SA) signalSoft() {
	if sa.soft.CompareAndSwap(false, true) {
		sa.stats.SoftLimits.Add(1)
		if sa.onSoft != nil {
			sa.onSoft(sa)
		}
	}
}

// Expiring reports whether the SA has reached a soft limit.
func (sa *SA) Expiring() bool { return sa.soft.Load() }

// Seal appends to dst an ESP packet (RFC 4303 §3.3) carrying payload with
// the given Next Header, and returns the extended slice. It does not
// allocate when cap(dst)-len(dst) >= len(payload)+Overhead(len(payload)).
// payload may sit at dst[len(dst)+PayloadOffset():], in which case it is
// encrypted in place; any other overlap with the output is not allowed.
func (sa *SA) Seal(dst, payload []byte, nextHeader byte) ([]byte, error) {
	if sa.dir != Outbound {
		return dst, ErrDirection
	}
	seq := sa.seq.Add(1)
	if seq > MaxSeq {
		sa.stats.SeqOverflows.Add(1)
		sa.signalSoft()
		return dst, ErrSeqOverflow
	}
	if !sa.checkLimits(seq, len(payload)) {
		return dst, ErrHardLimit
	}
	s := sa.scratch.Get().(*scratch)
	defer sa.scratch.Put(s)
	if sa.aead != nil {
		// RFC 4106 §3.1: the IV must not repeat for a key; the sequence
		// number never does within an SA.
		binary.BigEndian.PutUint64(s.iv[:], seq)
	} else {
		binary.BigEndian.PutUint64(s.ctr[8:], seq)
		sa.ivGen.Encrypt(s.iv[:], s.ctr[:])
	}
	out, err := sa.seal(s, dst, payload, nextHeader, uint32(seq), s.iv[:sa.ivLen])
	if err == nil {
		sa.stats.PacketsOut.Add(1)
		sa.stats.BytesOut.Add(uint64(len(payload)))
	}
	return out, err
}

// seal builds and protects the packet with an explicit sequence number and
// IV (known-answer tests call it directly).
func (sa *SA) seal(s *scratch, dst, payload []byte, nh byte, seq uint32, iv []byte) ([]byte, error) {
	plen := len(payload)
	if plen > 1<<16 {
		return dst, ErrTooBig
	}
	padded := sa.paddedLen(plen)
	n := len(dst)
	total := HeaderLen + sa.ivLen + padded + sa.icvLen
	out := dst
	if cap(out)-n < total {
		out = make([]byte, n, n+total)
		copy(out, dst)
	}
	out = out[:n+total]
	bodyOff := n + HeaderLen + sa.ivLen
	body := out[bodyOff : bodyOff+padded]
	copy(body, payload) // a no-op move when payload is already in place
	padLen := padded - plen - TrailerLen
	for i := 0; i < padLen; i++ {
		body[plen+i] = byte(i + 1) // RFC 4303 §2.4 default padding
	}
	body[padded-2] = byte(padLen)
	body[padded-1] = nh
	Header(out[n:]).Encode(&HeaderFields{SPI: sa.spi, Seq: seq})
	copy(out[n+HeaderLen:bodyOff], iv)
	if sa.aead != nil {
		copy(s.nonce[:gcmSaltLen], sa.salt[:])
		copy(s.nonce[gcmSaltLen:], iv)
		// RFC 4106 §5: AAD is SPI || Sequence Number (no ESN).
		sa.aead.Seal(body[:0], s.nonce[:], body, out[n:n+HeaderLen])
		return out, nil
	}
	s.enc.SetIV(iv)
	s.enc.CryptBlocks(body, body)
	// RFC 4303 §3.3.4: the ICV covers header, IV and ciphertext.
	end := len(out) - sa.icvLen
	s.mac.Reset()
	s.mac.Write(out[n:end])
	sum := s.mac.Sum(s.sum[:0])
	copy(out[end:], sum[:sa.icvLen])
	return out, nil
}

// Open verifies and decrypts an ESP packet in place (RFC 4303 §3.4) and
// returns the payload (aliasing pkt) and its Next Header. The anti-replay
// window is checked before and updated after the integrity check. It never
// allocates.
func (sa *SA) Open(pkt []byte) (payload []byte, nextHeader byte, err error) {
	payload, nextHeader, _, err = sa.open(pkt)
	return payload, nextHeader, err
}

// open is Open that also reports whether the packet carried the highest
// sequence number seen so far (the transport only follows a peer's address
// change on such packets, so a delayed copy cannot redirect traffic).
func (sa *SA) open(pkt []byte) (payload []byte, nextHeader byte, newest bool, err error) {
	if sa.dir != Inbound {
		return nil, 0, false, ErrDirection
	}
	if len(pkt) < HeaderLen+sa.ivLen+sa.align+sa.icvLen {
		sa.stats.Malformed.Add(1)
		return nil, 0, false, ErrShort
	}
	h := Header(pkt)
	if h.SPI() != sa.spi {
		sa.stats.Malformed.Add(1)
		return nil, 0, false, ErrSPI
	}
	seq := uint64(h.Seq())
	sa.replayMu.Lock()
	fresh := sa.window.Check(seq)
	sa.replayMu.Unlock()
	if !fresh {
		sa.stats.ReplayDrops.Add(1)
		return nil, 0, false, ErrReplay
	}
	bodyOff := HeaderLen + sa.ivLen
	end := len(pkt) - sa.icvLen
	body := pkt[bodyOff:end]
	if len(body)%sa.align != 0 {
		sa.stats.Malformed.Add(1)
		return nil, 0, false, ErrMalformed
	}
	s := sa.scratch.Get().(*scratch)
	defer sa.scratch.Put(s)
	if sa.aead != nil {
		copy(s.nonce[:gcmSaltLen], sa.salt[:])
		copy(s.nonce[gcmSaltLen:], pkt[HeaderLen:bodyOff])
		if _, err := sa.aead.Open(body[:0], s.nonce[:], pkt[bodyOff:], pkt[:HeaderLen]); err != nil {
			sa.stats.AuthFailures.Add(1)
			return nil, 0, false, ErrAuth
		}
	} else {
		s.mac.Reset()
		s.mac.Write(pkt[:end])
		sum := s.mac.Sum(s.sum[:0])
		if !hmac.Equal(sum[:sa.icvLen], pkt[end:]) {
			sa.stats.AuthFailures.Add(1)
			return nil, 0, false, ErrAuth
		}
		s.dec.SetIV(pkt[HeaderLen:bodyOff])
		s.dec.CryptBlocks(body, body)
	}
	sa.replayMu.Lock()
	newest = seq > sa.window.Last()
	fresh = sa.window.Update(seq)
	sa.replayMu.Unlock()
	if !fresh { // a copy raced us through the integrity check
		sa.stats.ReplayDrops.Add(1)
		return nil, 0, false, ErrReplay
	}
	padLen := int(body[len(body)-2])
	nh := body[len(body)-1]
	if padLen+TrailerLen > len(body) {
		sa.stats.BadPadding.Add(1)
		return nil, 0, false, ErrPadding
	}
	plen := len(body) - TrailerLen - padLen
	for i := 0; i < padLen; i++ {
		if body[plen+i] != byte(i+1) {
			sa.stats.BadPadding.Add(1)
			return nil, 0, false, ErrPadding
		}
	}
	if !sa.checkLimits(sa.packets.Add(1), plen) {
		return nil, 0, false, ErrHardLimit
	}
	if nh == NextHeaderNone {
		sa.stats.DummyDropped.Add(1)
		return nil, 0, false, ErrDummy
	}
	sa.stats.PacketsIn.Add(1)
	sa.stats.BytesIn.Add(uint64(plen))
	return body[:plen], nh, newest, nil
}
