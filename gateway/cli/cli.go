// Package cli implements the gateway command line: run, --check-config,
// pki, client-config and status. gateway/main.go is a thin wrapper.
package cli

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"strings"
	"syscall"

	"github.com/fleetgate/fleetgate/gateway/config"
	"github.com/fleetgate/fleetgate/gateway/server"
	"github.com/fleetgate/fleetgate/version"
)

// DefaultConfig is the configuration path when -c is not given.
const DefaultConfig = "/etc/fleetgate/gateway.yaml"

// EngineFactory builds the session engine for a configuration; it may
// return nil when none is linked.
type EngineFactory func(cfg *config.Config, log *slog.Logger) server.Engine

const usage = `usage: gateway <command> [flags]

commands:
  run [-c FILE]                         run the gateway (default command)
  --check-config FILE | check-config FILE
                                        validate a configuration and exit
  --check-config --fleet FLEET-FILE     validate every gateway of a fleet file
                                        (gateways: [gw1.yaml, gw2.yaml]): one pool,
                                        disjoint pool.slice, static addresses outside slices
  pki init|issue|revoke|crl|list|serve-crl ...
                                        certificate authority (gateway pki -h)
  client-config IDENTITY --format F --gateway HOST [-c FILE]
                                        print a client configuration
                                        (formats: strongswan, ipsec, windows, mikrotik, bridge)
  status [-c FILE | --socket PATH | --url URL]
                                        show the sessions of the running gateway
`

// Main runs the command line and returns the exit code. SIGINT/SIGTERM
// stop `run`, SIGHUP reloads its configuration.
func Main(args []string, stdout, stderr io.Writer, newEngine EngineFactory) int {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	hup := make(chan os.Signal, 1)
	signal.Notify(hup, syscall.SIGHUP)
	defer signal.Stop(hup)
	return Run(ctx, args, stdout, stderr, newEngine, hup)
}

// Run is Main with an explicit context and reload channel (tests).
func Run(ctx context.Context, args []string, stdout, stderr io.Writer, newEngine EngineFactory, reload <-chan os.Signal) int {
	if len(args) == 0 || strings.HasPrefix(args[0], "-") && args[0] != "--check-config" && args[0] != "-check-config" && args[0] != "-h" && args[0] != "--help" && args[0] != "--version" && args[0] != "-version" {
		args = append([]string{"run"}, args...)
	}
	var err error
	switch args[0] {
	case "run":
		err = cmdRun(ctx, args[1:], stderr, newEngine, reload)
	case "--check-config", "-check-config", "check-config":
		err = cmdCheck(args[1:], stdout)
	case "pki":
		if len(args) > 1 && args[1] == "serve-crl" {
			err = cmdServeCRL(ctx, args[2:], stdout)
			break
		}
		err = cmdPKI(args[1:], stdout)
	case "client-config":
		err = cmdClientConfig(args[1:], stdout)
	case "status":
		err = cmdStatus(ctx, args[1:], stdout)
	case "--version", "-version", "version":
		fmt.Fprintln(stdout, "gateway", version.String())
		return 0
	case "-h", "--help", "help":
		fmt.Fprint(stdout, usage)
		return 0
	default:
		fmt.Fprintf(stderr, "gateway: unknown command %q\n%s", args[0], usage)
		return 2
	}
	if err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return 0
		}
		fmt.Fprintf(stderr, "gateway: %v\n", err)
		return 1
	}
	return 0
}

func newLogger(cfg *config.Config, w io.Writer) *slog.Logger {
	var level slog.Level
	_ = level.UnmarshalText([]byte(cfg.Log.Level))
	opts := &slog.HandlerOptions{Level: level}
	if cfg.Log.Format == "text" {
		return slog.New(slog.NewTextHandler(w, opts))
	}
	return slog.New(slog.NewJSONHandler(w, opts))
}

func cmdRun(ctx context.Context, args []string, stderr io.Writer, newEngine EngineFactory, reload <-chan os.Signal) error {
	fs := flag.NewFlagSet("run", flag.ContinueOnError)
	fs.SetOutput(stderr)
	path := fs.String("c", DefaultConfig, "configuration file")
	if err := fs.Parse(args); err != nil {
		return err
	}
	cfg, err := config.Load(*path)
	if err != nil {
		return err
	}
	log := newLogger(cfg, stderr)
	var eng server.Engine
	if newEngine != nil {
		eng = newEngine(cfg, log)
	}
	srv, err := server.New(cfg, server.Options{Engine: eng, Logger: log})
	if err != nil {
		return err
	}
	log.Info("gateway starting", "version", version.String(), "config", *path, "ike", cfg.Listen.IKEAddr().String(), "natt", cfg.Listen.NATTAddr().String(),
		"dataplane", cfg.DataPlane.Mode, "identities", len(cfg.Identities))
	done := make(chan error, 1)
	go func() { done <- srv.Run(ctx) }()
	for {
		select {
		case err := <-done:
			log.Info("gateway stopped")
			return err
		case <-reload:
			srv.NotifyReloading()
			next, err := config.Load(*path)
			if err != nil {
				log.Error("reload refused: configuration has errors; keeping the running one", "err", err.Error())
				srv.NotifyReady()
				continue
			}
			if _, err := srv.Reload(next); err != nil {
				log.Error("reload failed", "err", err)
			}
			srv.NotifyReady()
		}
	}
}

func cmdCheck(args []string, stdout io.Writer) error {
	if len(args) == 2 && (args[0] == "--fleet" || args[0] == "-fleet") {
		cfgs, err := config.CheckFleet(args[1])
		if err != nil {
			return err
		}
		for _, c := range cfgs {
			slice := "whole pool"
			if c.Pool.SliceLo.IsValid() {
				slice = c.Pool.SliceLo.String() + "-" + c.Pool.SliceHi.String()
			}
			fmt.Fprintf(stdout, "%s: OK: pool %s, slice %s, %d identities\n", c.File, c.Pool.PrefixP, slice, len(c.Identities))
		}
		fmt.Fprintf(stdout, "%s: OK: %d gateways, slices disjoint, static addresses outside every slice\n", args[1], len(cfgs))
		return nil
	}
	if len(args) != 1 {
		return errors.New("usage: gateway --check-config FILE | --check-config --fleet FLEET-FILE")
	}
	cfg, err := config.Load(args[0])
	if err != nil {
		return err
	}
	certs, psks := 0, 0
	for _, id := range cfg.Identities {
		if id.Auth == config.AuthCert {
			certs++
		} else {
			psks++
		}
	}
	fmt.Fprintf(stdout, "%s: OK: %d identities (%d cert, %d psk), pool %s, data plane %s, IKE %s, NAT-T %s\n",
		args[0], len(cfg.Identities), certs, psks, cfg.Pool.PrefixP, cfg.DataPlane.Mode, cfg.Listen.IKEAddr(), cfg.Listen.NATTAddr())
	return nil
}
