package daemon

import (
	"time"

	"github.com/fleetgate/fleetgate/downlink/registry"
)

// revoker returns the function Reconcile calls for every endpoint it
// removes or re-keys (after the registry already refuses the old
// credentials, before the address can be reused): the endpoint's DTLS
// session is closed; for an MQTT endpoint its device is disconnected and
// its site session deleted (mqtt.Broker.Revoke), then its central session
// is stopped and its spooled messages dropped, or first delivered for at
// most mqtt.revoke_drain (mqttrelay.Relay.RemoveEndpoint).
func (s *Site) revoker() func(name string) bool {
	mqttEndpoints := map[string]bool{}
	for _, ep := range s.reg.List() {
		if ep.Protocol == registry.MQTT {
			mqttEndpoints[ep.Name] = true
		}
	}
	return func(name string) bool {
		t0 := time.Now()
		closed := s.srv.CloseSession(name)
		if s.ms != nil && mqttEndpoints[name] {
			if s.ms.broker.Revoke(name) {
				closed = true
			}
			if _, err := s.ms.relay.RemoveEndpoint(name, s.cfg.MQTT.RevokeDrain); err != nil {
				s.log.Warn("revoke: spool", "endpoint", name, "err", err)
			}
		}
		s.revoked.Add(1)
		s.log.Info("endpoint revoked", "endpoint", name, "session_closed", closed, "took", time.Since(t0).Round(time.Millisecond))
		return closed
	}
}

// loadSiteCRL gives the registry the site CRL's serials (`bridge endpoint
// revoke` writes it): those certificates no longer authenticate.
func (s *Site) loadSiteCRL() error {
	serials, err := s.ca.Revoked()
	if err != nil {
		return err
	}
	s.reg.SetRevoked(serials)
	return nil
}
