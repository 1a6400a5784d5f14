package esp_test

import (
	"log"
	"net/netip"

	"github.com/fleetgate/fleetgate/uplink/esp"
)

// Example shows how a composer wires the transport to an IKE engine and
// installs the SA pair a Quick Mode produced; L2TP then runs on
// tr.L2TP().
func Example() {
	var ikeEngine esp.IKEHandler = esp.IKEHandlerFunc(func(b []byte, local, remote netip.AddrPort, natt bool) {
		// ike.Engine.Input(b, local, remote, natt)
	})
	tr, err := esp.NewTransport(esp.TransportConfig{
		IKEAddr:  "127.0.0.1:0", // production: ":500"
		NATTAddr: "127.0.0.1:0", // production: ":4500"
		IKE:      ikeEngine,
	})
	if err != nil {
		log.Fatal(err)
	}
	defer tr.Close()

	// From the Quick Mode result (keys here are placeholders).
	suite := esp.Suite{Cipher: esp.CipherAESCBC, KeyBits: 256, Integ: esp.IntegHMACSHA256_128}
	opts := esp.Options{Limits: esp.LimitsFromKB(4608000), OnSoftLimit: func(sa *esp.SA) {
		// tell the IKE SA's owner loop to start a Quick Mode rekey
	}}
	in, err := esp.NewSA(suite, 0xc1000001, make([]byte, suite.KeymatLen()), esp.Inbound, opts)
	if err != nil {
		log.Fatal(err)
	}
	out, err := esp.NewSA(suite, 0xc2000001, make([]byte, suite.KeymatLen()), esp.Outbound, opts)
	if err != nil {
		log.Fatal(err)
	}
	peer, err := tr.AddSA(in, out, esp.PeerConfig{
		Remote:    netip.MustParseAddrPort("198.51.100.7:4500"),
		Keepalive: true, // NAT-D said we are behind a NAT
	})
	if err != nil {
		log.Fatal(err)
	}
	// The L2TP layer writes to peer.Addr(0) (LAC) or to the addresses
	// tr.L2TP().ReadFrom returns (LNS).
	_ = peer.Addr(0)
}
