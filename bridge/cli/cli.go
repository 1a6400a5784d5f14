// Package cli is the edge bridge's command line on the project's one CLI
// convention (internal/cliutil, spf13/cobra); bridge/main.go is a thin
// wrapper around Main. -c FILE may stand before or after the verb.
//
//	bridge run -c FILE                 run the daemon (SIGHUP reloads endpoints, SIGTERM stops)
//	bridge --check-config FILE         validate FILE and exit
//	bridge -c FILE endpoint add NAME [--protocol coap|mqtt] [--cert] [--allow DST]…
//	bridge -c FILE endpoint list|remove NAME|revoke NAME
//	bridge -c FILE status|endpoints [--json]|uplink [--json]   (control socket of the running bridge;
//	                                   --json of endpoints/uplink = the status page's /api views)
//	bridge --version
package cli

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/signal"
	"syscall"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/fleetgate/fleetgate/bridge/config"
	"github.com/fleetgate/fleetgate/bridge/daemon"
	"github.com/fleetgate/fleetgate/downlink/registry"
	"github.com/fleetgate/fleetgate/internal/cliutil"
	"github.com/fleetgate/fleetgate/internal/fleetview"
	"github.com/fleetgate/fleetgate/version"
)

// DefaultConfig is the configuration file used without -c.
const DefaultConfig = "/etc/fleetgate/bridge.yaml"

// Main runs the command line args (without the program name) and returns
// the exit status: 0 success (and -h/--help, --version), 1 failure, 2
// usage error.
func Main(args []string, stdout, stderr io.Writer) int {
	root := newRoot(stderr)
	cliutil.Prepare(root, stdout, stderr)
	return cliutil.Execute(root, args)
}

func newRoot(stderr io.Writer) *cobra.Command {
	var path string
	var check bool
	load := func() (*config.Config, error) { return config.Load(path) }
	root := &cobra.Command{
		Use:   "bridge [-c FILE] command",
		Short: "fleetgate edge bridge",
		Long: `fleetgate edge bridge: DTLS/CoAP and MQTT/TLS for the site's devices, each
from its own VPN address over the L2TP/IPsec uplink.

-c FILE names the configuration (default ` + DefaultConfig + `) and may stand
before or after the command. status, endpoints and uplink ask the running
bridge over its unix control socket (control_socket, default
<state_dir>/control.sock).`,
		Args: cobra.ArbitraryArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			if check {
				return checkConfig(cmd, path, args)
			}
			if len(args) > 0 {
				return cliutil.NoArgs(cmd, args)
			}
			return cmd.Help()
		},
	}
	root.PersistentFlags().StringVarP(&path, "config", "c", DefaultConfig, "configuration file")
	root.Flags().BoolVar(&check, "check-config", false, "validate the configuration (FILE or -c) and every file it names, then exit")
	root.AddCommand(
		&cobra.Command{
			Use:   "run",
			Short: "Run the bridge daemon (SIGHUP reloads endpoints, SIGTERM stops)",
			Args:  cliutil.NoArgs,
			RunE: func(*cobra.Command, []string) error {
				cfg, err := load()
				if err != nil {
					return err
				}
				return runDaemon(cfg, stderr)
			},
		},
		&cobra.Command{
			Use:   "check-config [FILE]",
			Short: "Validate a configuration (FILE or -c) and every file it names, then exit",
			Args:  cliutil.Args(cobra.MaximumNArgs(1)),
			RunE:  func(cmd *cobra.Command, args []string) error { return checkConfig(cmd, path, args) },
		},
		endpointCmd(load),
		statusCmd(load),
		endpointsCmd(load),
		uplinkCmd(load),
	)
	return root
}

func checkConfig(cmd *cobra.Command, path string, args []string) error {
	if len(args) > 1 {
		return cliutil.Usagef("check-config takes one FILE, got %d", len(args))
	}
	if len(args) == 1 {
		path = args[0]
	}
	_, warnings, err := config.Check(path, time.Now())
	for _, w := range warnings {
		fmt.Fprintln(cmd.ErrOrStderr(), w)
	}
	if err != nil {
		return err
	}
	fmt.Fprintf(cmd.OutOrStdout(), "%s: ok\n", path)
	return nil
}

func runDaemon(cfg *config.Config, stderr io.Writer) error {
	var lvl slog.Level
	if err := lvl.UnmarshalText([]byte(cfg.LogLevel)); err != nil {
		return fmt.Errorf("log_level: %w", err)
	}
	var h slog.Handler = slog.NewJSONHandler(stderr, &slog.HandlerOptions{Level: lvl})
	if cfg.LogFormat == "text" {
		h = slog.NewTextHandler(stderr, &slog.HandlerOptions{Level: lvl})
	}
	log := slog.New(h)
	log.Info("fleetgate bridge", "version", version.String(), "site", cfg.Site)
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	hup := make(chan os.Signal, 1)
	signal.Notify(hup, syscall.SIGHUP)
	defer signal.Stop(hup)
	return daemon.RunWith(ctx, cfg, log, daemon.Options{Reload: hup})
}

func endpointCmd(load func() (*config.Config, error)) *cobra.Command {
	ep := &cobra.Command{
		Use:   "endpoint",
		Short: "Provision endpoints: add, list, remove, revoke (then SIGHUP the running bridge)",
	}
	var proto string
	var cert bool
	var allow []string
	add := &cobra.Command{
		Use:   "add NAME",
		Short: "Provision an endpoint: address, credentials, firmware snippet on stdout",
		Args:  cliutil.ExactArgs("NAME"),
		RunE: func(cmd *cobra.Command, args []string) error {
			if proto != string(registry.CoAP) && proto != string(registry.MQTT) {
				return cliutil.Usagef("--protocol must be coap or mqtt, not %q", proto)
			}
			cfg, err := load()
			if err != nil {
				return err
			}
			return endpointAdd(cfg, args[0], registry.Protocol(proto), cert, allow, cmd.OutOrStdout(), cmd.ErrOrStderr())
		},
	}
	add.Flags().StringVar(&proto, "protocol", "coap", "coap or mqtt")
	add.Flags().BoolVar(&cert, "cert", false, "issue an ECDSA P-256 certificate instead of a PSK")
	add.Flags().StringArrayVar(&allow, "allow", nil, "extra upstream destination (host:port, CIDR or *); repeatable")
	list := &cobra.Command{
		Use:   "list",
		Short: "List provisioned endpoints (from the state directory; creates nothing)",
		Args:  cliutil.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			cfg, err := load()
			if err != nil {
				return err
			}
			return endpointList(cfg, cmd.OutOrStdout())
		},
	}
	remove := &cobra.Command{
		Use:   "remove NAME",
		Short: "Remove an endpoint and free its address (then SIGHUP)",
		Args:  cliutil.ExactArgs("NAME"),
		RunE: func(cmd *cobra.Command, args []string) error {
			cfg, err := load()
			if err != nil {
				return err
			}
			return endpointRemove(cfg, args[0], cmd.ErrOrStderr())
		},
	}
	revoke := &cobra.Command{
		Use:   "revoke NAME",
		Short: "Put an endpoint's certificate on the site CRL and remove it (then SIGHUP)",
		Args:  cliutil.ExactArgs("NAME"),
		RunE: func(cmd *cobra.Command, args []string) error {
			cfg, err := load()
			if err != nil {
				return err
			}
			return endpointRevoke(cfg, args[0], cmd.ErrOrStderr())
		},
	}
	ep.AddCommand(add, list, remove, revoke)
	return ep
}

func endpointAdd(cfg *config.Config, name string, proto registry.Protocol, cert bool, allow []string, stdout, stderr io.Writer) error {
	reg, ca, err := daemon.OpenRegistry(cfg)
	if err != nil {
		return err
	}
	p, err := registry.Provision(reg, ca, registry.Request{Name: name, Protocol: proto, Cert: cert, Allow: allow})
	if err != nil {
		return err
	}
	host := cfg.Downlink.AdvertHost
	if host == "" {
		host = "BRIDGE-LAN-ADDRESS"
	}
	fmt.Fprint(stdout, registry.Snippet(p, registry.SnippetParams{BridgeHost: host, CoAPPort: 5684, MQTTPort: 8883}))
	fmt.Fprintf(stderr, "endpoint %s added with address %s (send the bridge SIGHUP to serve it)\n", name, p.Endpoint.Addr)
	return nil
}

// endpointRemove deletes an endpoint from the registry; the running
// bridge drops its session, observations, queue and address on SIGHUP.
func endpointRemove(cfg *config.Config, name string, stderr io.Writer) error {
	reg, err := daemon.ReadRegistry(cfg)
	if err != nil {
		return err
	}
	ep, ok := reg.ByName(name)
	if !ok {
		return fmt.Errorf("no endpoint %q", name)
	}
	if err := reg.Remove(name); err != nil {
		return err
	}
	fmt.Fprintf(stderr, "endpoint %s removed, address %s freed (send the bridge SIGHUP to apply)\n", name, ep.Addr)
	return nil
}

// endpointRevoke puts an endpoint's certificate on the site CRL (the site
// CA's crl.pem, for anyone who verifies site certificates) and removes the
// endpoint; the running bridge cuts it off on SIGHUP.
func endpointRevoke(cfg *config.Config, name string, stderr io.Writer) error {
	reg, ca, err := daemon.OpenRegistry(cfg)
	if err != nil {
		return err
	}
	ep, ok := reg.ByName(name)
	if !ok {
		return fmt.Errorf("no endpoint %q", name)
	}
	if ep.CertSerial == "" {
		return fmt.Errorf("endpoint %q has no recorded certificate (a PSK endpoint, or provisioned before serials were recorded): use endpoint remove", name)
	}
	rl, err := ca.Revoke(ep.CertSerial, time.Now())
	if err != nil {
		return err
	}
	if err := reg.Remove(name); err != nil {
		return err
	}
	fmt.Fprintf(stderr, "endpoint %s revoked: certificate serial %s on the site CRL %s (%d revoked, CRL number %v), endpoint removed, address %s freed (send the bridge SIGHUP to apply)\n",
		name, ep.CertSerial, ca.CRLPath(), len(rl.RevokedCertificateEntries), rl.Number, ep.Addr)
	return nil
}

func endpointList(cfg *config.Config, stdout io.Writer) error {
	reg, err := daemon.ReadRegistry(cfg)
	if err != nil {
		return err
	}
	tw := tabwriter.NewWriter(stdout, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "NAME\tADDRESS\tPROTO")
	for _, ep := range reg.List() {
		a := ep.Addr.String()
		if ep.Addr6.IsValid() {
			a += "," + ep.Addr6.String()
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\n", ep.Name, a, ep.Protocol)
	}
	return tw.Flush()
}

// fetchStatus asks the running bridge for /status over its control socket
// (or, when that socket does not exist, the HTTP listener on loopback).
func fetchStatus(cfg *config.Config) (daemon.Status, error) {
	var st daemon.Status
	sock := cfg.ControlSocketPath()
	c := &http.Client{Timeout: 5 * time.Second}
	url := "http://" + cfg.Listen + "/status"
	if _, err := os.Stat(sock); err == nil {
		c.Transport = &http.Transport{DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
			var d net.Dialer
			return d.DialContext(ctx, "unix", sock)
		}}
		url = "http://bridge/status"
	}
	resp, err := c.Get(url)
	if err != nil {
		return st, fmt.Errorf("bridge not running? %w", err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return st, errors.New("status: " + resp.Status)
	}
	if err := json.NewDecoder(resp.Body).Decode(&st); err != nil {
		return st, fmt.Errorf("status: bad reply: %w", err)
	}
	if st.Endpoints == nil {
		st.Endpoints = []daemon.EndpointStatus{}
	}
	return st, nil
}

func jsonOut(w io.Writer, v any) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(v)
}

func statusCmd(load func() (*config.Config, error)) *cobra.Command {
	var asJSON bool
	c := &cobra.Command{
		Use:   "status",
		Short: "Show the running bridge: uplink and every endpoint",
		Args:  cliutil.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			cfg, err := load()
			if err != nil {
				return err
			}
			st, err := fetchStatus(cfg)
			if err != nil {
				return err
			}
			if asJSON {
				return jsonOut(cmd.OutOrStdout(), st)
			}
			writeUplink(cmd.OutOrStdout(), st)
			return writeEndpoints(cmd.OutOrStdout(), st.Endpoints)
		},
	}
	c.Flags().BoolVar(&asJSON, "json", false, "print the JSON status")
	return c
}

// fetchView gets a status-page view (internal/fleetview) from the running
// bridge's control socket, or, when that socket does not exist, /api/name
// of the HTTP listener (status page on, loopback).
func fetchView(cfg *config.Config, name string, v any) error {
	target := cfg.ControlSocketPath()
	if _, err := os.Stat(target); err != nil {
		target = "http://" + cfg.Listen
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	return fleetview.FetchView(ctx, target, name, v)
}

func endpointsCmd(load func() (*config.Config, error)) *cobra.Command {
	var asJSON bool
	c := &cobra.Command{
		Use:   "endpoints",
		Short: "List the running bridge's endpoints: online, sleeping, traffic, queues (swanctl --list-sas)",
		Long: `List the running bridge's endpoints over its control socket. --json prints
the endpoints view, the same JSON the status page serves as /api/endpoints
(internal/fleetview.Endpoints).`,
		Args: cliutil.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			cfg, err := load()
			if err != nil {
				return err
			}
			var v fleetview.Endpoints
			if err := fetchView(cfg, "endpoints", &v); err != nil {
				return err
			}
			if v.Endpoints == nil {
				v.Endpoints = []fleetview.Endpoint{}
			}
			if asJSON {
				return jsonOut(cmd.OutOrStdout(), v)
			}
			tw := tabwriter.NewWriter(cmd.OutOrStdout(), 0, 4, 2, ' ', 0)
			fmt.Fprintln(tw, "NAME\tADDRESS\tPROTO\tSTATE\tLAST SEEN\tQUEUED\tSPOOLED\tBYTES IN\tBYTES OUT\tRELAY")
			for _, e := range v.Endpoints {
				state := "offline"
				switch {
				case e.Online:
					state = "online"
				case e.Sleeping:
					state = "sleeping"
				case e.Quiet:
					state = "quiet"
				}
				seen := "-"
				if !e.LastSeen.IsZero() {
					seen = e.LastSeen.Format(time.RFC3339)
				}
				fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%d\t%d/%dB\t%d\t%d\t%s\n", e.Name, addrs(e.Addr, e.Addr6), e.Protocol, state, seen, e.Queued, e.Spooled, e.SpoolBytes,
					e.BytesIn, e.BytesOut, dashIf(e.Relay))
			}
			return tw.Flush()
		},
	}
	c.Flags().BoolVar(&asJSON, "json", false, "print the endpoints view as JSON (as /api/endpoints)")
	return c
}

func dashIf(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

func uplinkCmd(load func() (*config.Config, error)) *cobra.Command {
	var asJSON bool
	c := &cobra.Command{
		Use:   "uplink",
		Short: "Show the running bridge's uplink to the gateway and its recent history",
		Long: `Show the uplink over the control socket. --json prints the uplink view, the
same JSON the status page serves as /api/uplink (internal/fleetview.Uplink).`,
		Args: cliutil.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			cfg, err := load()
			if err != nil {
				return err
			}
			var v fleetview.Uplink
			if err := fetchView(cfg, "uplink", &v); err != nil {
				return err
			}
			if v.History == nil {
				v.History = []fleetview.UplinkEvent{}
			}
			if asJSON {
				return jsonOut(cmd.OutOrStdout(), v)
			}
			w := cmd.OutOrStdout()
			fmt.Fprintf(w, "uplink: %s (%s)\n", v.State, v.Detail)
			if v.Gateway != "" {
				fmt.Fprintf(w, "gateway: %s  address: %s  suite: %s\n", v.Gateway, dashIf(v.Addr), dashIf(v.Suite))
			}
			if v.IPv6CP {
				fmt.Fprintf(w, "ipv6: IPV6CP up, link-local %s\n", v.LinkLocal6)
			}
			fmt.Fprintf(w, "attempts: %d  failures: %d  connects: %d\n", v.Attempts, v.Failures, v.Connects)
			for _, ev := range v.History {
				fmt.Fprintf(w, "  %s  %-10s %6ds  %s %s\n", ev.Time.Format(time.RFC3339), ev.State, ev.DurationSeconds, ev.Gateway, ev.Reason)
			}
			return nil
		},
	}
	c.Flags().BoolVar(&asJSON, "json", false, "print the uplink view as JSON (as /api/uplink)")
	return c
}

func writeUplink(w io.Writer, st daemon.Status) {
	fmt.Fprintf(w, "uplink: %s\n", st.Uplink)
	if st.SpoolAge > 0 {
		fmt.Fprintf(w, "spool: oldest message %s old\n", st.SpoolAge.Round(time.Second))
	}
}

func writeEndpoints(w io.Writer, eps []daemon.EndpointStatus) error {
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "NAME\tADDRESS\tPROTO\tONLINE\tLAST SEEN\tQUEUED\tBYTES IN\tBYTES OUT\tRELAY\tSPOOLED BYTES\tCOAP SPOOL")
	for _, e := range eps {
		seen := "-"
		if !e.LastSeen.IsZero() {
			seen = e.LastSeen.Format(time.RFC3339)
		}
		relay := e.Relay
		if relay == "" {
			relay = "-"
		}
		// CoAP telemetry answered 2.04 and waiting for central: messages/bytes.
		coapSpool := "-"
		if e.Protocol == "coap" {
			coapSpool = fmt.Sprintf("%d/%dB", e.Spooled, e.SpoolBytes)
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%v\t%s\t%d\t%d\t%d\t%s\t%d\t%s\n", e.Name, addrs(e.Addr, e.Addr6), e.Protocol, e.Online, seen, e.Queued, e.BytesIn, e.BytesOut, relay, e.BytesQueued, coapSpool)
	}
	return tw.Flush()
}

// addrs is an endpoint's address column: IPv4, and IPv6 when it has one.
func addrs(a4, a6 string) string {
	if a6 == "" {
		return a4
	}
	return a4 + "," + a6
}
