// Package l2tp implements L2TPv2 (RFC 2661) in pure Go: the header and AVP
// codec (including hidden AVPs, §4.3), the reliable control connection
// (§5.8: Ns/Nr, receive window, retransmission with capped exponential
// backoff, ZLB acknowledgements, HELLO keepalive), and the tunnel and
// incoming-call session state machines (§7) for both roles, LAC and LNS, as
// one implementation selected by a Role value.
//
// The protocol core is pure: a tunnel is fed datagrams with Input(now, b) and
// timer ticks with Tick(now), and emits datagrams through an injected send
// function. Listen and Dial wrap it with one owner goroutine per tunnel
// driven by a clock.Clock over any net.PacketConn (a UDP socket for raw L2TP,
// or the ESP layer's transport). Tunnels are demultiplexed by the transport
// address (Network and String, which for the ESP layer names the security
// association and outer address) plus the tunnel ID, never by the inner UDP
// 5-tuple alone.
package l2tp

import "time"

// Role says which end of the tunnel this is (RFC 2661 §1.2).
type Role uint8

const (
	// LAC is the L2TP Access Concentrator: it dials tunnels and places
	// incoming calls (the edge bridge).
	LAC Role = iota + 1
	// LNS is the L2TP Network Server: it accepts tunnels and calls (the
	// gateway).
	LNS
)

// String returns "LAC" or "LNS".
func (r Role) String() string {
	switch r {
	case LAC:
		return "LAC"
	case LNS:
		return "LNS"
	}
	return "role?"
}

// Header bits (RFC 2661 §3.1).
const (
	flagT    = 0x8000 // control message
	flagL    = 0x4000 // length field present
	flagS    = 0x0800 // Ns/Nr present
	flagO    = 0x0200 // offset size present
	flagP    = 0x0100 // priority (data only)
	verMask  = 0x000f
	version2 = 2
	// ControlHeaderLen is the header length of every control message
	// (T, L and S set, O clear; §3.1).
	ControlHeaderLen = 12
	// DataHeaderLen is the shortest data header (no L, S or O), the form
	// this package sends unless sequencing is required.
	DataHeaderLen = 6
	// DataSeqHeaderLen is a data header carrying Ns/Nr.
	DataSeqHeaderLen = 10
)

// AVP header bits (RFC 2661 §4.1).
const (
	avpM         = 0x8000
	avpH         = 0x4000
	avpReserved  = 0x3c00
	avpLenMask   = 0x03ff
	avpHeaderLen = 6
)

// MessageType is a control message type (RFC 2661 §3.2).
type MessageType uint16

// Control message types (RFC 2661 §3.2).
const (
	MsgZLB     MessageType = 0  // Zero-Length Body acknowledgement (no Message Type AVP)
	MsgSCCRQ   MessageType = 1  // Start-Control-Connection-Request
	MsgSCCRP   MessageType = 2  // Start-Control-Connection-Reply
	MsgSCCCN   MessageType = 3  // Start-Control-Connection-Connected
	MsgStopCCN MessageType = 4  // Stop-Control-Connection-Notification
	MsgHELLO   MessageType = 6  // Hello
	MsgOCRQ    MessageType = 7  // Outgoing-Call-Request
	MsgOCRP    MessageType = 8  // Outgoing-Call-Reply
	MsgOCCN    MessageType = 9  // Outgoing-Call-Connected
	MsgICRQ    MessageType = 10 // Incoming-Call-Request
	MsgICRP    MessageType = 11 // Incoming-Call-Reply
	MsgICCN    MessageType = 12 // Incoming-Call-Connected
	MsgCDN     MessageType = 14 // Call-Disconnect-Notify
	MsgWEN     MessageType = 15 // WAN-Error-Notify
	MsgSLI     MessageType = 16 // Set-Link-Info
)

var msgNames = map[MessageType]string{
	MsgZLB: "ZLB", MsgSCCRQ: "SCCRQ", MsgSCCRP: "SCCRP", MsgSCCCN: "SCCCN", MsgStopCCN: "StopCCN",
	MsgHELLO: "HELLO", MsgOCRQ: "OCRQ", MsgOCRP: "OCRP", MsgOCCN: "OCCN", MsgICRQ: "ICRQ",
	MsgICRP: "ICRP", MsgICCN: "ICCN", MsgCDN: "CDN", MsgWEN: "WEN", MsgSLI: "SLI",
}

// String returns the RFC name of the message type.
func (m MessageType) String() string {
	if s, ok := msgNames[m]; ok {
		return s
	}
	return "msg?"
}

// sessionScoped reports whether a message type refers to a session (and so
// carries a non-zero Session ID in the header).
func (m MessageType) sessionScoped() bool {
	switch m {
	case MsgICRQ, MsgICRP, MsgICCN, MsgCDN, MsgWEN, MsgSLI, MsgOCRQ, MsgOCRP, MsgOCCN:
		return true
	}
	return false
}

// AVPType is an IETF attribute type (RFC 2661 §4.4).
type AVPType uint16

// Attribute types (RFC 2661 §4.4).
const (
	AVPMessageType         AVPType = 0
	AVPResultCode          AVPType = 1
	AVPProtocolVersion     AVPType = 2
	AVPFramingCapabilities AVPType = 3
	AVPBearerCapabilities  AVPType = 4
	AVPTieBreaker          AVPType = 5
	AVPFirmwareRevision    AVPType = 6
	AVPHostName            AVPType = 7
	AVPVendorName          AVPType = 8
	AVPAssignedTunnelID    AVPType = 9
	AVPReceiveWindowSize   AVPType = 10
	AVPChallenge           AVPType = 11
	AVPQ931CauseCode       AVPType = 12
	AVPChallengeResponse   AVPType = 13
	AVPAssignedSessionID   AVPType = 14
	AVPCallSerialNumber    AVPType = 15
	AVPMinimumBPS          AVPType = 16
	AVPMaximumBPS          AVPType = 17
	AVPBearerType          AVPType = 18
	AVPFramingType         AVPType = 19
	AVPCalledNumber        AVPType = 21
	AVPCallingNumber       AVPType = 22
	AVPSubAddress          AVPType = 23
	AVPTxConnectSpeed      AVPType = 24
	AVPPhysicalChannelID   AVPType = 25
	AVPInitialRecvConfReq  AVPType = 26
	AVPLastSentConfReq     AVPType = 27
	AVPLastRecvConfReq     AVPType = 28
	AVPProxyAuthenType     AVPType = 29
	AVPProxyAuthenName     AVPType = 30
	AVPProxyAuthenChal     AVPType = 31
	AVPProxyAuthenID       AVPType = 32
	AVPProxyAuthenResponse AVPType = 33
	AVPCallErrors          AVPType = 34
	AVPACCM                AVPType = 35
	AVPRandomVector        AVPType = 36
	AVPPrivateGroupID      AVPType = 37
	AVPRxConnectSpeed      AVPType = 38
	AVPSequencingRequired  AVPType = 39
	avpMaxKnown                    = AVPSequencingRequired
)

// StopCCN result codes (RFC 2661 §4.4.2).
const (
	StopClear         uint16 = 1 // general request to clear control connection
	StopGeneralError  uint16 = 2 // general error, Error Code says which
	StopAlreadyExists uint16 = 3 // control channel already exists
	StopNotAuthorized uint16 = 4 // requester is not authorized
	StopBadVersion    uint16 = 5 // protocol version not supported
	StopShuttingDown  uint16 = 6 // requester is being shut down
	StopFSMError      uint16 = 7 // finite state machine error
)

// CDN result codes (RFC 2661 §4.4.2).
const (
	CDNLostCarrier   uint16 = 1  // call disconnected due to loss of carrier
	CDNGeneralError  uint16 = 2  // general error, Error Code says which
	CDNAdmin         uint16 = 3  // disconnected for administrative reasons
	CDNTempResources uint16 = 4  // temporary lack of facilities
	CDNPermResources uint16 = 5  // permanent lack of facilities
	CDNNoFraming     uint16 = 11 // no appropriate framing
)

// General error codes carried with result code 2 (RFC 2661 §4.4.2).
const (
	ErrCodeNone             uint16 = 0
	ErrCodeNoControl        uint16 = 1 // no control connection exists yet
	ErrCodeLength           uint16 = 2 // length is wrong
	ErrCodeRange            uint16 = 3 // a field is out of range or reserved bits non-zero
	ErrCodeResources        uint16 = 4 // insufficient resources
	ErrCodeBadSession       uint16 = 5 // invalid Session ID
	ErrCodeVendor           uint16 = 6 // generic vendor-specific error
	ErrCodeTryAnother       uint16 = 7 // try another
	ErrCodeUnknownMandatory uint16 = 8 // unknown mandatory AVP received
)

// Framing and bearer bits (RFC 2661 §4.4.3).
const (
	FramingSync   uint32 = 1
	FramingAsync  uint32 = 2
	BearerDigital uint32 = 1
	BearerAnalog  uint32 = 2
)

// Timing defaults (RFC 2661 §5.8: retransmission starts at 1 s, doubles,
// and must be capped at no less than 8 s; §6.5 HELLO after a period of
// inactivity, 60 s is customary).
const (
	DefaultRetransmitInitial = 1 * time.Second
	DefaultRetransmitCap     = 8 * time.Second
	DefaultMaxRetransmits    = 5
	DefaultHelloInterval     = 60 * time.Second
	DefaultReceiveWindow     = 4 // our advertised Receive Window Size (§4.4.3)
	defaultPeerWindow        = 4 // peer window when it sends no RWS AVP (§5.8)
	DefaultSetupTimeout      = 30 * time.Second
	// DefaultLinger is how long a closed tunnel keeps answering retransmitted
	// StopCCNs (§5.7 asks for a full retransmission cycle; 31 s with the
	// defaults). It is a config knob so tests stay short.
	DefaultLinger = 31 * time.Second
	// DefaultMaxTunnels bounds the tunnels of one Listener.
	DefaultMaxTunnels = 4096
	// DefaultMaxHalfOpenPerPeer bounds tunnels not yet established per
	// transport address (an SCCRQ storm from one address).
	DefaultMaxHalfOpenPerPeer = 8
	// DefaultMaxSessions bounds the sessions in one tunnel.
	DefaultMaxSessions = 1024
	// MaxEarlyFrames bounds the data messages a session holds while no
	// frame handler is set yet (an LNS attaches PPP after Accept; the LAC
	// may already have sent its first LCP Configure-Request, RFC 1661
	// §4.6, whose loss would cost a 3 s restart).
	MaxEarlyFrames = 8
	// MaxDatagram is the largest datagram read.
	MaxDatagram = 65535
)
