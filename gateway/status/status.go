// Package status is the gateway's session report: the JSON the running
// daemon serves on /status (metrics HTTP port and unix control socket),
// the client `gateway status` uses to fetch it, and the table it prints.
package status

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"sort"
	"strings"
	"text/tabwriter"
	"time"
)

// Session is one row of the report.
type Session struct {
	ID       uint64   `json:"id"`
	Identity string   `json:"identity"`
	Outer    string   `json:"outer,omitempty"` // peer's outer address:port
	VPNAddr  string   `json:"vpn_addr"`
	Routes   []string `json:"routes,omitempty"`
	// IPv6Prefix is the site's IPv6 prefix (identities.ipv6_prefix),
	// routed to the session beside its IPv4 routes.
	IPv6Prefix string    `json:"ipv6_prefix,omitempty"`
	Suite      string    `json:"suite,omitempty"`
	MTU        int       `json:"mtu"`
	RxBytes    uint64    `json:"rx_bytes"` // from the session (uplink)
	TxBytes    uint64    `json:"tx_bytes"` // to the session
	RxPackets  uint64    `json:"rx_packets"`
	TxPackets  uint64    `json:"tx_packets"`
	Since      time.Time `json:"since"`
}

// Report is what /status returns.
type Report struct {
	Now      time.Time         `json:"now"`
	Started  time.Time         `json:"started"`
	Engine   string            `json:"engine"` // session engine state
	Sessions []Session         `json:"sessions"`
	Drops    map[string]uint64 `json:"drops,omitempty"`
	// BGP is the speaker's state; nil when bgp is not configured.
	BGP *BGP `json:"bgp,omitempty"`
	// RADIUS is the AAA client's state; nil without a radius section.
	RADIUS *RADIUS `json:"radius,omitempty"`
	// CRL is the fleet revocation source's state; nil without pki.crl_url.
	CRL *CRL `json:"crl,omitempty"`
	// Pool is the address pools' use, both families (nil from an older
	// gateway).
	Pool *Pool `json:"pool,omitempty"`
}

// Pool is the address pools' part of the report: IPv4 addresses (IPCP)
// and, with pool.ipv6_prefix, IPv6 /64 site prefixes.
type Pool struct {
	Prefix string `json:"prefix"`
	InUse  int    `json:"in_use"`
	Free   int    `json:"free"`
	// IPv6Prefix is pool.ipv6_prefix ("" when unset); IPv6InUse /64s of it
	// are handed out, at most IPv6Max; IPv6Exhausted sessions got none.
	IPv6Prefix    string `json:"ipv6_prefix,omitempty"`
	IPv6InUse     int    `json:"ipv6_in_use,omitempty"`
	IPv6Max       int    `json:"ipv6_max,omitempty"`
	IPv6Exhausted uint64 `json:"ipv6_exhausted,omitempty"`
}

// CRL is the fleet CRL source's part of the report.
type CRL struct {
	URL        string    `json:"url"`
	NextUpdate time.Time `json:"next_update"`
	// Fetched and Failed count fetches since start.
	Fetched uint64 `json:"fetched"`
	Failed  uint64 `json:"failed"`
	// FailClosed: certificate logins are refused for want of a valid CRL.
	FailClosed bool `json:"fail_closed"`
}

// RADIUS is the RADIUS client's part of the report.
type RADIUS struct {
	// Servers maps host:port to whether it is considered alive.
	Servers map[string]bool `json:"servers"`
	// SpoolQueued accounting records wait for a server; SpoolDelivered
	// were acknowledged since start.
	SpoolQueued    int64  `json:"spool_queued"`
	SpoolDelivered uint64 `json:"spool_delivered"`
	// DAE is the bound Disconnect/CoA address ("" when off).
	DAE string `json:"dae,omitempty"`
}

// BGP is the BGP speaker's part of the report.
type BGP struct {
	LocalAS uint32 `json:"local_as"`
	// Announced is how many prefixes are announced now.
	Announced int           `json:"announced"`
	Neighbors []BGPNeighbor `json:"neighbors"`
}

// BGPNeighbor is one neighbour's session state.
type BGPNeighbor struct {
	Addr  string    `json:"addr"`
	AS    uint32    `json:"as"`
	State string    `json:"state"` // idle, connect, active, opensent, openconfirm, established
	Since time.Time `json:"since"`
}

// Handler serves the report as JSON.
func Handler(report func() Report) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		enc := json.NewEncoder(w)
		enc.SetIndent("", "  ")
		_ = enc.Encode(report())
	})
}

// Fetch gets the report from a unix socket path or an http:// URL (of the
// metrics listener; /status is appended when the URL has no path).
func Fetch(ctx context.Context, target string) (Report, error) {
	var r Report
	client := &http.Client{Timeout: 5 * time.Second}
	url := target
	if !strings.HasPrefix(target, "http://") && !strings.HasPrefix(target, "https://") {
		sock := target
		client.Transport = &http.Transport{DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
			var d net.Dialer
			return d.DialContext(ctx, "unix", sock)
		}}
		url = "http://gateway/status"
	} else if strings.Count(url, "/") == 2 {
		url += "/status"
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return r, fmt.Errorf("status: %w", err)
	}
	resp, err := client.Do(req)
	if err != nil {
		return r, fmt.Errorf("status: is the gateway running? %w", err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return r, errors.New("status: " + resp.Status)
	}
	if err := json.NewDecoder(resp.Body).Decode(&r); err != nil {
		return r, fmt.Errorf("status: bad reply: %w", err)
	}
	return r, nil
}

// WriteTable prints the report as a table.
func WriteTable(w io.Writer, r Report) error {
	fmt.Fprintf(w, "gateway up %s, engine %s, %d session(s)\n", fmtDur(r.Now.Sub(r.Started)), r.Engine, len(r.Sessions))
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "IDENTITY\tOUTER\tVPN ADDR\tROUTES\tSUITE\tMTU\tRX\tTX\tUPTIME")
	for _, s := range r.Sessions {
		rs := s.Routes
		if s.IPv6Prefix != "" {
			rs = append(rs[:len(rs):len(rs)], s.IPv6Prefix)
		}
		routes := strings.Join(rs, ",")
		if routes == "" {
			routes = "-"
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%d\t%s\t%s\t%s\n", s.Identity, dash(s.Outer), s.VPNAddr, routes, dash(s.Suite), s.MTU,
			fmtBytes(s.RxBytes), fmtBytes(s.TxBytes), fmtDur(r.Now.Sub(s.Since)))
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	if len(r.Drops) > 0 {
		keys := make([]string, 0, len(r.Drops))
		for k := range r.Drops {
			keys = append(keys, k)
		}
		sort.Strings(keys)
		parts := make([]string, len(keys))
		for i, k := range keys {
			parts[i] = fmt.Sprintf("%s=%d", k, r.Drops[k])
		}
		fmt.Fprintf(w, "drops: %s\n", strings.Join(parts, " "))
	}
	if p := r.Pool; p != nil {
		fmt.Fprintf(w, "pool: %s %d in use, %d free", p.Prefix, p.InUse, p.Free)
		if p.IPv6Prefix != "" {
			fmt.Fprintf(w, "; ipv6 %s %d /64s in use (max %d), %d sessions without one", p.IPv6Prefix, p.IPv6InUse, p.IPv6Max, p.IPv6Exhausted)
		}
		fmt.Fprintln(w)
	}
	if rd := r.RADIUS; rd != nil {
		keys := make([]string, 0, len(rd.Servers))
		for k := range rd.Servers {
			keys = append(keys, k)
		}
		sort.Strings(keys)
		parts := make([]string, len(keys))
		for i, k := range keys {
			state := "dead"
			if rd.Servers[k] {
				state = "up"
			}
			parts[i] = k + " " + state
		}
		dae := "off"
		if rd.DAE != "" {
			dae = rd.DAE
		}
		fmt.Fprintf(w, "radius: %s; accounting spool %d waiting, %d delivered; disconnect/coa %s\n", strings.Join(parts, ", "), rd.SpoolQueued, rd.SpoolDelivered, dae)
	}
	if c := r.CRL; c != nil {
		state := "valid until " + c.NextUpdate.UTC().Format(time.RFC3339)
		if c.NextUpdate.IsZero() {
			state = "none yet"
		}
		if c.FailClosed {
			state += ", FAIL-CLOSED: certificate logins refused"
		}
		fmt.Fprintf(w, "crl: %s %s (%d fetched, %d failed)\n", c.URL, state, c.Fetched, c.Failed)
	}
	if b := r.BGP; b != nil {
		up := 0
		for _, n := range b.Neighbors {
			if n.State == "established" {
				up++
			}
		}
		fmt.Fprintf(w, "bgp: AS %d, %d prefix(es) announced, %d of %d neighbor(s) established\n", b.LocalAS, b.Announced, up, len(b.Neighbors))
		tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
		fmt.Fprintln(tw, "  NEIGHBOR\tAS\tSTATE\tFOR")
		for _, n := range b.Neighbors {
			since := "-"
			if !n.Since.IsZero() {
				since = fmtDur(r.Now.Sub(n.Since))
			}
			fmt.Fprintf(tw, "  %s\t%d\t%s\t%s\n", n.Addr, n.AS, n.State, since)
		}
		return tw.Flush()
	}
	return nil
}

func dash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

func fmtBytes(b uint64) string {
	const unit = 1024
	if b < unit {
		return fmt.Sprintf("%d B", b)
	}
	div, exp := uint64(unit), 0
	for n := b / unit; n >= unit; n /= unit {
		div *= unit
		exp++
	}
	return fmt.Sprintf("%.1f %ciB", float64(b)/float64(div), "KMGTPE"[exp])
}

func fmtDur(d time.Duration) string {
	if d < 0 {
		d = 0
	}
	d = d.Truncate(time.Second)
	days := d / (24 * time.Hour)
	d -= days * 24 * time.Hour
	if days > 0 {
		return fmt.Sprintf("%dd%s", days, d)
	}
	return d.String()
}
