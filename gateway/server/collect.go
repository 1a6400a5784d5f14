package server

import (
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"

	"github.com/fleetgate/fleetgate/gateway/dataplane"
	"github.com/fleetgate/fleetgate/gateway/metrics"
)

// newRegistry makes the server's own registry (never the global default
// one, so several servers in one process, as in tests, keep their series
// apart): the gateway counters, the server's collector, and the Go runtime
// and process collectors.
func (s *Server) newRegistry() *prometheus.Registry {
	r := prometheus.NewRegistry()
	r.MustRegister(s.gm, serverCollector{s}, bgpCollector{s}, radiusFleetCollector{s}, crlCollector{s}, ocspCollector{s},
		collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	// An engine with gauges of its own (gateway/engine: IKE half-open).
	if c, ok := s.opts.Engine.(prometheus.Collector); ok {
		r.MustRegister(c)
	}
	return r
}

func desc(name, help string, labels ...string) *prometheus.Desc {
	return prometheus.NewDesc(name, help, labels, nil)
}

var (
	descSessionsActive = desc("fleetgate_sessions_active", "Established sessions.")
	descPoolInUse      = desc("fleetgate_pool_addresses_in_use", "Dynamic pool addresses in use.")
	descPoolFree       = desc("fleetgate_pool_addresses_free", "Pool addresses still free.")
	descPool6InUse     = desc("fleetgate_pool6_prefixes_in_use", "IPv6 /64s of pool.ipv6_prefix handed to sessions.")
	descPool6Max       = desc("fleetgate_pool6_prefixes_max", "Bound on IPv6 /64s handed out at once (pool.ipv6_max).")
	descPool6Exhausted = desc("fleetgate_pool6_exhausted_total", "Sessions that got no IPv6 /64 (pool full or at pool.ipv6_max) and went on IPv4 only.")
	descDrops          = desc("fleetgate_dataplane_drops_total", "Packets dropped by the router, by reason.", "reason")
	descFromSession    = desc("fleetgate_dataplane_from_session_packets_total", "Packets received from sessions.")
	descFromHost       = desc("fleetgate_dataplane_from_host_packets_total", "Packets received from the host (TUN or userspace).")
	descToHost         = desc("fleetgate_dataplane_to_host_packets_total", "Packets forwarded to the host.")
	descToSession      = desc("fleetgate_dataplane_to_session_packets_total", "Packets forwarded to sessions.")
	descMSSClamped     = desc("fleetgate_dataplane_mss_clamped_total", "TCP SYNs whose MSS was lowered.")
	descICMPSent       = desc("fleetgate_dataplane_icmp_sent_total", "ICMP errors generated (fragmentation needed, time exceeded).")
	descICMPLimited    = desc("fleetgate_dataplane_icmp_ratelimited_total", "ICMP errors suppressed by the rate limit.")
	descFragmented     = desc("fleetgate_dataplane_fragmented_total", "Packets fragmented to fit a session MTU.")
	descDHCPInform     = desc("fleetgate_dhcpinform_answered_total", "DHCPINFORM requests answered with classless routes.")
	descAdmitted       = desc("fleetgate_admission_admitted_total", "New Main Modes admitted.")
	descRejected       = desc("fleetgate_admission_rejected_total", "New Main Modes refused by pacing, by limit.", "limit")
	descIDRxBytes      = desc("fleetgate_identity_rx_bytes_total", "Bytes received from an identity's sessions.", "identity")
	descIDTxBytes      = desc("fleetgate_identity_tx_bytes_total", "Bytes sent to an identity's sessions.", "identity")
	descIDRxPackets    = desc("fleetgate_identity_rx_packets_total", "Packets received from an identity's sessions.", "identity")
	descIDTxPackets    = desc("fleetgate_identity_tx_packets_total", "Packets sent to an identity's sessions.", "identity")
	descRadAccepts     = desc("fleetgate_radius_accepts_total", "RADIUS Access-Accepts.")
	descRadRejects     = desc("fleetgate_radius_rejects_total", "RADIUS Access-Rejects.")
	descRadTimeouts    = desc("fleetgate_radius_timeouts_total", "RADIUS requests without an answer.")
	descRadAcctSent    = desc("fleetgate_radius_accounting_sent_total", "Accounting records acknowledged.")
	descRadAcctFailed  = desc("fleetgate_radius_accounting_failed_total", "Accounting records not acknowledged.")
	descRadBusy        = desc("fleetgate_radius_busy_total", "RADIUS Access-Requests refused: limits.radius_in_flight already waiting.")
)

// serverCollector reads the session table, pool, router, admission and
// RADIUS counters at scrape time; nothing on the packet path changes.
type serverCollector struct{ s *Server }

// Describe implements prometheus.Collector.
func (serverCollector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{descSessionsActive, descPoolInUse, descPoolFree, descPool6InUse, descPool6Max, descPool6Exhausted, descDrops, descFromSession,
		descFromHost, descToHost, descToSession, descMSSClamped, descICMPSent, descICMPLimited, descFragmented,
		descDHCPInform, descAdmitted, descRejected, descIDRxBytes, descIDTxBytes, descIDRxPackets, descIDTxPackets,
		descRadAccepts, descRadRejects, descRadTimeouts, descRadAcctSent, descRadAcctFailed, descRadBusy} {
		ch <- d
	}
}

// Collect implements prometheus.Collector.
func (c serverCollector) Collect(ch chan<- prometheus.Metric) {
	s := c.s
	gauge := func(d *prometheus.Desc, v float64, labels ...string) {
		metrics.Emit(ch, d, prometheus.GaugeValue, v, labels...)
	}
	counter := func(d *prometheus.Desc, v uint64, labels ...string) {
		metrics.Emit(ch, d, prometheus.CounterValue, float64(v), labels...)
	}
	gauge(descSessionsActive, float64(s.table.Len()))
	p := s.pool.Load()
	gauge(descPoolInUse, float64(p.InUse()))
	gauge(descPoolFree, float64(p.Free()))
	if p6 := s.pool6.Load(); p6 != nil {
		gauge(descPool6InUse, float64(p6.InUse()))
		gauge(descPool6Max, float64(p6.Max()))
		counter(descPool6Exhausted, p6.Exhausted.Load())
	}
	st := &s.router.Stats
	for _, r := range dataplane.Reasons() {
		counter(descDrops, st.Drops(r), r.String())
	}
	counter(descFromSession, st.FromSessionPackets.Load())
	counter(descFromHost, st.FromHostPackets.Load())
	counter(descToHost, st.ToHostPackets.Load())
	counter(descToSession, st.ToSessionPackets.Load())
	counter(descMSSClamped, st.MSSClamped.Load())
	counter(descICMPSent, st.ICMPSent.Load())
	counter(descICMPLimited, st.ICMPRateLimited.Load())
	counter(descFragmented, st.Fragmented.Load())
	counter(descDHCPInform, st.LocalHandled.Load())
	counter(descAdmitted, s.adm.Stats.Admitted.Load())
	counter(descRejected, s.adm.Stats.RejectedSource.Load(), "source")
	counter(descRejected, s.adm.Stats.RejectedGlobal.Load(), "global")
	s.router.EachIdentity(func(name string, c *dataplane.Counters) {
		counter(descIDRxBytes, c.RxBytes.Load(), name)
		counter(descIDTxBytes, c.TxBytes.Load(), name)
		counter(descIDRxPackets, c.RxPackets.Load(), name)
		counter(descIDTxPackets, c.TxPackets.Load(), name)
	})
	if s.rad != nil {
		rs := &s.rad.Stats
		counter(descRadAccepts, rs.Accepts.Load())
		counter(descRadRejects, rs.Rejects.Load())
		counter(descRadTimeouts, rs.Timeouts.Load())
		counter(descRadAcctSent, rs.AcctSent.Load())
		counter(descRadAcctFailed, rs.AcctFailed.Load())
		counter(descRadBusy, rs.Busy.Load())
	}
}
