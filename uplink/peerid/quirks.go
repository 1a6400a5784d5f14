package peerid

// Quirk is one named per-peer behaviour: what a peer implementation does
// that the protocol alone would not make us do, where the code handles it,
// and the test that shows it.
//
// Every quirk the code has today is handled for all peers (tolerant
// parsing, or a choice that satisfies every client), so none is switched
// on by Kind: AllPeers says so. A future quirk that must depend on the
// peer is decided by Applies(kind), from this table, and nowhere else.
type Quirk struct {
	Name string
	// Peers are the implementations known to need it.
	Peers []Kind
	// AllPeers: handled the same way for every peer (no Kind decision).
	AllPeers bool
	// Behaviour says what the peer does and what we do about it.
	Behaviour string
	// Where is the file handling it; Test is "package/dir TestName".
	Where, Test string
}

// Applies reports whether q is in force for a peer of kind k.
func (q *Quirk) Applies(k Kind) bool {
	if q.AllPeers {
		return true
	}
	for _, p := range q.Peers {
		if p == k {
			return true
		}
	}
	return false
}

// Quirks is the one table of per-peer behaviour.
var Quirks = []Quirk{
	{Name: "natd-peer-behind-nat", Peers: []Kind{Windows, StrongSwan, SoftEther}, AllPeers: true,
		Behaviour: "the responder randomises the NAT-D hash of the peer's address (and echoes the peer's hash of ours) so the peer believes it is the one behind a NAT: Windows refuses a server behind NAT without a registry value (error 809); charon then encapsulates and sends keepalives",
		Where:     "uplink/ike/phase1.go natdPayloads", Test: "uplink/ike TestInteropNoNATServerNotBehindNAT"},
	{Name: "pap-ack-without-msg-length", Peers: []Kind{SoftEther}, AllPeers: true,
		Behaviour: "PAP Authenticate-Ack without the Msg-Length byte is accepted and counted (ppp.Stats.PAPAckNoMsgLen)",
		Where:     "uplink/ppp/authx.go", Test: "uplink/ppp TestMachineSoftEtherQuirks"},
	{Name: "auth-method-order-ignored", Peers: []Kind{SoftEther}, AllPeers: true,
		Behaviour: "a peer that Naks our authentication protocol with one we offer later gets it; otherwise our next untried method",
		Where:     "uplink/ppp/lcp.go", Test: "uplink/ppp TestMachineSoftEtherQuirks"},
	{Name: "quick-mode-answer-other-selectors", Peers: []Kind{StrongSwan}, AllPeers: true,
		Behaviour: "a transport-mode Quick Mode answer from behind a NAT may carry the addresses the responder sees; any well-formed selectors are accepted, ours kept",
		Where:     "uplink/ike/phase2.go", Test: "uplink/ike TestInteropBehindNATToCharon"},
	{Name: "dhcpinform-routes", Peers: []Kind{Windows}, AllPeers: true,
		Behaviour: "split-tunnel routes are answered to a DHCPINFORM over PPP with options 121 and Microsoft's 249",
		Where:     "uplink/dhcpinform", Test: "uplink/dhcpinform TestRespondWindowsInform"},
}
