// Package ike implements IKEv1 (RFC 2407, 2408, 2409) in pure Go for the
// L2TP/IPsec uplink: the ISAKMP codec, Main Mode with pre-shared keys or
// X.509 signatures (ECDSA P-256/P-384, RSA), Quick Mode for transport-mode
// ESP with optional PFS, NAT traversal (RFC 3947 and the draft-02/03 vendor
// IDs), dead peer detection (RFC 3706), INITIAL-CONTACT, informational
// Delete/Notify, and make-before-break rekeying of both phases.
//
// # Composition
//
// One Engine serves both roles (RoleInitiator on the edge bridge via Dial,
// RoleResponder on the gateway for every Main Mode that arrives). It owns
// no sockets: the ESP transport, which owns UDP 500 and 4500, implements
// Sender and calls Engine.Input for IKE datagrams (non-ESP marker already
// stripped on 4500). Something must call Engine.Tick about once a second
// (Engine.Run does, on the configured clock.Clock).
//
// SA changes arrive through Config.OnEvent, in order and never under the
// engine's lock:
//
//   - EventChildUp: install Child (SPIs, KEYMAT split encryption key [+GCM
//     salt] then integrity key per esp.Suite, outer addresses after the
//     NAT-T float, Encap, NAT-OA, selectors, lifetimes, peer identity).
//   - EventChildRekeyed: install Child and keep Old for inbound; an
//     EventChildDown for Old follows after Config.RekeyGrace.
//   - EventChildDown / EventChildFailed / EventIKEUp / EventIKEDown.
//
// ESP calls Engine.NoteTraffic for authenticated inbound packets (so DPD
// stays quiet while data flows) and Engine.RekeyChild when a volume limit
// or sequence-number exhaustion needs a new SA early. Config.OnKeys hands
// the phase 1 key to uplink/keylog (Writer.LogIKEv1).
//
// # Policy
//
// The gateway plugs in Config.PSK (by peer address: Main Mode needs the key
// before the peer's identity is revealed), Config.CAs and CheckCert for
// certificates, AllowIdentity, and the proposal lists (strongSwan-style
// strings, see ParseIKEProposal and ParseESPProposal). The responder takes
// the first of the initiator's transforms that the policy allows. Legacy
// algorithms (3DES, MD5, MODP 1024) are only used when listed explicitly.
//
// Unless Config.AllowRawESP is set, the engine sends one randomised NAT-D
// hash so both ends detect a NAT and use UDP-encapsulated ESP on the NAT-T
// port (our ESP runs in userspace and cannot receive raw ESP): as the
// initiator, the hash of its own address (as strongSwan's encap=yes does);
// as the responder, the hash of the peer's address, so the client believes
// it is behind a NAT (as SoftEther does) and the server never appears to
// be: stock Windows refuses a server behind NAT unless a registry value is
// set.
//
// # Concurrency
//
// All protocol state is owned by the engine's mutex (one owner for every
// SA, instead of a goroutine per SA); Input, Tick, Dial and the other
// methods serialise on it. Sends and events are queued under the lock and
// delivered after it is released, in order.
//
// # Limits
//
// Cheap until the peer proves its address (halfopen.go): a first Main Mode
// message gets a stateless responder cookie (an HMAC of the initiator's
// address, port and cookie, RFC 2408 §2.5.3) and a small half-open entry in
// a table that evicts its oldest entry when full; no DH, timer or
// retransmission. The third message, carrying the cookie, proves the
// address: only then are the per-source token bucket and Config.Admit
// asked, and the responder's Diffie-Hellman work done, with MaxNegotiating
// bounding exchanges past that point. Aggressive Mode, IKEv2, tunnel mode and
// XAUTH/Mode Config are not implemented.
package ike
