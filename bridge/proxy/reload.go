package proxy

import (
	"errors"
	"slices"

	"github.com/plgd-dev/go-coap/v3/message"
	"github.com/plgd-dev/go-coap/v3/message/codes"

	"github.com/fleetgate/fleetgate/downlink/registry"
)

// ReloadResult names the endpoints a Reconcile added, removed, or changed
// (credentials, in which case the DTLS session was closed, or allow-list
// only, which applies to the next request without touching the session).
type ReloadResult struct {
	Added, Removed, Rekeyed, Reallowed []string
}

// Reconcile makes the registry and the proxy match want (the endpoint
// file as re-read on SIGHUP): new endpoints are registered and served;
// endpoints gone from want are removed with their DTLS session (through
// closeSession), observations (central observers get 5.03), queued
// requests (answered 5.03) and address; endpoints whose credentials
// changed get the new ones and lose their session (the device must
// handshake again); an allow-list change applies at once. Endpoints that
// did not change keep their sessions. An address change is a remove and
// an add. Errors are collected; the rest is still applied.
func (p *Proxy) Reconcile(want []registry.Endpoint, closeSession func(name string) bool) (ReloadResult, error) {
	var res ReloadResult
	var errs []error
	reg := p.cfg.Registry
	keep := map[string]bool{}
	for _, ep := range want {
		keep[ep.Name] = true
	}
	for _, cur := range reg.List() {
		nw, ok := findEndpoint(want, cur.Name)
		if ok && nw.Addr == cur.Addr {
			continue
		}
		if err := reg.Remove(cur.Name); err != nil {
			errs = append(errs, err)
			continue
		}
		closeSession(cur.Name)
		p.RemoveEndpoint(cur)
		if !ok {
			res.Removed = append(res.Removed, cur.Name)
		}
	}
	for _, ep := range want {
		cur, ok := reg.ByName(ep.Name)
		switch {
		case !ok:
			stored, err := reg.Add(ep)
			if err != nil {
				errs = append(errs, err)
				continue
			}
			if err := p.AddEndpoint(stored); err != nil {
				errs = append(errs, err)
				continue
			}
			res.Added = append(res.Added, ep.Name)
		case !registry.SameCredentials(cur, ep):
			if _, err := reg.Replace(ep); err != nil {
				errs = append(errs, err)
				continue
			}
			closeSession(ep.Name)
			if cur.Protocol != ep.Protocol {
				p.RemoveEndpoint(cur)
				if err := p.AddEndpoint(ep); err != nil {
					errs = append(errs, err)
				}
			}
			res.Rekeyed = append(res.Rekeyed, ep.Name)
		case !slices.Equal(cur.Allow, ep.Allow):
			if _, err := reg.Replace(ep); err != nil {
				errs = append(errs, err)
				continue
			}
			res.Reallowed = append(res.Reallowed, ep.Name)
		}
	}
	return res, errors.Join(errs...)
}

func findEndpoint(eps []registry.Endpoint, name string) (registry.Endpoint, bool) {
	for _, e := range eps {
		if e.Name == name {
			return e, true
		}
	}
	return registry.Endpoint{}, false
}

// RemoveEndpoint stops serving an endpoint: its observations end (central
// observers get a final 5.03, upstream ones are cancelled), queued central
// requests are answered 5.03, it leaves the demultiplexer, its upstream
// clients close and its address is released in the stack (TCP connections
// from it aborted, its virtual UDP conns closed); its spooled CoAP requests are dropped
// (spool.DropEndpoint). Its DTLS session is the caller's to close.
func (p *Proxy) RemoveEndpoint(ep registry.Endpoint) {
	p.mu.Lock()
	e := p.eps[ep.Name]
	delete(p.eps, ep.Name)
	p.mu.Unlock()
	if e != nil {
		p.dmu.Lock() // waits for a datagram being handled for it
		p.unindexLocked(e)
		p.dmu.Unlock()
		p.endObservations(e, true)
		e.mu.Lock()
		q := e.queue
		e.queue = nil
		e.mu.Unlock()
		for _, it := range q {
			it.msg.SetType(message.NonConfirmable) // the empty ACK went out already
			p.writeAnswer(e, it.msg, it.from, codeAnswer(codes.ServiceUnavailable))
		}
		e.close()
	}
	if p.cfg.Spool != nil {
		// Nothing of a removed endpoint is sent any more.
		if n, err := p.cfg.Spool.DropEndpoint(ep.Name); err != nil || n > 0 {
			p.log.Info("coap spool dropped removed endpoint's messages", "endpoint", ep.Name, "messages", n, "err", err)
		}
	}
	p.removeAddrs(ep)
	p.Stats.Removed.Add(1)
	p.log.Info("endpoint removed", "endpoint", ep.Name, "addr", ep.Addr.String())
}
