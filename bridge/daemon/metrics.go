package daemon

import (
	"github.com/prometheus/client_golang/prometheus"

	"github.com/fleetgate/fleetgate/bridge/proxy"
	"github.com/fleetgate/fleetgate/downlink/coap"
	"github.com/fleetgate/fleetgate/downlink/registry"
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
	reg *registry.Registry
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
		if ep.Protocol != registry.CoAP {
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

// metrics builds the private Prometheus registry.
func (s *Site) metrics() *prometheus.Registry {
	preg := prometheus.NewRegistry()
	counter := func(name, help string, f func() uint64) {
		preg.MustRegister(prometheus.NewCounterFunc(prometheus.CounterOpts{Name: name, Help: help}, func() float64 { return float64(f()) }))
	}
	srv, px, st := s.srv, s.px, s.st
	counter("coap_handshakes_ok_total", "DTLS sessions authenticated.", srv.Stats.HandshakesOK.Load)
	counter("coap_handshake_failures_total", "DTLS handshakes failed.", srv.Stats.HandshakeFailures.Load)
	counter("coap_unknown_identity_total", "Unknown PSK identities or CNs.", srv.Stats.UnknownIdentity.Load)
	counter("coap_cert_refused_total", "Site-CA certificates refused: not the one recorded for the endpoint (replaced) or on the site CRL.", srv.Stats.CertRefused.Load)
	counter("endpoints_revoked_total", "Endpoints removed or re-keyed by a reload and cut off (sessions, relay, spool).", s.revoked.Load)
	counter("coap_rebinds_total", "Peer address changes kept by Connection ID.", srv.Stats.Rebinds.Load)
	counter("coap_requests_total", "CoAP requests from devices.", srv.Stats.Requests.Load)
	counter("coap_rate_limited_total", "Requests answered 4.29.", srv.Stats.RateLimited.Load)
	counter("coap_garbage_datagrams_total", "Datagrams dropped before DTLS by the record sanity check.", srv.Stats.Garbage.Load)
	counter("coap_hello_verify_sent_total", "Stateless HelloVerifyRequests sent (ClientHellos without a valid cookie).", srv.Stats.HelloVerifySent.Load)
	counter("coap_cookie_invalid_total", "ClientHellos with a wrong or expired cookie.", srv.Stats.CookieInvalid.Load)
	counter("coap_pending_refused_total", "Cookie-verified handshakes refused: downlink.max_pending_handshakes reached.", srv.Stats.PendingRefused.Load)
	counter("coap_pending_refused_source_total", "Cookie-verified handshakes refused: downlink.max_pending_per_source reached.", srv.Stats.PendingRefusedSource.Load)
	counter("coap_budget_deferred_total", "Cookie-verified ClientHellos dropped (the device retransmits): handshakes starting faster than the CPU budget affords.", srv.Stats.BudgetDeferred.Load)
	counter("coap_pending_expired_total", "Handshakes closed by downlink.pending_timeout.", srv.Stats.PendingExpired.Load)
	counter("coap_sessions_parked_total", "Idle DTLS sessions parked (state kept, no conn or goroutine).", srv.Stats.Parked.Load)
	counter("coap_sessions_resumed_total", "Parked DTLS sessions resumed without a handshake.", srv.Stats.Resumed.Load)
	counter("coap_resume_failures_total", "Parked DTLS sessions that could not be resumed.", srv.Stats.ResumeFailures.Load)
	counter("coap_parked_expired_total", "Parked DTLS sessions dropped after downlink.idle_timeout.", srv.Stats.ParkedExpired.Load)
	counter("coap_state_restored_total", "DTLS sessions restored from the state file at start.", srv.Stats.StateRestored.Load)
	counter("coap_state_skipped_total", "State file entries dropped (expired, endpoint removed or credentials changed).", srv.Stats.StateSkipped.Load)
	counter("coap_state_refused_total", "Session state files refused whole (does not decrypt or parse).", srv.Stats.StateRefused.Load)
	preg.MustRegister(prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "coap_pending_handshakes", Help: "DTLS handshakes in progress after a valid cookie."}, func() float64 { return float64(srv.PendingHandshakes()) }))
	counter("proxy_upstream_total", "Device to central requests.", px.Stats.Upstream.Load)
	counter("proxy_upstream_errors_total", "Failed device to central requests.", px.Stats.UpstreamErrors.Load)
	counter("proxy_upstream_replaced_total", "Upstream CoAP clients dropped and re-dialled (closed underneath or unusable).", px.Stats.UpstreamReplaced.Load)
	counter("proxy_downstream_total", "Central to device requests.", px.Stats.Downstream.Load)
	counter("proxy_queued_total", "Central requests queued for sleeping devices.", px.Stats.Queued.Load)
	counter("proxy_expired_total", "Queued requests answered 5.04.", px.Stats.Expired.Load)
	counter("proxy_queue_full_total", "Central requests refused 5.03: a sleeping device's queue was full.", px.Stats.QueueFull.Load)
	counter("proxy_denied_total", "Proxy-Uri requests refused by the endpoint's allow-list or unparsable.", px.Stats.Denied.Load)
	counter("proxy_malformed_total", "Undecodable datagrams sent to endpoint addresses.", px.Stats.Malformed.Load)
	counter("proxy_observe_registered_down_total", "Observations registered central → device.", px.Stats.ObservationsDown.Load)
	counter("proxy_observe_registered_up_total", "Observations registered device → central.", px.Stats.ObservationsUp.Load)
	counter("proxy_observe_refused_total", "Observations over the per-endpoint limit (answered once).", px.Stats.ObserveRefused.Load)
	counter("proxy_observe_cancelled_total", "Observations ended by Observe:1 or RST.", px.Stats.ObserveCancelled.Load)
	counter("proxy_observe_timeouts_total", "Central observers dropped for not acknowledging notifications.", px.Stats.ObserveTimeouts.Load)
	counter("proxy_notifications_to_devices_total", "Observe notifications relayed to devices.", px.Stats.Notifications.Load)
	counter("proxy_notifications_to_central_total", "Observe notifications relayed to central observers.", px.Stats.NotificationsDown.Load)
	counter("proxy_block_uploads_total", "Block1 uploads from central reassembled.", px.Stats.BlockUploads.Load)
	counter("proxy_block_downloads_total", "Bodies sent to central as Block2.", px.Stats.BlockDownloads.Load)
	counter("proxy_block_errors_total", "Block-wise transfers refused (out of order, too large, bad option).", px.Stats.BlockErrors.Load)
	counter("proxy_endpoints_removed_total", "Endpoints removed by reload.", px.Stats.Removed.Load)
	counter("coap_spool_stored_total", "Device CoAP requests stored in the CoAP spool and answered 2.04.", px.Stats.Spooled.Load)
	counter("coap_spool_refused_total", "Device CoAP requests the spool refused (full, endpoint share full, disk), answered 5.03.", px.Stats.SpoolRefused.Load)
	counter("coap_unavailable_total", "5.03 with Max-Age answered to devices (uplink down, passthrough failure, spool refused).", px.Stats.Unavailable.Load)
	counter("coap_spool_forwarded_total", "Spooled CoAP requests answered by central and removed.", px.Stats.Forwarded.Load)
	counter("coap_spool_retransmits_total", "Retransmissions of spooled CoAP requests (same Message ID).", px.Stats.ForwardRetransmits.Load)
	counter("coap_spool_central_errors_total", "5.xx answers from central to spooled requests (retried).", px.Stats.ForwardCentralErrors.Load)
	counter("coap_spool_rejected_total", "Spooled requests central refused with 4.xx or RST (dropped).", px.Stats.ForwardRejected.Load)
	cst := s.csp.Stats()
	gauge := func(name, help string, f func() float64) {
		preg.MustRegister(prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: name, Help: help}, f))
	}
	gauge("coap_spool_messages", "Messages waiting in the CoAP spool.", func() float64 { return float64(cst.Queued.Load()) })
	gauge("coap_spool_bytes", "Encoded bytes in the CoAP spool (bounded by coap_spool.max_bytes).", func() float64 { return float64(cst.Bytes.Load()) })
	gauge("coap_spool_disk_bytes", "Size of the CoAP spool's segment files.", func() float64 { return float64(cst.DiskBytes.Load()) })
	gauge("coap_spool_oldest_age_seconds", "Age of the oldest message in the CoAP spool.", func() float64 { return s.csp.OldestAge().Seconds() })
	counter("coap_spool_refused_share_total", "CoAP telemetry refused because its endpoint's share of the spool was full.", cst.RefusedShare.Load)
	counter("coap_spool_write_errors_total", "Failed CoAP spool writes or fsyncs.", cst.WriteErrors.Load)
	if cu, ok := s.up.(*clientUplink); ok {
		registerUplink(preg, cu)
		if s.crlf != nil {
			preg.MustRegister(s.crlf.fetches)
		}
	}
	counter("ipstack_packets_out_total", "IP packets to the uplink.", st.Stats.PacketsOut.Load)
	counter("ipstack_packets_in_total", "IP packets from the uplink.", st.Stats.PacketsIn.Load)
	counter("ipstack_route_no_endpoint_total", "UDP datagrams for a site-prefix address and port nobody serves (dropped; ICMP port unreachable rate-limited).", st.Stats.Route.NoEndpoint.Load)
	counter("ipstack_route_unreachables_total", "ICMP port unreachables sent for them.", st.Stats.Route.Unreachables.Load)
	counter("ipstack_route_not_routed_total", "Unicast packets for an address neither the bridge's nor in the site prefix (dropped).", st.Stats.Route.NotRouted.Load)
	counter("ipstack_route_malformed_total", "UDP to the site prefix with a bad header, length or checksum (dropped).", st.Stats.Route.Malformed.Load)
	counter("ipstack_route_fragments_total", "Fragmented UDP to the site prefix (dropped, not reassembled).", st.Stats.Route.Fragments.Load)
	counter("ipstack_route_conn_queue_full_total", "Datagrams dropped because an upstream conn's queue was full.", st.Stats.Route.ConnQueueFull.Load)
	counter("proxy_demuxed_total", "Central to endpoint datagrams handed to an endpoint by the demultiplexer.", px.Stats.Demuxed.Load)
	counter("proxy_duplicates_total", "Central requests received again within EXCHANGE_LIFETIME (not relayed again).", px.Stats.Duplicates.Load)
	counter("proxy_duplicates_answered_total", "Duplicate central requests answered with the recorded answer.", px.Stats.DuplicatesAnswered.Load)
	counter("proxy_dedup_evicted_total", "Central requests forgotten early: the endpoint's dedup table was full.", px.Stats.DedupEvicted.Load)
	counter("proxy_overload_endpoint_total", "Requests answered 5.03: the endpoint had downlink.nstart exchanges in flight.", px.Stats.OverloadEndpoint.Load)
	counter("proxy_overload_bridge_total", "Requests answered 5.03: the bridge had downlink.max_in_flight exchanges in flight.", px.Stats.OverloadBridge.Load)
	preg.MustRegister(endpointCollector{reg: s.reg, srv: srv, px: px})
	if s.ms != nil {
		preg.MustRegister(relayCollector{s.ms})
	}
	return preg
}
