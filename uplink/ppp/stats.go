package ppp

import "sync/atomic"

// Stats counts PPP events; fields are atomic counters (published as
// ppp_<noun>_<verb>_total).
type Stats struct {
	LinksUp            atomic.Uint64 // IPCP reached Opened
	LinksDown          atomic.Uint64 // links that went down after coming up or failing
	AuthSuccesses      atomic.Uint64 // authentications that succeeded
	AuthFailures       atomic.Uint64 // authentications that failed
	AuthMethodRefused  atomic.Uint64 // client: links where the peer asked for a method we do not allow (no credentials sent)
	PAPAckNoMsgLen     atomic.Uint64 // PAP Authenticate-Ack without the Msg-Length byte (SoftEther), accepted
	EchoRequestsSent   atomic.Uint64 // LCP Echo-Requests sent
	EchoProbes         atomic.Uint64 // on-demand probing started: IPv4 sent, nothing received for ProbeAfter
	EchoTimeouts       atomic.Uint64 // links closed for unanswered echoes
	LoopbackDetected   atomic.Uint64 // own magic number seen in a peer request
	ProtocolRejectSent atomic.Uint64 // Protocol-Rejects sent (IPV6CP not offered, CCP, ECP, unknown)
	CodeRejectSent     atomic.Uint64 // Code-Rejects sent
	MalformedDropped   atomic.Uint64 // frames or packets that failed to parse
	PacketsIn          atomic.Uint64 // IPv4 packets delivered to the handler
	PacketsOut         atomic.Uint64 // IPv4 packets sent
	PacketsDropped     atomic.Uint64 // IPv4 packets dropped (IPCP not open, no handler)
	InboxOverflow      atomic.Uint64 // control frames dropped: queue full
	EarlyIPv4Queued    atomic.Uint64 // IPv4 packets that arrived before IPCP opened here, held behind the control frames
	IPV6CPUp           atomic.Uint64 // IPV6CP reached Opened
	IPV6CPRejected     atomic.Uint64 // the peer Protocol-Rejected our IPV6CP (IPv4 only on that link)
	PacketsIn6         atomic.Uint64 // IPv6 packets delivered to the handler
	PacketsOut6        atomic.Uint64 // IPv6 packets sent
}
