package uplink

import (
	"net/netip"
	"slices"
	"time"

	"github.com/fleetgate/fleetgate/uplink/dhcpinform"
	"github.com/fleetgate/fleetgate/uplink/l2tpipsec"
)

// Route push. The gateway configures split tunnelling centrally: per
// identity, the central prefixes a site may reach through the VPN. Stock
// Windows clients ask for them with a DHCPINFORM over the PPP link after
// IPCP and install the classless static routes (options 121/249) of the
// DHCPACK; our client asks the same way, so one mechanism serves both,
// and a stock LNS that does not answer simply leaves the routes unknown.

// Route request timing: the INFORM is sent at once and repeated after 1,
// 2 and 4 s (RFC 2131 §4.1 asks for a randomized exponential backoff for
// retransmissions; four tries over 15 s is what Windows does over RAS).
const (
	informFirstWait = time.Second
	informTries     = 4
)

type informWait struct {
	xid uint32
	ch  chan *dhcpinform.Ack
}

// deliverDHCP takes the gateway's DHCP replies off the packet path; false
// means pkt is not one and goes to the packet handler.
func (c *Client) deliverDHCP(pkt []byte) bool {
	if !c.cfg.RequestRoutes || !dhcpinform.IsReply(pkt) {
		return false
	}
	a, err := dhcpinform.ParseAck(pkt)
	if err != nil {
		c.mu.Lock()
		c.st.RouteErrors++
		c.mu.Unlock()
		c.log.Warn("bad DHCP reply from the gateway", "err", err, "len", len(pkt))
		return true
	}
	w := c.inform.Load()
	if w == nil || a.XID != w.xid {
		c.log.Debug("DHCP reply for another transaction", "xid", a.XID)
		return true
	}
	select {
	case w.ch <- a:
	default:
	}
	return true
}

// requestRoutes asks the gateway of t for its pushed routes and records
// the answer; it returns when answered, out of tries, or t is done.
func (c *Client) requestRoutes(t *l2tpipsec.Tunnel, gw string) {
	c.mu.Lock()
	xid := c.rnd.Uint32()
	c.mu.Unlock()
	w := &informWait{xid: xid, ch: make(chan *dhcpinform.Ack, 1)}
	c.inform.Store(w)
	defer c.inform.CompareAndSwap(w, nil)
	pkt := dhcpinform.AppendInform(nil, t.LocalAddr(), xid, nil)
	wait := informFirstWait
	for try := 0; try < informTries; try++ {
		if err := t.WritePacket(pkt); err != nil {
			c.log.Debug("DHCPINFORM not sent", "err", err)
		}
		tm := c.cfg.Clock.NewTimer(wait)
		select {
		case a := <-w.ch:
			tm.Stop()
			c.setRoutes(a, gw)
			return
		case <-tm.C():
		case <-t.Done():
			tm.Stop()
			return
		case <-c.ctx.Done():
			tm.Stop()
			return
		}
		wait *= 2
	}
	c.log.Info("the gateway did not answer DHCPINFORM: no pushed routes", "gateway", gw, "tries", informTries)
}

func (c *Client) setRoutes(a *dhcpinform.Ack, gw string) {
	routes := make([]netip.Prefix, 0, len(a.Routes))
	for _, r := range a.Routes {
		routes = append(routes, r.Prefix)
	}
	c.mu.Lock()
	c.st.Routes, c.st.RoutesKnown = routes, true
	c.mu.Unlock()
	c.log.Info("pushed routes", "gateway", gw, "routes", routes, "pushed", a.HaveRoutes)
	if c.cfg.OnRoutes != nil {
		c.cfg.OnRoutes(slices.Clone(routes))
	}
}

// clearRoutes forgets the routes of a tunnel that went down.
func (c *Client) clearRoutes() {
	c.mu.Lock()
	c.st.Routes, c.st.RoutesKnown = nil, false
	c.mu.Unlock()
}
