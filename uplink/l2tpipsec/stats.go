package l2tpipsec

import (
	"net/netip"
	"time"

	"github.com/fleetgate/fleetgate/uplink/esp"
	"github.com/fleetgate/fleetgate/uplink/ike"
	"github.com/fleetgate/fleetgate/uplink/l2tp"
	"github.com/fleetgate/fleetgate/uplink/ppp"
)

// Stats gathers the counters of every layer of one client tunnel or one
// server. The pointers stay valid for the tunnel's life.
type Stats struct {
	IKE       *ike.Stats
	Transport *esp.TransportStats
	ESP       *esp.Stats // shared by all the SAs
	L2TP      *l2tp.Stats
	PPP       *ppp.Stats
}

// Status is a snapshot of one tunnel, for `bridge status` and the
// gateway's status table.
type Status struct {
	// Phase is how far the tunnel got; PhaseUp when established.
	Phase Phase
	// Gateway is the configured IKE address (client); Outer is the peer's
	// current outer address (after the NAT-T float and NAT rebinding).
	Gateway, Outer netip.AddrPort
	// Suite and SPIs of the IPsec SA pair currently sending.
	Suite         string
	InSPI, OutSPI uint32
	// L2TP tunnel and session IDs (ours).
	L2TPTunnel, L2TPSession uint16
	// PPP results: our address, the peer's, DNS, user, method.
	Local, Peer netip.Addr
	DNS         [2]netip.Addr
	Username    string
	Auth        string
	// Since is when IPCP opened.
	Since time.Time
	// IPv6 is true once IPV6CP opened; LinkLocal6 is our link-local
	// address from the negotiated interface identifier (RFC 5072 §5).
	IPv6       bool
	LinkLocal6 netip.Addr
	// IPv4 packets and bytes through the tunnel.
	PacketsIn, BytesIn, PacketsOut, BytesOut uint64
	// Err is why the tunnel ended (nil while it runs).
	Err error
}
