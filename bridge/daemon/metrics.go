package daemon

import (
	"github.com/prometheus/client_golang/prometheus"

	"github.com/fleetgate/fleetgate/bridge/proxy"
	"github.com/fleetgate/fleetgate/downlink/coap"
	"github.com/fleetgate/fleetgate/downlink/device"
)

var (
	epLastSeen = prometheus.NewDesc("bridge_endpoint_last_seen_seconds",
		"Unix time a CoAP endpoint's DTLS session last carried a record (absent while it has none).", []string{"endpoint"}, nil)
	epBytes = prometheus.NewDesc("bridge_endpoint_bytes_total",
		"Bytes of a CoAP endpoint's current DTLS session by direction.", []string{"endpoint", "direction"}, nil)
	epQueued = prometheus.NewDesc("bridge_endpoint_queued",
		"Central requests waiting for a sleeping CoAP endpoint.", []string{"endpoint"}, nil)
	epSpooled = prometheus.NewDesc("bridge_endpoint_coap_spooled",
		"CoAP telemetry of an endpoint in the spool (answered 2.04, not yet confirmed by central).", []string{"endpoint"}, nil)
	epSpoolBytes = prometheus.NewDesc("bridge_endpoint_coap_spool_bytes",
		"Bytes of an endpoint's CoAP telemetry in the spool (bounded by coap_spool.endpoint_max_bytes).", []string{"endpoint"}, nil)
	epOnline = prometheus.NewDesc("bridge_endpoint_online",
		"1 while a CoAP endpoint has a DTLS session.", []string{"endpoint"}, nil)
)

// endpointCollector exports per-endpoint series for the registry's CoAP
// endpoints only (bounded by the configured endpoints; MQTT endpoints are
// in mqttrelay's series).
type endpointCollector struct {
	reg *device.Registry
	srv *coap.Server
	px  *proxy.Proxy
}

func (c endpointCollector) Describe(ch chan<- *prometheus.Desc) {
	ch <- epLastSeen
	ch <- epBytes
	ch <- epQueued
	ch <- epSpooled
	ch <- epSpoolBytes
	ch <- epOnline
}

func (c endpointCollector) Collect(ch chan<- prometheus.Metric) {
	for _, ep := range c.reg.List() {
		if ep.Protocol != device.CoAP {
			continue
		}
		ch <- prometheus.MustNewConstMetric(epQueued, prometheus.GaugeValue, float64(c.px.Queued(ep.Name)), ep.Name)
		n, b := c.px.Spooled(ep.Name)
		ch <- prometheus.MustNewConstMetric(epSpooled, prometheus.GaugeValue, float64(n), ep.Name)
		ch <- prometheus.MustNewConstMetric(epSpoolBytes, prometheus.GaugeValue, float64(b), ep.Name)
		online := 0.0
		if sess, ok := c.srv.Info(ep.Name); ok { // a parked session is online too (not resumed by a scrape)
			online = 1
			ch <- prometheus.MustNewConstMetric(epLastSeen, prometheus.GaugeValue, float64(sess.LastSeen.UnixNano())/1e9, ep.Name)
			ch <- prometheus.MustNewConstMetric(epBytes, prometheus.CounterValue, float64(sess.BytesIn), ep.Name, "in")
			ch <- prometheus.MustNewConstMetric(epBytes, prometheus.CounterValue, float64(sess.BytesOut), ep.Name, "out")
		}
		ch <- prometheus.MustNewConstMetric(epOnline, prometheus.GaugeValue, online, ep.Name)
	}
}
