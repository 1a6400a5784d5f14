package coap

import (
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"net/netip"
	"sync"
	"time"

	"github.com/pion/dtls/v3/pkg/protocol"
	"github.com/pion/dtls/v3/pkg/protocol/handshake"
	"github.com/pion/dtls/v3/pkg/protocol/recordlayer"
)

// Stateless HelloVerifyRequest cookies (RFC 6347 section 4.2.1): the guard
// answers a ClientHello without a valid cookie with a HelloVerifyRequest
// and keeps nothing; only a ClientHello that echoes a cookie computed for
// its source address and hello parameters gets a conn and a pion server.
//
//	Cookie = HMAC-SHA256(Secret, client IP | port | client_version | random |
//	                     session_id | cipher_suites | compression_methods)[:cookieLen]
//
// Extensions are left out as pion's own check does (clients may change
// them in the retry). The secret rotates every CookieRotation; cookies from
// the previous secret stay valid, so a cookie lives between one and two
// rotation periods.

const (
	cookieLen = 20 // as pion's own cookies; wolfSSL clients keep at most 32
	// DefaultCookieRotation is how often the cookie secret changes.
	DefaultCookieRotation = time.Minute
)

// Errors from ParseClientHello.
var (
	ErrNotClientHello  = errors.New("coap: first record is not a ClientHello in epoch 0")
	ErrFragmentedHello = errors.New("coap: fragmented ClientHello (cannot be verified statelessly)")
	ErrMalformedHello  = errors.New("coap: malformed ClientHello")
)

// ClientHello is what the guard reads from a new peer's first datagram.
// The byte slices alias the datagram.
type ClientHello struct {
	RecordSeq  uint64 // record sequence number (48 bits)
	MessageSeq uint16 // handshake message_seq
	Random     []byte // 32 bytes
	Cookie     []byte
	// params are the hello fields the cookie covers: client_version,
	// random, session_id, cipher_suites, compression_methods (each with
	// its length prefix as on the wire).
	params [][]byte
}

// ParseClientHello reads the first record of a datagram as an unfragmented
// DTLS ClientHello in epoch 0 (RFC 6347 section 4.2.2, RFC 5246 section
// 7.4.1.2). It checks bounds only as far as the cookie needs; pion parses
// the rest once the cookie is valid. It never panics.
func ParseClientHello(b []byte) (ClientHello, error) {
	var ch ClientHello
	if len(b) < recordlayer.FixedHeaderSize+handshake.HeaderLength || b[0] != byte(protocol.ContentTypeHandshake) || b[3] != 0 || b[4] != 0 {
		return ch, ErrNotClientHello
	}
	ch.RecordSeq = uint64(b[5])<<40 | uint64(binary.BigEndian.Uint32(b[6:10]))<<8 | uint64(b[10])
	// The record covers exactly its length (checked by ClassifyDatagram
	// for the guard; checked again here for other callers).
	n := int(binary.BigEndian.Uint16(b[11:13]))
	if recordlayer.FixedHeaderSize+n > len(b) {
		return ch, ErrMalformedHello
	}
	rec := b[recordlayer.FixedHeaderSize : recordlayer.FixedHeaderSize+n]
	if len(rec) < handshake.HeaderLength || handshake.Type(rec[0]) != handshake.TypeClientHello {
		return ch, ErrNotClientHello
	}
	length := uint32(rec[1])<<16 | uint32(rec[2])<<8 | uint32(rec[3])
	ch.MessageSeq = binary.BigEndian.Uint16(rec[4:6])
	fragOff := uint32(rec[6])<<16 | uint32(rec[7])<<8 | uint32(rec[8])
	fragLen := uint32(rec[9])<<16 | uint32(rec[10])<<8 | uint32(rec[11])
	if fragOff != 0 || fragLen != length {
		return ch, ErrFragmentedHello
	}
	body := rec[handshake.HeaderLength:]
	if uint32(len(body)) < length {
		return ch, ErrMalformedHello
	}
	body = body[:length]
	// client_version(2) random(32)
	if len(body) < 2+handshake.RandomLength {
		return ch, ErrMalformedHello
	}
	fixed := body[:2+handshake.RandomLength]
	ch.Random = body[2 : 2+handshake.RandomLength]
	rest := body[2+handshake.RandomLength:]
	sid, rest, ok := vec8(rest)
	if !ok || len(sid) > 1+32 {
		return ch, ErrMalformedHello
	}
	cookie, rest, ok := vec8(rest)
	if !ok {
		return ch, ErrMalformedHello
	}
	ch.Cookie = cookie[1:]
	suites, rest, ok := vec16(rest)
	if !ok || len(suites) < 2+2 || len(suites)%2 != 0 {
		return ch, ErrMalformedHello
	}
	comp, _, ok := vec8(rest)
	if !ok || len(comp) < 2 {
		return ch, ErrMalformedHello
	}
	ch.params = [][]byte{fixed, sid, suites, comp}
	return ch, nil
}

// vec8 splits a vector with a one-byte length prefix (returned with its
// prefix) from b.
func vec8(b []byte) (v, rest []byte, ok bool) {
	if len(b) < 1 || len(b) < 1+int(b[0]) {
		return nil, nil, false
	}
	return b[:1+int(b[0])], b[1+int(b[0]):], true
}

// vec16 is vec8 with a two-byte length prefix.
func vec16(b []byte) (v, rest []byte, ok bool) {
	if len(b) < 2 {
		return nil, nil, false
	}
	n := 2 + int(binary.BigEndian.Uint16(b))
	if len(b) < n {
		return nil, nil, false
	}
	return b[:n], b[n:], true
}

// cookieJar makes and checks cookies; its only state is two secrets.
type cookieJar struct {
	every time.Duration
	now   func() time.Time

	mu      sync.Mutex
	cur     [32]byte  // guarded by mu
	prev    [32]byte  // guarded by mu
	rotated time.Time // guarded by mu
	hasPrev bool      // guarded by mu
}

func newCookieJar(every time.Duration, now func() time.Time) *cookieJar {
	j := &cookieJar{every: every, now: now}
	_, _ = rand.Read(j.cur[:]) // never fails (crypto/rand, Go ≥ 1.24)
	j.rotated = now()
	return j
}

// secrets returns the current and, if still valid, the previous secret.
func (j *cookieJar) secrets() (cur, prev [32]byte, hasPrev bool) {
	j.mu.Lock()
	defer j.mu.Unlock()
	if d := j.now().Sub(j.rotated); d >= j.every {
		if d >= 2*j.every { // both expired: cookies from before are void
			j.hasPrev = false
		} else {
			j.prev, j.hasPrev = j.cur, true
		}
		_, _ = rand.Read(j.cur[:])
		j.rotated = j.now()
	}
	return j.cur, j.prev, j.hasPrev
}

func cookieFor(secret *[32]byte, from netip.AddrPort, ch *ClientHello) []byte {
	m := hmac.New(sha256.New, secret[:])
	a := from.Addr().Unmap().As16()
	m.Write(a[:])
	var port [2]byte
	binary.BigEndian.PutUint16(port[:], from.Port())
	m.Write(port[:])
	for _, p := range ch.params {
		m.Write(p)
	}
	return m.Sum(nil)[:cookieLen]
}

// make returns the cookie for a hello from an address.
func (j *cookieJar) make(from netip.AddrPort, ch *ClientHello) []byte {
	cur, _, _ := j.secrets()
	return cookieFor(&cur, from, ch)
}

// valid reports whether the hello carries a cookie made for it and its
// source address with the current or the previous secret.
func (j *cookieJar) valid(from netip.AddrPort, ch *ClientHello) bool {
	if len(ch.Cookie) != cookieLen {
		return false
	}
	cur, prev, hasPrev := j.secrets()
	if hmac.Equal(ch.Cookie, cookieFor(&cur, from, ch)) {
		return true
	}
	return hasPrev && hmac.Equal(ch.Cookie, cookieFor(&prev, from, ch))
}

// helloVerifyRequest builds the stateless answer to ch: a HelloVerifyRequest
// with the same message_seq and record sequence number as the ClientHello
// (RFC 6347 section 4.2.1), server_version DTLS 1.0 as that section
// recommends.
func helloVerifyRequest(ch *ClientHello, cookie []byte) ([]byte, error) {
	r := recordlayer.RecordLayer{
		Header: recordlayer.Header{Version: protocol.Version1_0, SequenceNumber: ch.RecordSeq},
		Content: &handshake.Handshake{
			Header:  handshake.Header{MessageSequence: ch.MessageSeq},
			Message: &handshake.MessageHelloVerifyRequest{Version: protocol.Version1_0, Cookie: cookie},
		},
	}
	return r.Marshal()
}
