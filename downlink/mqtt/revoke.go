package mqtt

import (
	"strings"
	"time"

	mochi "github.com/mochi-mqtt/server/v2"
	"github.com/mochi-mqtt/server/v2/packets"
)

// revokeWait bounds how long Revoke waits for a revoked device's
// connection goroutine to finish the packet it may be handling.
const revokeWait = 2 * time.Second

// Revoke cuts endpoint off (it was removed or re-keyed; the Authenticator
// must already refuse its old credentials): its connected device is
// disconnected, and once its connection goroutine has ended (nothing it
// sent is handled after Revoke returns) its persistent session is deleted
// with its subscriptions, queued messages and retained messages, in memory
// and in the session DB. While Revoke runs the endpoint cannot connect;
// publishes and the will of the revoked connection are dropped (counted in
// Stats.RevokedPublishes). It reports whether there was a session.
func (b *Broker) Revoke(endpoint string) bool {
	h := b.hook
	h.mu.Lock()
	h.revoking[endpoint]++
	h.mu.Unlock()
	defer func() {
		h.mu.Lock()
		if h.revoking[endpoint]--; h.revoking[endpoint] <= 0 {
			delete(h.revoking, endpoint)
		}
		delete(h.limits, endpoint)
		delete(h.byteLimits, endpoint)
		h.mu.Unlock()
	}()
	cl, ok := b.srv.Clients.Get(endpoint)
	if ok {
		gone := make(chan struct{})
		h.mu.Lock()
		h.revoked[cl] = gone
		h.mu.Unlock()
		wasOpen := cl.StopTime() == 0
		cl.Stop(packets.ErrNotAuthorized)
		if wasOpen {
			select {
			case <-gone:
			case <-time.After(revokeWait):
				b.warn("mqtt revoke: device connection did not end in time", "endpoint", endpoint)
			}
		}
		b.deleteSession(cl)
		h.mu.Lock()
		delete(h.revoked, cl)
		h.mu.Unlock()
	}
	// Retained messages in the endpoint's namespace (commands kept for it).
	prefix := mount(endpoint, "")
	for filter := range b.srv.Topics.Retained.GetAll() {
		if strings.HasPrefix(filter, prefix) {
			b.srv.Topics.Retained.Delete(filter)
			if b.store != nil {
				b.store.OnRetainedExpired(filter)
			}
		}
	}
	if b.bounds != nil { // its retained topics no longer count against the bound
		b.bounds.mu.Lock()
		delete(b.bounds.retained, endpoint)
		b.bounds.mu.Unlock()
	}
	b.stats.Revoked.Add(1)
	b.log.Info("mqtt endpoint revoked: device disconnected, session deleted", "endpoint", endpoint, "had_session", ok)
	return ok
}

// deleteSession forgets a stopped client's session: subscriptions,
// inflight messages and the client record (memory and session DB).
func (b *Broker) deleteSession(cl *mochi.Client) {
	if b.store != nil {
		for _, pk := range cl.State.Inflight.GetAll(false) {
			b.store.OnQosDropped(cl, pk)
		}
	}
	cl.ClearInflights()
	b.srv.UnsubscribeClient(cl)
	if b.store != nil {
		b.store.OnClientExpired(cl)
	}
	if cur, ok := b.srv.Clients.Get(cl.ID); ok && cur == cl {
		b.srv.Clients.Delete(cl.ID)
	}
}

// revokedClient reports whether cl's connection is being revoked (its
// publishes and will are dropped).
func (h *hook) revokedClient(cl *mochi.Client) bool {
	h.mu.Lock()
	defer h.mu.Unlock()
	_, r := h.revoked[cl]
	return r
}
