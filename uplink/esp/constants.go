package esp

// Protocol constants, with the RFC sections that define them.
const (
	// HeaderLen is the ESP header: SPI and Sequence Number (RFC 4303 §2).
	HeaderLen = 8
	// TrailerLen is the fixed part of the ESP trailer: Pad Length and Next
	// Header (RFC 4303 §2.4, §2.6).
	TrailerLen = 2
	// MaxPadLen is the largest Pad Length value (RFC 4303 §2.4).
	MaxPadLen = 255

	// NextHeaderUDP is the Next Header value of a transport-mode ESP packet
	// carrying UDP (IANA protocol number 17): L2TP over IPsec (RFC 3193 §4).
	NextHeaderUDP = 17
	// NextHeaderIPv4 is the Next Header value of a tunnel-mode packet.
	NextHeaderIPv4 = 4
	// NextHeaderNone marks a dummy packet, which the receiver discards
	// (RFC 4303 §2.6).
	NextHeaderNone = 59

	// MaxSeq is the last sequence number an SA may send without Extended
	// Sequence Numbers; the counter must not cycle, so the SA must be
	// rekeyed before it is reached (RFC 4303 §3.3.3). IKEv1 negotiates no ESN.
	MaxSeq = 1<<32 - 1
	// SeqSoftMargin is how many sequence numbers before MaxSeq an outbound SA
	// asks for a rekey (the soft limit), leaving room for Quick Mode to
	// finish while traffic continues.
	SeqSoftMargin = 1 << 24

	// gcmIVLen is the explicit IV of AES-GCM in ESP (RFC 4106 §3.1).
	gcmIVLen = 8
	// gcmSaltLen is the salt taken from the end of the keying material
	// (RFC 4106 §4, §8.1).
	gcmSaltLen = 4
	// gcmNonceLen is salt || IV (RFC 4106 §4).
	gcmNonceLen = gcmSaltLen + gcmIVLen
	// gcmAlign is the ciphertext alignment of a stream-like cipher: the
	// trailer ends on a 4-octet boundary (RFC 4303 §2.4).
	gcmAlign = 4

	// maxIVLen is the longest IV: one AES block (RFC 3602 §2.1).
	maxIVLen = 16

	// NATKeepalive is the single-octet payload of a NAT-keepalive packet
	// (RFC 3948 §2.3).
	NATKeepalive = 0xFF
	// NonESPMarkerLen is the length of the four zero octets that precede an
	// IKE message on the NAT-T port (RFC 3948 §2.2).
	NonESPMarkerLen = 4

	// DefaultIKEPort and DefaultNATTPort are the IKE and NAT-T UDP ports
	// (RFC 2408 §2.5.1 hints at 500; RFC 3948 §2.1 gives 4500).
	DefaultIKEPort  = 500
	DefaultNATTPort = 4500
	// L2TPPort is the L2TP port that the IPsec selectors protect
	// (RFC 3193 §4, RFC 2661 §8.1).
	L2TPPort = 1701
	// UDPHeaderLen is the length of the inner UDP header (RFC 768).
	UDPHeaderLen = 8
)
