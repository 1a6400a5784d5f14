package daemon

// Uplink is what the bridge needs from the L2TP/IPsec client (the uplink
// package implements it; the lead wires it in NewUplink below).
type Uplink interface {
	// WritePacket sends one IPv4 packet over PPP; it must not retain pkt.
	WritePacket(pkt []byte) error
	// SetInbound installs the handler for IPv4 packets received over PPP.
	SetInbound(func(pkt []byte))
	// LocalAddr is the PPP (IPCP) assigned address; invalid while down.
	LocalAddr() string
	// SetStateHandler is called with up=true/false and a reason on changes.
	SetStateHandler(func(up bool, reason string))
	// State describes the uplink for status ("up", "connecting: …").
	State() string
	// Start begins connecting in the background.
	Start()
	// Close tears the uplink down.
	Close() error
}

// noneUplink drops everything: for running the bridge without a VPN.
type noneUplink struct{}

func (noneUplink) WritePacket([]byte) error           { return nil }
func (noneUplink) SetInbound(func([]byte))            {}
func (noneUplink) LocalAddr() string                  { return "" }
func (noneUplink) SetStateHandler(func(bool, string)) {}
func (noneUplink) State() string                      { return "none (uplink disabled)" }
func (noneUplink) Close() error                       { return nil }
func (noneUplink) Start()                             {}
