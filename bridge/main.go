// Command bridge is the fleetgate edge bridge.
//
//	bridge [-config configs/bridge.yaml] [run]
//	bridge [-config …] endpoint add NAME [-protocol coap|mqtt] [-cert] [-allow DST]…
//	bridge [-config …] status
package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"log/slog"
	"net/http"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"text/tabwriter"
	"time"

	"github.com/fleetgate/fleetgate/bridge/config"
	"github.com/fleetgate/fleetgate/bridge/daemon"
	"github.com/fleetgate/fleetgate/downlink/device"
)

func main() {
	cfgPath := flag.String("config", "configs/bridge.yaml", "configuration file")
	flag.Parse()
	cfg, err := config.Load(*cfgPath)
	if err != nil {
		fatal(err)
	}
	args := flag.Args()
	switch {
	case len(args) == 0 || args[0] == "run":
		var lvl slog.Level
		_ = lvl.UnmarshalText([]byte(cfg.LogLevel))
		log := slog.New(slog.NewJSONHandler(os.Stderr, &slog.HandlerOptions{Level: lvl}))
		ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
		defer stop()
		if err := daemon.Run(ctx, cfg, log); err != nil {
			fatal(err)
		}
	case len(args) >= 3 && args[0] == "endpoint" && args[1] == "add":
		endpointAdd(cfg, args[2], args[3:])
	case args[0] == "status":
		status(cfg)
	default:
		fatal(fmt.Errorf("usage: bridge [-config FILE] [run | endpoint add NAME [-protocol coap|mqtt] [-cert] | status]"))
	}
}

type multi []string

func (m *multi) String() string     { return strings.Join(*m, ",") }
func (m *multi) Set(v string) error { *m = append(*m, v); return nil }

func endpointAdd(cfg *config.Config, name string, rest []string) {
	fs := flag.NewFlagSet("endpoint add", flag.ExitOnError)
	proto := fs.String("protocol", "coap", "coap or mqtt")
	cert := fs.Bool("cert", false, "issue an ECDSA P-256 certificate instead of a PSK")
	var allow multi
	fs.Var(&allow, "allow", "extra upstream destination (host:port, CIDR or *); repeatable")
	_ = fs.Parse(rest)
	reg, ca, err := daemon.OpenRegistry(cfg)
	if err != nil {
		fatal(err)
	}
	p, err := device.Provision(reg, ca, device.Request{Name: name, Protocol: device.Protocol(*proto), Cert: *cert, Allow: allow})
	if err != nil {
		fatal(err)
	}
	host := cfg.Downlink.AdvertHost
	if host == "" {
		host = "BRIDGE-LAN-ADDRESS"
	}
	fmt.Print(device.Snippet(p, device.SnippetParams{BridgeHost: host, CoAPPort: 5684, MQTTPort: 8883}))
	fmt.Fprintf(os.Stderr, "endpoint %s added with address %s (restart the bridge to serve it)\n", name, p.Endpoint.Addr)
}

func status(cfg *config.Config) {
	c := &http.Client{Timeout: 3 * time.Second}
	resp, err := c.Get("http://" + cfg.Listen + "/status")
	if err != nil {
		fatal(fmt.Errorf("bridge not running? %w", err))
	}
	defer resp.Body.Close()
	var st daemon.Status
	if err := json.NewDecoder(resp.Body).Decode(&st); err != nil {
		fatal(err)
	}
	fmt.Printf("uplink: %s\n", st.Uplink)
	tw := tabwriter.NewWriter(os.Stdout, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "NAME\tADDRESS\tPROTO\tONLINE\tLAST SEEN\tQUEUED\tBYTES IN\tBYTES OUT")
	for _, e := range st.Endpoints {
		seen := "-"
		if !e.LastSeen.IsZero() {
			seen = e.LastSeen.Format(time.RFC3339)
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%v\t%s\t%d\t%d\t%d\n", e.Name, e.Addr, e.Protocol, e.Online, seen, e.Queued, e.BytesIn, e.BytesOut)
	}
	tw.Flush()
}

func fatal(err error) {
	fmt.Fprintln(os.Stderr, "bridge:", err)
	os.Exit(1)
}
