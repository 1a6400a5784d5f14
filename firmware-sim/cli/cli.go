// Package cli implements the firmware-sim command line: run, collect and
// creds.
package cli

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/signal"
	"path/filepath"
	"syscall"
	"time"

	coapnet "github.com/plgd-dev/go-coap/v3/net"
	"github.com/spf13/cobra"

	"github.com/fleetgate/fleetgate/firmware-sim/collector"
	"github.com/fleetgate/fleetgate/firmware-sim/creds"
	"github.com/fleetgate/fleetgate/firmware-sim/scenario"
	"github.com/fleetgate/fleetgate/firmware-sim/sim"
	"github.com/fleetgate/fleetgate/internal/cliutil"
)

// Main runs the command with args (without the program name) and returns
// the exit code: 0 success (and -h/--help, --version), 1 failure (e.g.
// nothing acknowledged), 2 usage error. The convention is internal/cliutil's.
func Main(args []string, stdout, stderr io.Writer) int {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	root := &cobra.Command{
		Use:   "firmware-sim command",
		Short: "Simulated MCU fleets (CoAP over DTLS, MQTT over TLS) and their central collector",
		Example: `  firmware-sim run -c configs/fleet-small.yaml --json report.json
  firmware-sim collect --coap :5683 --http :9464
  firmware-sim creds -c configs/fleet-demo.yaml -o creds.txt`,
		Args: cliutil.NoArgs,
		RunE: func(*cobra.Command, []string) error {
			return cliutil.Usagef("no command given (run, collect or creds)")
		},
	}
	root.AddCommand(runCommand(ctx, stdout, stderr), collectCommand(ctx, stdout, stderr), credsCommand(stdout))
	cliutil.Prepare(root, stdout, stderr)
	return cliutil.Execute(root, args)
}

func logger(stderr io.Writer, verbose bool) *slog.Logger {
	lvl := slog.LevelWarn
	if verbose {
		lvl = slog.LevelInfo
	}
	return slog.New(slog.NewTextHandler(stderr, &slog.HandlerOptions{Level: lvl}))
}

func runCommand(ctx context.Context, stdout, stderr io.Writer) *cobra.Command {
	c := &cobra.Command{Use: "run", Short: "Run a fleet: live summary, JSON report (exit 1 when nothing was acknowledged)", Args: cliutil.NoArgs}
	fs := c.Flags()
	file := fs.StringP("config", "c", "configs/fleet-small.yaml", "scenario file")
	dur := fs.Duration("duration", -1, "override the scenario's duration (0 = until Ctrl-C)")
	jsonOut := fs.String("json", "", "write the final JSON report here (- = stdout)")
	coapT := fs.String("coap", "", "override target.coap")
	mqttT := fs.String("mqtt", "", "override target.mqtt")
	colURL := fs.String("collector", "", "override collector.url (firmware-sim collect --http)")
	verbose := fs.BoolP("verbose", "v", false, "log device lifecycle")
	c.RunE = func(*cobra.Command, []string) error {
		sc, err := scenario.Load(*file)
		if err != nil {
			return err
		}
		if *dur >= 0 {
			sc.Duration = *dur
		}
		if *colURL != "" {
			sc.Collector.URL = *colURL
		}
		if *jsonOut != "" {
			sc.Report.JSON = *jsonOut
		}
		rep, err := sim.Run(ctx, sc, sim.Options{
			Logger: logger(stderr, *verbose), Live: stdout, CoAPTarget: *coapT, MQTTTarget: *mqttT,
		})
		if err != nil {
			return err
		}
		switch sc.Report.JSON {
		case "":
		case "-":
			if err := rep.WriteJSON(stdout); err != nil {
				return err
			}
		default:
			f, err := os.Create(sc.Report.JSON)
			if err != nil {
				return err
			}
			if err := rep.WriteJSON(f); err != nil {
				f.Close()
				return err
			}
			if err := f.Close(); err != nil {
				return err
			}
		}
		fmt.Fprintf(stdout, "done: %d/%d devices reporting, %d sent, %d acknowledged, %d lost (%s), %d handshakes\n",
			rep.Reporting, rep.Devices, rep.Totals.Sent, rep.Totals.Acked, rep.Lost, rep.LossSource, rep.Totals.Handshakes)
		if rep.Totals.Acked == 0 {
			return errors.New("no telemetry was acknowledged")
		}
		return nil
	}
	return c
}

func collectCommand(ctx context.Context, stdout, stderr io.Writer) *cobra.Command {
	c := &cobra.Command{Use: "collect", Short: "Central collector: CoAP/CoAPS sink, MQTT subscriber, HTTP stats", Args: cliutil.NoArgs}
	fs := c.Flags()
	coapAddr := fs.String("coap", "", "plain CoAP sink address, e.g. :5683")
	coapsAddr := fs.String("coaps", "", "DTLS CoAP sink address (needs --creds)")
	credsFile := fs.String("creds", "", "credentials file for --coaps PSKs")
	mqttURL := fs.String("mqtt", "", "broker to subscribe to, e.g. tls://127.0.0.1:8883")
	topic := fs.String("mqtt-topic", collector.DefaultTopic, "subscription filter")
	mqttCA := fs.String("mqtt-ca", "", "PEM CA for the broker (default: system roots)")
	mqttUser := fs.String("mqtt-user", "", "broker username")
	mqttPass := fs.String("mqtt-password-file", "", "file holding the broker password")
	httpAddr := fs.String("http", "127.0.0.1:9464", "status endpoint (JSON)")
	every := fs.Duration("every", 5*time.Second, "print totals this often")
	verbose := fs.BoolP("verbose", "v", false, "log each message")
	c.RunE = func(*cobra.Command, []string) error {
		if *coapAddr == "" && *coapsAddr == "" && *mqttURL == "" {
			return cliutil.UsageError{Err: errors.New("collect: give at least one of --coap, --coaps, --mqtt")}
		}
		log := logger(stderr, *verbose)
		col := collector.New(collector.Config{Logger: log, OnTelemetry: func(s collector.Sample) {
			log.Info("telemetry", "device", s.Telemetry.Device, "seq", s.Telemetry.Seq, "source", s.Source, "peer", s.From, "duplicate", s.Duplicate)
		}})
		errc := make(chan error, 4)
		if *coapAddr != "" {
			conn, err := coapnet.NewListenUDP("udp", *coapAddr)
			if err != nil {
				return err
			}
			defer conn.Close()
			go func() { errc <- col.ServeCoAP(ctx, conn) }()
			fmt.Fprintf(stdout, "coap sink on %s\n", conn.LocalAddr())
		}
		if *coapsAddr != "" {
			if *credsFile == "" {
				return cliutil.UsageError{Err: errors.New("collect: --coaps needs --creds")}
			}
			set, err := creds.LoadFile(*credsFile)
			if err != nil {
				return err
			}
			l, err := collector.ListenDTLS(collector.DTLSConfig{Addr: *coapsAddr, Creds: set, CID: true})
			if err != nil {
				return err
			}
			defer l.Close()
			go func() { errc <- col.ServeCoAPDTLS(ctx, l) }()
			fmt.Fprintf(stdout, "coaps sink on %s\n", l.Addr())
		}
		if *mqttURL != "" {
			tc := &tls.Config{MinVersion: tls.VersionTLS12}
			if *mqttCA != "" {
				pemb, err := os.ReadFile(*mqttCA)
				if err != nil {
					return err
				}
				tc.RootCAs = x509.NewCertPool()
				tc.RootCAs.AppendCertsFromPEM(pemb)
			}
			mc := collector.MQTTConfig{Broker: *mqttURL, Topic: *topic, TLS: tc, Username: *mqttUser}
			if *mqttPass != "" {
				b, err := os.ReadFile(*mqttPass)
				if err != nil {
					return err
				}
				mc.Password = string(trimNL(b))
			}
			if err := col.SubscribeMQTT(ctx, mc); err != nil {
				return err
			}
			fmt.Fprintf(stdout, "subscribed to %s on %s\n", *topic, *mqttURL)
		}
		if *httpAddr != "" {
			ln, err := net.Listen("tcp", *httpAddr)
			if err != nil {
				return err
			}
			srv := &http.Server{Handler: col, ReadHeaderTimeout: 5 * time.Second}
			go func() { _ = srv.Serve(ln) }()
			defer srv.Close()
			fmt.Fprintf(stdout, "status on http://%s/stats\n", ln.Addr())
		}
		t := time.NewTicker(*every)
		defer t.Stop()
		for {
			select {
			case <-ctx.Done():
				tot := col.Total()
				fmt.Fprintf(stdout, "final: %d devices, received %d, unique %d, duplicates %d, gaps %d, reordered %d, malformed %d\n",
					len(col.Names()), tot.Received, tot.Unique, tot.Duplicates, tot.Gaps, tot.Reordered, tot.Malformed)
				return nil
			case err := <-errc:
				if err != nil {
					return err
				}
			case <-t.C:
				tot := col.Total()
				fmt.Fprintf(stdout, "devices=%d received=%d unique=%d dup=%d gaps=%d reordered=%d malformed=%d\n",
					len(col.Names()), tot.Received, tot.Unique, tot.Duplicates, tot.Gaps, tot.Reordered, tot.Malformed)
			}
		}
	}
	return c
}

func trimNL(b []byte) []byte {
	for len(b) > 0 && (b[len(b)-1] == '\n' || b[len(b)-1] == '\r') {
		b = b[:len(b)-1]
	}
	return b
}

// credsCmd writes the fleet's generated credentials in the creds file
// format (PSK and MQTT entries; cert entries with PEM files in --cert-dir).
func credsCommand(stdout io.Writer) *cobra.Command {
	c := &cobra.Command{Use: "creds", Short: "Print (or write with -o) the fleet's generated credentials file", Args: cliutil.NoArgs}
	fs := c.Flags()
	file := fs.StringP("config", "c", "configs/fleet-small.yaml", "scenario file")
	out := fs.StringP("output", "o", "-", "output file (mode 0600), - = stdout")
	certDir := fs.String("cert-dir", "", "directory for generated certificate PEM files (needed when the fleet has cert devices)")
	c.RunE = func(*cobra.Command, []string) error {
		sc, err := scenario.Load(*file)
		if err != nil {
			return err
		}
		sc.Credentials.File = ""
		f, err := sim.NewFleet(sc, sim.Options{})
		if err != nil {
			return err
		}
		set := f.Creds()
		outSet := creds.NewSet()
		for _, n := range set.Names() {
			e, _ := set.Get(n)
			c := *e
			if c.Kind == creds.KindCert {
				if *certDir == "" {
					return cliutil.UsageError{Err: fmt.Errorf("creds: %s has a certificate: give --cert-dir", n)}
				}
				if err := writeCert(*certDir, &c); err != nil {
					return err
				}
			}
			if err := outSet.Add(c); err != nil {
				return err
			}
		}
		if ca := f.CA(); ca != nil && *certDir != "" {
			if err := os.WriteFile(filepath.Join(*certDir, "ca.pem"), ca.CertPEM(), 0o644); err != nil {
				return err
			}
		}
		if *out == "-" {
			return outSet.Write(stdout)
		}
		w, err := os.OpenFile(*out, os.O_CREATE|os.O_WRONLY|os.O_TRUNC, 0o600)
		if err != nil {
			return err
		}
		if err := outSet.Write(w); err != nil {
			w.Close()
			return err
		}
		return w.Close()
	}
	return c
}

func writeCert(dir string, e *creds.Entry) error {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return err
	}
	certPEM, keyPEM, err := creds.PEM(e.Cert)
	if err != nil {
		return err
	}
	e.CertFile = filepath.Join(dir, e.Name+".pem")
	e.KeyFile = filepath.Join(dir, e.Name+".key")
	if err := os.WriteFile(e.CertFile, certPEM, 0o644); err != nil {
		return err
	}
	return os.WriteFile(e.KeyFile, keyPEM, 0o600)
}
