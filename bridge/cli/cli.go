// Package cli is the edge bridge's command line (bridge/main.go is a thin
// wrapper around Main):
//
//	bridge run -c FILE                 run the daemon (SIGHUP reloads endpoints, SIGTERM stops)
//	bridge --check-config FILE         validate FILE and exit
//	bridge -c FILE endpoint add NAME [--protocol coap|mqtt] [--cert] [--allow DST]…
//	bridge -c FILE endpoint list
//	bridge -c FILE endpoint remove NAME
//	bridge -c FILE endpoint revoke NAME
//	bridge -c FILE status
//	bridge --version
package cli

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
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
	"github.com/fleetgate/fleetgate/version"
)

// DefaultConfig is the configuration file used without -c.
const DefaultConfig = "/etc/fleetgate/bridge.yaml"

const usage = `usage:
  bridge run [-c FILE]
  bridge --check-config FILE
  bridge [-c FILE] endpoint add NAME [--protocol coap|mqtt] [--cert] [--allow DST]...
  bridge [-c FILE] endpoint list
  bridge [-c FILE] endpoint remove NAME   (then SIGHUP the running bridge)
  bridge [-c FILE] endpoint revoke NAME   (certificate onto the site CRL, endpoint removed; then SIGHUP)
  bridge [-c FILE] status
  bridge --version
`

// Main runs the command line args (without the program name) and returns
// the exit status.
func Main(args []string, stdout, stderr io.Writer) int {
	if err := run(args, stdout, stderr); err != nil {
		fmt.Fprintln(stderr, "bridge:", err)
		return 1
	}
	return 0
}

func run(args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("bridge", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() { fmt.Fprint(stderr, usage) }
	path := fs.String("c", DefaultConfig, "configuration file")
	fs.StringVar(path, "config", DefaultConfig, "configuration file")
	check := fs.String("check-config", "", "validate this configuration file and exit")
	showVersion := fs.Bool("version", false, "print the version and exit")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if *showVersion {
		fmt.Fprintln(stdout, version.String())
		return nil
	}
	if *check != "" {
		if _, err := config.Load(*check); err != nil {
			return err
		}
		fmt.Fprintf(stdout, "%s: ok\n", *check)
		return nil
	}
	rest := fs.Args()
	if len(rest) == 0 {
		fs.Usage()
		return errors.New("no command")
	}
	cmd, rest := rest[0], rest[1:]
	if cmd == "run" { // "run -c FILE", as the systemd unit says
		sub := flag.NewFlagSet("run", flag.ContinueOnError)
		sub.SetOutput(stderr)
		sub.StringVar(path, "c", *path, "configuration file")
		if err := sub.Parse(rest); err != nil {
			return err
		}
	}
	cfg, err := config.Load(*path)
	if err != nil {
		return err
	}
	switch {
	case cmd == "run":
		return runDaemon(cfg, stderr)
	case cmd == "endpoint" && len(rest) >= 2 && rest[0] == "add":
		return endpointAdd(cfg, rest[1], rest[2:], stdout, stderr)
	case cmd == "endpoint" && len(rest) == 1 && rest[0] == "list":
		return endpointList(cfg, stdout)
	case cmd == "endpoint" && len(rest) == 2 && rest[0] == "remove":
		return endpointRemove(cfg, rest[1], stderr)
	case cmd == "endpoint" && len(rest) == 2 && rest[0] == "revoke":
		return endpointRevoke(cfg, rest[1], stderr)
	case cmd == "status":
		return status(cfg, stdout)
	}
	fs.Usage()
	return fmt.Errorf("unknown command %q", strings.Join(append([]string{cmd}, rest...), " "))
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

type multi []string

func (m *multi) String() string     { return strings.Join(*m, ",") }
func (m *multi) Set(v string) error { *m = append(*m, v); return nil }

func endpointAdd(cfg *config.Config, name string, rest []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("endpoint add", flag.ContinueOnError)
	fs.SetOutput(stderr)
	proto := fs.String("protocol", "coap", "coap or mqtt")
	cert := fs.Bool("cert", false, "issue an ECDSA P-256 certificate instead of a PSK")
	var allow multi
	fs.Var(&allow, "allow", "extra upstream destination (host:port, CIDR or *); repeatable")
	if err := fs.Parse(rest); err != nil {
		return err
	}
	if *proto != string(device.CoAP) && *proto != string(device.MQTT) {
		return fmt.Errorf("--protocol must be coap or mqtt, not %q", *proto)
	}
	reg, ca, err := daemon.OpenRegistry(cfg)
	if err != nil {
		return err
	}
	p, err := device.Provision(reg, ca, device.Request{Name: name, Protocol: device.Protocol(*proto), Cert: *cert, Allow: allow})
	if err != nil {
		return err
	}
	host := cfg.Downlink.AdvertHost
	if host == "" {
		host = "BRIDGE-LAN-ADDRESS"
	}
	fmt.Fprint(stdout, device.Snippet(p, device.SnippetParams{BridgeHost: host, CoAPPort: 5684, MQTTPort: 8883}))
	fmt.Fprintf(stderr, "endpoint %s added with address %s (send the bridge SIGHUP to serve it)\n", name, p.Endpoint.Addr)
	return nil
}

// endpointRemove deletes an endpoint from the registry; the running
// bridge drops its session, observations, queue and address on SIGHUP.
func endpointRemove(cfg *config.Config, name string, stderr io.Writer) error {
	reg, _, err := daemon.OpenRegistry(cfg)
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
	reg, _, err := daemon.OpenRegistry(cfg)
	if err != nil {
		return err
	}
	tw := tabwriter.NewWriter(stdout, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "NAME\tADDRESS\tPROTO")
	for _, ep := range reg.List() {
		fmt.Fprintf(tw, "%s\t%s\t%s\n", ep.Name, ep.Addr, ep.Protocol)
	}
	return tw.Flush()
}

func status(cfg *config.Config, stdout io.Writer) error {
	c := &http.Client{Timeout: 3 * time.Second}
	resp, err := c.Get("http://" + cfg.Listen + "/status")
	if err != nil {
		return fmt.Errorf("bridge not running? %w", err)
	}
	defer resp.Body.Close()
	var st daemon.Status
	if err := json.NewDecoder(resp.Body).Decode(&st); err != nil {
		return err
	}
	fmt.Fprintf(stdout, "uplink: %s\n", st.Uplink)
	if st.SpoolAge > 0 {
		fmt.Fprintf(stdout, "spool: oldest message %s old\n", st.SpoolAge.Round(time.Second))
	}
	tw := tabwriter.NewWriter(stdout, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "NAME\tADDRESS\tPROTO\tONLINE\tLAST SEEN\tQUEUED\tBYTES IN\tBYTES OUT\tRELAY\tSPOOLED BYTES\tCOAP SPOOL")
	for _, e := range st.Endpoints {
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
		fmt.Fprintf(tw, "%s\t%s\t%s\t%v\t%s\t%d\t%d\t%d\t%s\t%d\t%s\n", e.Name, e.Addr, e.Protocol, e.Online, seen, e.Queued, e.BytesIn, e.BytesOut, relay, e.BytesQueued, coapSpool)
	}
	return tw.Flush()
}
