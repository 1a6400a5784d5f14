package daemon

import (
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"log/slog"
	"net/netip"
	"os"
	"path/filepath"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/fleetgate/fleetgate/bridge/config"
	"github.com/fleetgate/fleetgate/bridge/mqttrelay"
	"github.com/fleetgate/fleetgate/bridge/spool"
	"github.com/fleetgate/fleetgate/downlink/mqtt"
	"github.com/fleetgate/fleetgate/downlink/registry"
	"github.com/fleetgate/fleetgate/ipstack"
)

// mqttSide is the site broker, its relay to the central broker and the
// spool between them.
type mqttSide struct {
	broker *mqtt.Broker
	relay  *mqttrelay.Relay
	spool  *spool.Spool
}

// startMQTT wires broker ↔ relay (as mqttrelay's tests do): the relay is the
// broker's Upstream, the broker the relay's Downlink; the relay dials the
// central broker from each endpoint's address through st.
func startMQTT(cfg *config.Config, reg *registry.Registry, ca *registry.CA, srvCert tls.Certificate, st *ipstack.Stack, log *slog.Logger) (*mqttSide, error) {
	m := cfg.MQTT
	sp, err := spool.Open(spool.Config{Dir: filepath.Join(cfg.StateDir, "spool"), MaxBytes: m.SpoolMaxBytes, EndpointMaxBytes: m.SpoolEndpointMaxBytes, Logger: log})
	if err != nil {
		return nil, err
	}
	ms := &mqttSide{spool: sp}
	var central *tls.Config
	if m.CentralTLS {
		central = &tls.Config{ServerName: m.CentralName, MinVersion: tls.VersionTLS12}
		if m.CentralCA != "" {
			pem, err := os.ReadFile(m.CentralCA)
			if err != nil {
				ms.close()
				return nil, fmt.Errorf("daemon: mqtt central_ca: %w", err)
			}
			central.RootCAs = x509.NewCertPool()
			if !central.RootCAs.AppendCertsFromPEM(pem) {
				ms.close()
				return nil, fmt.Errorf("daemon: mqtt central_ca %s: no certificate", m.CentralCA)
			}
		}
	}
	addrOf := func(name string) (netip.Addr, bool) {
		ep, ok := reg.ByName(name)
		if m.Central.Addr().Is6() && !m.Central.Addr().Is4In6() && ep.Addr6.IsValid() {
			return ep.Addr6, ok // central over IPv6: from the endpoint's IPv6 address
		}
		return ep.Addr, ok
	}
	ms.relay, err = mqttrelay.New(mqttrelay.Config{
		Site: cfg.Site, Server: m.Central, TLS: central, Dial: st.DialTCP, AddrOf: addrOf, Spool: sp,
		Mapping:  mqttrelay.Mapping{Prefix: m.TopicPrefix, Commands: m.Commands},
		Downlink: brokerDownlink{ms}, Logger: log, Window: m.CentralInflight,
	})
	if err != nil {
		ms.close()
		return nil, err
	}
	bc := mqtt.Config{
		TLSAddr: m.TLSListen, PlainAddr: m.PlainListen, Auth: mqtt.RegistryAuth{Registry: reg}, Upstream: ms.relay,
		TLS: &tls.Config{Certificates: []tls.Certificate{srvCert}, ClientCAs: ca.Pool,
			ClientAuth: tls.VerifyClientCertIfGiven, MinVersion: tls.VersionTLS12},
		PublishRate: m.PublishRate, PublishByteRate: m.PublishByteRate, SessionDB: filepath.Join(cfg.StateDir, "mqtt-sessions.db"),
		SessionDBSync: m.SessionSync, Logger: log,
		MaxPacketSize: m.MaxPacketSize, MaxTopicLength: m.MaxTopicLength, TopicAliasMaximum: m.TopicAliasMaximum,
		MaxSubscriptions: m.MaxSubscriptions, RetainedPerEndpoint: m.RetainedPerEndpoint, ReceiveMaximum: m.ReceiveMaximum,
		MaxQueued: m.MaxQueued, SessionExpiry: m.SessionExpiry, MaxPendingConnects: m.MaxPendingConnects,
		MaxPendingConnectsPerSource: m.MaxPendingPerSource,
	}
	if ms.broker, err = mqtt.New(bc); err != nil {
		ms.close()
		return nil, err
	}
	if err := ms.broker.Start(); err != nil {
		ms.close()
		return nil, err
	}
	if err := ms.relay.Start(); err != nil {
		ms.close()
		return nil, err
	}
	for _, ep := range reg.List() {
		if ep.Protocol == registry.MQTT {
			if err := ms.relay.AddEndpoint(ep.Name); err != nil {
				log.Warn("mqtt relay endpoint", "endpoint", ep.Name, "err", err)
			}
		}
	}
	return ms, nil
}

// brokerDownlink hands central commands to the broker assigned after the
// relay was made.
type brokerDownlink struct{ ms *mqttSide }

func (d brokerDownlink) Deliver(endpoint, topic string, payload []byte, qos byte, retain bool) error {
	return d.ms.broker.Deliver(endpoint, topic, payload, qos, retain)
}

func (ms *mqttSide) close() {
	if ms.broker != nil {
		_ = ms.broker.Close()
	}
	if ms.relay != nil {
		_ = ms.relay.Close()
	}
	_ = ms.spool.Close()
}

// relayCollector turns mqttrelay's Metrics walk (spool_*, mqttrelay_*,
// mqtt_* names, unchanged for deploy/monitoring/alerts.yaml) into const
// metrics. It is unchecked: Describe sends nothing.
type relayCollector struct{ ms *mqttSide }

func (relayCollector) Describe(chan<- *prometheus.Desc) {}

func (c relayCollector) Collect(ch chan<- prometheus.Metric) {
	c.ms.relay.Metrics(c.ms.broker, func(s mqttrelay.Sample) {
		var names, values []string
		for i := 0; i+1 < len(s.Labels); i += 2 {
			names, values = append(names, s.Labels[i]), append(values, s.Labels[i+1])
		}
		vt := prometheus.GaugeValue
		if s.Counter {
			vt = prometheus.CounterValue
		}
		if m, err := prometheus.NewConstMetric(prometheus.NewDesc(s.Name, s.Help, names, nil), vt, s.Value, values...); err == nil {
			ch <- m
		}
	})
}
