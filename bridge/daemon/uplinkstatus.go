package daemon

import "github.com/fleetgate/fleetgate/bridge/uplink"

// UplinkStatus returns the L2TP/IPsec client's full snapshot (state,
// attempt counters, the current tunnel's suite, L2TP IDs and PPP results)
// for callers that show more than Status().Uplink, such as the demo; ok is
// false when the uplink mode is "none".
func (s *Site) UplinkStatus() (st uplink.Status, ok bool) {
	cu, ok := s.up.(*clientUplink)
	if !ok {
		return uplink.Status{}, false
	}
	return cu.Status(), true
}

// WatchUplink has fn called with the client's full snapshot on every state
// change, from the client's goroutine (fn must not block); call it before
// Start to see the first attempt. ok is false when the uplink mode is
// "none".
func (s *Site) WatchUplink(fn func(uplink.Status)) (ok bool) {
	cu, ok := s.up.(*clientUplink)
	if ok {
		cu.watch(fn)
	}
	return ok
}
