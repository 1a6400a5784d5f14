package l2tpipsec

import "sync/atomic"

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
