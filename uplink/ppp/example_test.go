package ppp_test

import (
	"context"
	"log"
	"net"
	"net/netip"

	"github.com/fleetgate/fleetgate/uplink/l2tp"
	"github.com/fleetgate/fleetgate/uplink/ppp"
)

// The gateway side: an LNS accepting sessions, each running a PPP server
// that authenticates with a plug-in and assigns addresses from a callback.
func Example_server() {
	conn, err := net.ListenPacket("udp4", "127.0.0.1:0") // or the ESP layer's PacketConn
	if err != nil {
		log.Fatal(err)
	}
	lns, _ := l2tp.Listen(conn, l2tp.Config{HostName: "gateway"})
	defer lns.Close()
	go func() {
		for {
			s, err := lns.Accept(context.Background())
			if err != nil {
				return
			}
			c := ppp.Attach(s, ppp.Config{
				Role:          ppp.Server,
				Authenticator: ppp.LocalUsers{"site1": "secret"}, // or a RADIUS client
				AssignAddress: func(ctx context.Context, user string) (ppp.Assignment, error) {
					return ppp.Assignment{Addr: netip.MustParseAddr("10.10.8.17"), DNS: [2]netip.Addr{netip.MustParseAddr("10.0.0.53")}}, nil
				},
				LocalAddr: netip.MustParseAddr("10.10.0.1"),
			})
			c.SetPacketHandler(func(pkt []byte) { /* route the IPv4 packet; pkt is valid only now */ })
		}
	}()
}

// The bridge side: a LAC dialling the gateway and running a PPP client.
func Example_client() {
	conn, err := net.ListenPacket("udp4", "127.0.0.1:0")
	if err != nil {
		log.Fatal(err)
	}
	ctx := context.Background()
	tun, err := l2tp.Dial(ctx, conn, &net.UDPAddr{IP: net.IPv4(192, 0, 2, 1), Port: 1701}, l2tp.Config{HostName: "site1"})
	if err != nil {
		log.Print(err)
		return
	}
	defer tun.Close()
	s, err := tun.OpenSession(ctx)
	if err != nil {
		log.Print(err)
		return
	}
	c := ppp.Attach(s, ppp.Config{Role: ppp.Client, Username: "site1", Password: "secret"})
	c.SetPacketHandler(func(pkt []byte) { /* hand to the netstack */ })
	select {
	case <-c.Up():
		log.Printf("address %v, DNS %v", c.Info().Local, c.Info().DNS)
	case <-c.Done():
		log.Print(c.Err())
	}
}
