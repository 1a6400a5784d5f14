package status

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/url"
	"strings"
	"time"

	"github.com/fleetgate/fleetgate/internal/fleetview"
)

// TerminatePath is the control-socket-only endpoint that closes every
// session of an identity (POST, form value "identity").
const TerminatePath = "/control/sessions/terminate"

// SA is one row of `gateway sas`: the ESP SA pair carrying a session (the
// gateway runs transport mode only, one pair per L2TP session).
type SA struct {
	Identity string `json:"identity"`
	// Peer is the peer's outer address:port; Implementation the peer
	// implementation when recognised.
	Peer           string    `json:"peer,omitempty"`
	Implementation string    `json:"implementation,omitempty"`
	Suite          string    `json:"suite,omitempty"`
	Mode           string    `json:"mode"`
	Established    time.Time `json:"established"`
	RxPackets      uint64    `json:"rx_packets"`
	TxPackets      uint64    `json:"tx_packets"`
	// Rekeys counts the SAs' rekeys (-1: not known).
	Rekeys int64 `json:"rekeys"`
}

// SAs is the SA view of the sessions view.
func SAs(v fleetview.Sessions) []SA {
	out := []SA{}
	for _, s := range v.Sessions {
		out = append(out, SA{Identity: s.Identity, Peer: s.Outer, Implementation: s.Peer, Suite: s.Suite, Mode: "transport", Established: s.Since,
			RxPackets: s.RxPackets, TxPackets: s.TxPackets, Rekeys: s.Rekeys})
	}
	return out
}

// Terminated is the answer of TerminatePath.
type Terminated struct {
	Identity string `json:"identity"`
	Closed   int    `json:"closed"`
}

// TerminateHandler serves TerminatePath with terminate (which returns how
// many sessions it closed). Mount it on the unix control socket only.
func TerminateHandler(terminate func(identity string) int) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method != http.MethodPost {
			http.Error(w, "POST only", http.StatusMethodNotAllowed)
			return
		}
		id := r.FormValue("identity")
		if id == "" {
			http.Error(w, "identity is required", http.StatusBadRequest)
			return
		}
		w.Header().Set("Content-Type", "application/json")
		_ = json.NewEncoder(w).Encode(Terminated{Identity: id, Closed: terminate(id)})
	})
}

// Terminate asks the gateway behind the unix socket sock to close every
// session of identity and returns how many it closed.
func Terminate(ctx context.Context, sock, identity string) (int, error) {
	if strings.HasPrefix(sock, "http://") || strings.HasPrefix(sock, "https://") {
		return 0, errors.New("status: terminate works over the unix control socket only (status.socket)")
	}
	client := &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
		var d net.Dialer
		return d.DialContext(ctx, "unix", sock)
	}}}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, "http://gateway"+TerminatePath, strings.NewReader(url.Values{"identity": {identity}}.Encode()))
	if err != nil {
		return 0, err
	}
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	resp, err := client.Do(req)
	if err != nil {
		return 0, fmt.Errorf("status: is the gateway running? %w", err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return 0, errors.New("status: " + resp.Status)
	}
	var t Terminated
	if err := json.NewDecoder(resp.Body).Decode(&t); err != nil {
		return 0, fmt.Errorf("status: bad reply: %w", err)
	}
	return t.Closed, nil
}
