// Package ppp implements PPP (RFC 1661) for L2TP links in pure Go: one
// option-negotiation automaton (§4) that LCP and IPCP plug into, the
// authentication protocols PAP (RFC 1334), CHAP-MD5 (RFC 1994) and
// MS-CHAPv2 (RFC 2759) in both roles, IPCP with DNS and NBNS (RFC 1332,
// RFC 1877), IPV6CP with interface identifiers (RFC 5072; ipv6cp.go: a
// client with Config.IPv6, a server for a peer whose Assignment says
// IPv6, else Protocol-Rejected), and LCP echo keepalive. CCP and ECP are
// refused with LCP Protocol-Reject.
//
// Framing is synchronous, as L2TP carries it (RFC 2661 §1.1): frames start
// with the FF 03 address and control bytes, which may be absent on receipt,
// and no ACCM, escaping or FCS applies.
//
// A Conn runs one owner goroutine for the control protocols, driven by a
// clock.Clock; IPv4 (and, once IPV6CP opened, IPv6) packets bypass it in
// both directions without allocating.
package ppp

import "time"

// Protocol numbers (RFC 1661 §2, IANA PPP DLL protocol numbers).
const (
	ProtoIPv4   uint16 = 0x0021
	ProtoIPv6   uint16 = 0x0057
	ProtoIPCP   uint16 = 0x8021
	ProtoIPV6CP uint16 = 0x8057
	ProtoCCP    uint16 = 0x80fd
	ProtoECP    uint16 = 0x8053
	ProtoLCP    uint16 = 0xc021
	ProtoPAP    uint16 = 0xc023
	ProtoCHAP   uint16 = 0xc223
	ProtoEAP    uint16 = 0xc227
)

// Control protocol codes (RFC 1661 §5).
const (
	CodeConfReq   byte = 1
	CodeConfAck   byte = 2
	CodeConfNak   byte = 3
	CodeConfRej   byte = 4
	CodeTermReq   byte = 5
	CodeTermAck   byte = 6
	CodeCodeRej   byte = 7
	CodeProtoRej  byte = 8  // LCP only
	CodeEchoReq   byte = 9  // LCP only
	CodeEchoReply byte = 10 // LCP only
	CodeDiscard   byte = 11 // LCP only
	CodeIdent     byte = 12 // LCP, RFC 1570
	CodeTimeRem   byte = 13 // LCP, RFC 1570
)

// LCP options (RFC 1661 §6).
const (
	lcpOptMRU   byte = 1
	lcpOptACCM  byte = 2
	lcpOptAuth  byte = 3
	lcpOptQual  byte = 4
	lcpOptMagic byte = 5
	lcpOptPFC   byte = 7
	lcpOptACFC  byte = 8
)

// IPCP options (RFC 1332 §3, RFC 1877 §1).
const (
	ipcpOptAddrs byte = 1
	ipcpOptComp  byte = 2
	ipcpOptAddr  byte = 3
	ipcpOptDNS1  byte = 129
	ipcpOptNBNS1 byte = 130
	ipcpOptDNS2  byte = 131
	ipcpOptNBNS2 byte = 132
)

// PAP codes (RFC 1334 §2.2) and CHAP codes (RFC 1994 §4).
const (
	papAuthReq  byte = 1
	papAuthAck  byte = 2
	papAuthNak  byte = 3
	chapChal    byte = 1
	chapResp    byte = 2
	chapSuccess byte = 3
	chapFailure byte = 4
	// CHAP algorithms in the LCP Authentication-Protocol option.
	chapMD5      byte = 5    // RFC 1994
	chapMSCHAPv2 byte = 0x81 // RFC 2759
)

// Defaults (RFC 1661 §4.6 restart timer and counters; the MRU is lowered
// from 1500 to 1400 so PPP in L2TP in UDP in ESP in UDP fits a 1500-byte
// path).
const (
	DefaultMRU          = 1400
	defaultPeerMRU      = 1500 // when the peer does not say (RFC 1661 §6.1)
	minMRU              = 128
	DefaultRestart      = 3 * time.Second
	DefaultMaxConfigure = 10
	DefaultMaxTerminate = 2
	DefaultMaxFailure   = 5
	DefaultEchoInterval = 20 * time.Second
	DefaultEchoFailures = 3
	DefaultAuthTimeout  = 30 * time.Second
	// inboxLen is the control frame queue depth of a Conn.
	inboxLen = 64
	// maxEarlyIPv4 bounds the IPv4 frames a Conn holds behind its control
	// frames while IPCP is opening (Conn.Input).
	maxEarlyIPv4 = 16
)
