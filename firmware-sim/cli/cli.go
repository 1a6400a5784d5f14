// Package cli implements the firmware-sim command line: run, collect and
// creds.
package cli

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"flag"
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

	"github.com/fleetgate/fleetgate/firmware-sim/collector"
	"github.com/fleetgate/fleetgate/firmware-sim/creds"
	"github.com/fleetgate/fleetgate/firmware-sim/scenario"
	"github.com/fleetgate/fleetgate/firmware-sim/sim"
)

const usage = `usage:
  firmware-sim run     -c scenario.yaml [--duration D] [--json FILE|-] [--coap ADDR] [--mqtt ADDR] [--collector URL] [-v]
  firmware-sim collect [--coap ADDR] [--coaps ADDR --creds FILE] [--mqtt URL [--mqtt-topic F] [--mqtt-ca FILE]] [--http ADDR]
  firmware-sim creds   -c scenario.yaml [-o FILE] [--cert-dir DIR]
`

// Main runs the command with args (without the program name) and returns
// the exit code: 0 success, 1 failure (e.g. nothing acknowledged), 2 usage.
func Main(args []string, stdout, stderr io.Writer) int {
	if len(args) == 0 {
		fmt.Fprint(stderr, usage)
		return 2
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	var err error
	switch args[0] {
	case "run":
		err = runCmd(ctx, args[1:], stdout, stderr)
	case "collect":
		err = collectCmd(ctx, args[1:], stdout, stderr)
	case "creds":
		err = credsCmd(args[1:], stdout, stderr)
	case "-h", "--help", "help":
		fmt.Fprint(stdout, usage)
		return 0
	default:
		fmt.Fprintf(stderr, "firmware-sim: unknown command %q\n%s", args[0], usage)
		return 2
	}
	var ue usageError
	switch {
	case err == nil:
		return 0
	case errors.As(err, &ue), errors.Is(err, flag.ErrHelp):
		fmt.Fprintf(stderr, "firmware-sim: %v\n", err)
		return 2
	default:
		fmt.Fprintf(stderr, "firmware-sim: %v\n", err)
		return 1
	}
}

type usageError struct{ error }

func logger(stderr io.Writer, verbose bool) *slog.Logger {
	lvl := slog.LevelWarn
	if verbose {
		lvl = slog.LevelInfo
	}
	return slog.New(slog.NewTextHandler(stderr, &slog.HandlerOptions{Level: lvl}))
}

func runCmd(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("run", flag.ContinueOnError)
	fs.SetOutput(stderr)
	file := fs.String("c", "configs/fleet-small.yaml", "scenario file")
	dur := fs.Duration("duration", -1, "override the scenario's duration (0 = until Ctrl-C)")
	jsonOut := fs.String("json", "", "write the final JSON report here (- = stdout)")
	coapT := fs.String("coap", "", "override target.coap")
	mqttT := fs.String("mqtt", "", "override target.mqtt")
	colURL := fs.String("collector", "", "override collector.url (firmware-sim collect --http)")
	verbose := fs.Bool("v", false, "log device lifecycle")
	if err := fs.Parse(args); err != nil {
		return usageError{err}
	}
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

func collectCmd(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("collect", flag.ContinueOnError)
	fs.SetOutput(stderr)
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
	verbose := fs.Bool("v", false, "log each message")
	if err := fs.Parse(args); err != nil {
		return usageError{err}
	}
	if *coapAddr == "" && *coapsAddr == "" && *mqttURL == "" {
		return usageError{errors.New("collect: give at least one of --coap, --coaps, --mqtt")}
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
			return usageError{errors.New("collect: --coaps needs --creds")}
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

func trimNL(b []byte) []byte {
	for len(b) > 0 && (b[len(b)-1] == '\n' || b[len(b)-1] == '\r') {
		b = b[:len(b)-1]
	}
	return b
}

// credsCmd writes the fleet's generated credentials in the creds file
// format (PSK and MQTT entries; cert entries with PEM files in --cert-dir).
func credsCmd(args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("creds", flag.ContinueOnError)
	fs.SetOutput(stderr)
	file := fs.String("c", "configs/fleet-small.yaml", "scenario file")
	out := fs.String("o", "-", "output file (mode 0600), - = stdout")
	certDir := fs.String("cert-dir", "", "directory for generated certificate PEM files (needed when the fleet has cert devices)")
	if err := fs.Parse(args); err != nil {
		return usageError{err}
	}
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
				return usageError{fmt.Errorf("creds: %s has a certificate: give --cert-dir", n)}
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
