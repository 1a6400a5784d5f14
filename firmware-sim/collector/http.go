package collector

import (
	"encoding/json"
	"net/http"

	"github.com/fleetgate/fleetgate/firmware-sim/report"
)

// Status is the JSON served by ServeHTTP (and read by firmware-sim run
// when the scenario names a collector URL).
type Status struct {
	// Total sums every device.
	Total report.SeqStats `json:"total"`
	// Devices maps device name to its stats.
	Devices map[string]report.SeqStats `json:"devices"`
}

// Status returns the current totals and per-device stats.
func (c *Collector) Status() Status {
	return Status{Total: c.Total(), Devices: c.Snapshot()}
}

// ServeHTTP serves Status as JSON on any GET.
func (c *Collector) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if r.Method != http.MethodGet {
		http.Error(w, "GET only", http.StatusMethodNotAllowed)
		return
	}
	w.Header().Set("Content-Type", "application/json")
	_ = json.NewEncoder(w).Encode(c.Status())
}
