package sim

import (
	"context"
	"encoding/json"
	"net/http"
	"sync"
	"time"

	"github.com/fleetgate/fleetgate/firmware-sim/collector"
	"github.com/fleetgate/fleetgate/firmware-sim/report"
)

// HTTPCollector reads a `firmware-sim collect` status endpoint. A failed
// fetch keeps the last good snapshot.
type HTTPCollector struct {
	// URL is the status endpoint, e.g. http://127.0.0.1:9464/stats.
	URL string

	mu   sync.Mutex // guards last
	last map[string]report.SeqStats
}

// Snapshot fetches the per-device stats (2 s timeout).
func (h *HTTPCollector) Snapshot() map[string]report.SeqStats {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	h.mu.Lock()
	defer h.mu.Unlock()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, h.URL, nil)
	if err != nil {
		return h.last
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return h.last
	}
	defer resp.Body.Close()
	var st collector.Status
	if resp.StatusCode == http.StatusOK && json.NewDecoder(resp.Body).Decode(&st) == nil {
		h.last = st.Devices
	}
	return h.last
}
