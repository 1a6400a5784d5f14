package l2tpipsec

import (
	"sync/atomic"

	"github.com/fleetgate/fleetgate/uplink/ppp"
)

// packetHandler holds the function that receives the IPv4 packets PPP
// decapsulated, for the client Tunnel and a ServerSession alike. It is set
// and replaced at any time; deliver runs on the receive path.
type packetHandler struct {
	fn atomic.Pointer[func([]byte)]
}

// set installs fn (nil removes the handler: packets are then dropped).
func (h *packetHandler) set(fn func(pkt []byte)) {
	if fn == nil {
		h.fn.Store(nil)
		return
	}
	h.fn.Store(&fn)
}

// deliver hands pkt to the handler, if one is set.
func (h *packetHandler) deliver(pkt []byte) {
	if f := h.fn.Load(); f != nil {
		(*f)(pkt)
	}
}

// packetPath is the IPv4 packet path over a PPP link, for the client
// Tunnel and a ServerSession alike: packets and bytes counted both ways and
// the handler that receives what PPP decapsulated.
type packetPath struct {
	in, out byteCounter
	handler packetHandler
}

// write sends pkt over c and counts it once PPP took it.
func (p *packetPath) write(c *ppp.Conn, pkt []byte) error {
	if err := c.WritePacket(pkt); err != nil {
		return err
	}
	p.out.add(len(pkt))
	return nil
}

// deliver counts pkt and hands it to the handler; it is PPP's
// PacketHandler.
func (p *packetPath) deliver(pkt []byte) {
	p.in.add(len(pkt))
	p.handler.deliver(pkt)
}
