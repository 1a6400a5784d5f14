package engine

import "github.com/prometheus/client_golang/prometheus"

var descHalfOpen = prometheus.NewDesc("fleetgate_ike_half_open",
	"IKE Main Modes not yet established: waiting for their third message (bounded by limits.ike_half_open, oldest evicted) or negotiating past it (limits.ike_negotiating).",
	[]string{"state"}, nil)

// Describe implements prometheus.Collector; the server registers an
// Engine that is one.
func (e *Engine) Describe(ch chan<- *prometheus.Desc) { ch <- descHalfOpen }

// Collect implements prometheus.Collector: the half-open gauges, read at
// scrape time.
func (e *Engine) Collect(ch chan<- prometheus.Metric) {
	srv := e.Tunnel()
	if srv == nil {
		return
	}
	w, n := srv.IKEHalfOpen()
	ch <- prometheus.MustNewConstMetric(descHalfOpen, prometheus.GaugeValue, float64(w), "waiting")
	ch <- prometheus.MustNewConstMetric(descHalfOpen, prometheus.GaugeValue, float64(n), "negotiating")
}
