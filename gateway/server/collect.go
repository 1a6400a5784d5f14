package server

import (
	"github.com/fleetgate/fleetgate/gateway/dataplane"
	"github.com/fleetgate/fleetgate/gateway/metrics"
)

func (s *Server) registerMetrics() {
	s.reg.Register(s.gm.Collect)
	s.reg.Register(func(w *metrics.Writer) {
		w.Add("fleetgate_sessions_active", metrics.Gauge, "Established sessions.", float64(s.table.Len()))
		p := s.pool.Load()
		w.Add("fleetgate_pool_addresses_in_use", metrics.Gauge, "Dynamic pool addresses in use.", float64(p.InUse()))
		w.Add("fleetgate_pool_addresses_free", metrics.Gauge, "Pool addresses still free.", float64(p.Free()))
		st := &s.router.Stats
		for _, r := range dataplane.Reasons() {
			w.Add("fleetgate_dataplane_drops_total", metrics.Counter, "Packets dropped by the router, by reason.", float64(st.Drops(r)), "reason", r.String())
		}
		for _, c := range []struct {
			name, help string
			v          uint64
		}{
			{"fleetgate_dataplane_from_session_packets_total", "Packets received from sessions.", st.FromSessionPackets.Load()},
			{"fleetgate_dataplane_from_host_packets_total", "Packets received from the host (TUN or userspace).", st.FromHostPackets.Load()},
			{"fleetgate_dataplane_to_host_packets_total", "Packets forwarded to the host.", st.ToHostPackets.Load()},
			{"fleetgate_dataplane_to_session_packets_total", "Packets forwarded to sessions.", st.ToSessionPackets.Load()},
			{"fleetgate_dataplane_mss_clamped_total", "TCP SYNs whose MSS was lowered.", st.MSSClamped.Load()},
			{"fleetgate_dataplane_icmp_sent_total", "ICMP errors generated (fragmentation needed, time exceeded).", st.ICMPSent.Load()},
			{"fleetgate_dataplane_icmp_ratelimited_total", "ICMP errors suppressed by the rate limit.", st.ICMPRateLimited.Load()},
			{"fleetgate_dataplane_fragmented_total", "Packets fragmented to fit a session MTU.", st.Fragmented.Load()},
			{"fleetgate_dhcpinform_answered_total", "DHCPINFORM requests answered with classless routes.", st.LocalHandled.Load()},
			{"fleetgate_admission_admitted_total", "New Main Modes admitted.", s.adm.Stats.Admitted.Load()},
		} {
			w.Add(c.name, metrics.Counter, c.help, float64(c.v))
		}
		w.Add("fleetgate_admission_rejected_total", metrics.Counter, "New Main Modes refused by pacing, by limit.", float64(s.adm.Stats.RejectedSource.Load()), "limit", "source")
		w.Add("fleetgate_admission_rejected_total", metrics.Counter, "New Main Modes refused by pacing, by limit.", float64(s.adm.Stats.RejectedGlobal.Load()), "limit", "global")
		s.router.EachIdentity(func(name string, c *dataplane.Counters) {
			w.Add("fleetgate_identity_rx_bytes_total", metrics.Counter, "Bytes received from an identity's sessions.", float64(c.RxBytes.Load()), "identity", name)
			w.Add("fleetgate_identity_tx_bytes_total", metrics.Counter, "Bytes sent to an identity's sessions.", float64(c.TxBytes.Load()), "identity", name)
			w.Add("fleetgate_identity_rx_packets_total", metrics.Counter, "Packets received from an identity's sessions.", float64(c.RxPackets.Load()), "identity", name)
			w.Add("fleetgate_identity_tx_packets_total", metrics.Counter, "Packets sent to an identity's sessions.", float64(c.TxPackets.Load()), "identity", name)
		})
		if s.rad != nil {
			rs := &s.rad.Stats
			w.Add("fleetgate_radius_accepts_total", metrics.Counter, "RADIUS Access-Accepts.", float64(rs.Accepts.Load()))
			w.Add("fleetgate_radius_rejects_total", metrics.Counter, "RADIUS Access-Rejects.", float64(rs.Rejects.Load()))
			w.Add("fleetgate_radius_timeouts_total", metrics.Counter, "RADIUS requests without an answer.", float64(rs.Timeouts.Load()))
			w.Add("fleetgate_radius_accounting_sent_total", metrics.Counter, "Accounting records acknowledged.", float64(rs.AcctSent.Load()))
			w.Add("fleetgate_radius_accounting_failed_total", metrics.Counter, "Accounting records not acknowledged.", float64(rs.AcctFailed.Load()))
		}
	})
}
