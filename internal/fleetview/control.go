package fleetview

import (
	"context"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"strings"
	"time"
)

// ViewPath prefixes the daemons' control-socket JSON views (these types,
// also served as /api/<view> by the status page):
// ViewPath+"sessions" on the gateway, +"endpoints" and +"uplink" on the
// bridge.
const ViewPath = "/control/view/"

// JSONHandler serves view() as indented JSON.
func JSONHandler(view func() any) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		enc := json.NewEncoder(w)
		enc.SetIndent("", "  ")
		_ = enc.Encode(view())
	})
}

// FetchView GETs a JSON view into v: from the unix socket target at
// ViewPath+name, or from an http:// target's status page at /api/name.
func FetchView(ctx context.Context, target, name string, v any) error {
	client := &http.Client{Timeout: 5 * time.Second}
	url := strings.TrimSuffix(target, "/") + "/api/" + name
	if !strings.HasPrefix(target, "http://") && !strings.HasPrefix(target, "https://") {
		sock := target
		client.Transport = &http.Transport{DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
			var d net.Dialer
			return d.DialContext(ctx, "unix", sock)
		}}
		url = "http://local" + ViewPath + name
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return fmt.Errorf("fleetview: %w", err)
	}
	resp, err := client.Do(req)
	if err != nil {
		return fmt.Errorf("fleetview: is the daemon running? %w", err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("fleetview: %s: %s", url, resp.Status)
	}
	if err := json.NewDecoder(resp.Body).Decode(v); err != nil {
		return fmt.Errorf("fleetview: bad reply: %w", err)
	}
	return nil
}
