package engine

import "sync/atomic"

// Stats are the engine's own counters (the protocol layers' counters are in
// l2tpipsec.Server.Stats).
type Stats struct {
	AdmissionRefused  atomic.Uint64 // Main Modes refused by pacing when MM3 proved the address
	AdmissionAdmitted atomic.Uint64 // Main Modes admitted at MM3
	// AdmissionMalformed counts datagrams that claimed to open a Main Mode
	// (responder cookie zero) but would not parse as one: dropped, nobody
	// charged.
	AdmissionMalformed atomic.Uint64
	SessionsUp         atomic.Uint64 // sessions registered with the gateway
	RegisterFailed     atomic.Uint64 // sessions refused by the session table
	SessionsDown       atomic.Uint64 // sessions unregistered
	RawL2TPSessions    atomic.Uint64 // sessions accepted on the raw L2TP listener
	OrphanAuth         atomic.Uint64 // authenticated links that ended before IPCP (address released)
	HeldPackets        atomic.Uint64 // packets a client sent at IPCP up, held until its session was registered
	HeldDropped        atomic.Uint64 // early packets dropped: too many, or the session was refused
}
