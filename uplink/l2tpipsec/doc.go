// Package tunnel composes the uplink's protocol layers into one IP packet
// link, for both roles:
//
//	IKEv1 Main + Quick Mode (package ike)  → ESP SA pair installed in the
//	userspace transport (package esp, UDP-encapsulated, RFC 3948)
//	→ L2TPv2 tunnel + session over the transport's L2TP PacketConn
//	(package l2tp, RFC 3193 for L2TP over IPsec)
//	→ PPP with authentication and IPCP (package ppp)
//
// Dial runs the client (LAC, IKE initiator, PPP client) and returns a Tunnel
// once IPCP has opened. NewServer runs the responder side (IKE responder,
// LNS, one PPP server per L2TP session) and hands every session that reached
// IPCP to ServerConfig.OnSession as a ServerSession.
//
// The composition owns the event plumbing between layers: Quick Mode results
// become ESP SA pairs (esp.Transport.AddSA, make-before-break Rekey on
// rekeys, RemovePair when a child goes), an ESP soft lifetime asks IKE for a
// rekey, ESP traffic keeps dead peer detection quiet (RFC 3706 §5.5), the
// loss of the last IPsec SA tears down the L2TP tunnels above it, and every
// failure is reported as an *Error naming the phase that failed (ike phase1,
// quick mode, ipsec, l2tp, ppp, ppp auth, ipcp).
//
// Several clients behind one NAT (same outer address, all from inner port
// 1701) are told apart because each has its own SA pair: esp.Addr names the
// SA peer, and L2TP keys tunnels by that address plus the tunnel ID.
package l2tpipsec
