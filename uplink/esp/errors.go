package esp

import "errors"

// Sentinel errors returned by SAs and the transport. Each names the reason a
// packet was dropped; the matching Stats counter is incremented as well.
var (
	// ErrShort means the packet is shorter than the suite's minimum.
	ErrShort = errors.New("esp: packet too short")
	// ErrMalformed means the ciphertext length does not fit the cipher.
	ErrMalformed = errors.New("esp: malformed packet")
	// ErrSPI means the packet's SPI is not the SA's.
	ErrSPI = errors.New("esp: SPI mismatch")
	// ErrReplay means the sequence number was seen already or is too old
	// (RFC 4303 §3.4.3).
	ErrReplay = errors.New("esp: replayed or too old sequence number")
	// ErrAuth means the integrity check failed (RFC 4303 §3.4.4).
	ErrAuth = errors.New("esp: integrity check failed")
	// ErrPadding means the padding is not the default monotone sequence or
	// the Pad Length is impossible (RFC 4303 §2.4).
	ErrPadding = errors.New("esp: bad padding")
	// ErrDummy means a dummy packet (Next Header 59) was received and
	// discarded (RFC 4303 §2.6).
	ErrDummy = errors.New("esp: dummy packet")
	// ErrSeqOverflow means the outbound sequence number would cycle: the SA
	// must be replaced (RFC 4303 §3.3.3).
	ErrSeqOverflow = errors.New("esp: sequence number overflow, SA must be rekeyed")
	// ErrHardLimit means the SA's hard lifetime (packets or bytes) is used up.
	ErrHardLimit = errors.New("esp: SA hard lifetime reached")
	// ErrDirection means Seal was called on an inbound SA or Open on an
	// outbound one.
	ErrDirection = errors.New("esp: wrong direction for SA")
	// ErrLegacy means a legacy transform (3DES, HMAC-MD5) was requested
	// without enabling it.
	ErrLegacy = errors.New("esp: legacy transform not enabled")
	// ErrKeymat means the keying material has the wrong length.
	ErrKeymat = errors.New("esp: keying material has the wrong length")
	// ErrTooBig means the payload does not fit in an ESP packet.
	ErrTooBig = errors.New("esp: payload too big")
	// ErrUnknownSPI means no SA is installed for the packet's SPI.
	ErrUnknownSPI = errors.New("esp: no SA for SPI")
	// ErrSelector means an opened packet does not match the SA's traffic
	// selectors (UDP/1701 for L2TP).
	ErrSelector = errors.New("esp: packet does not match SA selectors")
	// ErrClosed means the transport has been closed.
	ErrClosed = errors.New("esp: transport closed")
	// ErrNoSA means a write was addressed to a peer without an outbound SA.
	ErrNoSA = errors.New("esp: peer has no outbound SA")
	// ErrAddr means WriteTo was given an address this transport did not
	// hand out.
	ErrAddr = errors.New("esp: address is not an ESP peer address")
)
