// Package cli implements the gateway command line on the project's one CLI
// convention (internal/cliutil, spf13/cobra): run (the default), check-config,
// pki, client-config, and the control verbs status, sessions, sas over the
// running daemon's unix control socket. gateway/main.go is a thin wrapper.
package cli

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/spf13/cobra"

	"github.com/fleetgate/fleetgate/gateway/config"
	"github.com/fleetgate/fleetgate/gateway/server"
	"github.com/fleetgate/fleetgate/internal/cliutil"
	"github.com/fleetgate/fleetgate/version"
)

// DefaultConfig is the configuration path when -c is not given.
const DefaultConfig = "/etc/fleetgate/gateway.yaml"

// EngineFactory builds the session engine for a configuration; it may
// return nil when none is linked.
type EngineFactory func(cfg *config.Config, log *slog.Logger) server.Engine

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

// Run is Main with an explicit context and reload channel (tests). Exit
// codes: 0 success (and -h/--help, --version), 1 failure, 2 usage error.
func Run(ctx context.Context, args []string, stdout, stderr io.Writer, newEngine EngineFactory, reload <-chan os.Signal) int {
	root := newRoot(ctx, stderr, newEngine, reload)
	cliutil.Prepare(root, stdout, stderr)
	return cliutil.Execute(root, args)
}

// opts are the flags shared by every verb.
type opts struct {
	config string
}

// configPath is -c, or DefaultConfig.
func (o *opts) configPath() string { return o.config }

func newRoot(ctx context.Context, stderr io.Writer, newEngine EngineFactory, reload <-chan os.Signal) *cobra.Command {
	o := &opts{}
	var check bool
	var fleet string
	root := &cobra.Command{
		Use:   "gateway [-c FILE] [command]",
		Short: "fleetgate central L2TP/IPsec gateway",
		Long: `fleetgate central L2TP/IPsec gateway.

Without a command it runs the daemon (as 'gateway run'). -c FILE names the
configuration (default ` + DefaultConfig + `) and may stand before or after
the command. The control verbs (status, sessions, sas) talk to the running
daemon over its unix control socket (status.socket).`,
		Example: `  gateway run -c /etc/fleetgate/gateway.yaml
  gateway --check-config /etc/fleetgate/gateway.yaml
  gateway -c /etc/fleetgate/gateway.yaml sessions --json
  gateway pki issue gw1 --kind gateway --san vpn.example.net`,
		Args: cobra.ArbitraryArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			if check || fleet != "" {
				return checkConfig(cmd, o, args, fleet)
			}
			if len(args) > 0 {
				return cliutil.NoArgs(cmd, args)
			}
			return runDaemon(ctx, o.configPath(), stderr, newEngine, reload)
		},
	}
	root.PersistentFlags().StringVarP(&o.config, "config", "c", DefaultConfig, "configuration file")
	root.Flags().BoolVar(&check, "check-config", false, "validate the configuration (FILE or -c) and every file it names, then exit")
	root.Flags().StringVar(&fleet, "fleet", "", "with --check-config: validate every gateway of this fleet file")
	root.AddCommand(
		&cobra.Command{
			Use:   "run",
			Short: "Run the gateway daemon (SIGHUP reloads, SIGTERM stops)",
			Args:  cliutil.NoArgs,
			RunE: func(*cobra.Command, []string) error {
				return runDaemon(ctx, o.configPath(), stderr, newEngine, reload)
			},
		},
		checkCmd(o),
		pkiCmd(ctx, o),
		clientConfigCmd(o),
		statusCmd(ctx, o),
		sessionsCmd(ctx, o),
		sasCmd(ctx, o),
	)
	return root
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

func runDaemon(ctx context.Context, path string, stderr io.Writer, newEngine EngineFactory, reload <-chan os.Signal) error {
	cfg, err := config.Load(path)
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
	log.Info("gateway starting", "version", version.String(), "config", path, "ike", cfg.Listen.IKEAddr().String(), "natt", cfg.Listen.NATTAddr().String(),
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
			next, err := config.Load(path)
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

func checkCmd(o *opts) *cobra.Command {
	var fleet string
	c := &cobra.Command{
		Use:   "check-config [FILE]",
		Short: "Validate a configuration (FILE or -c) and every file it names, then exit",
		Args:  cliutil.Args(cobra.MaximumNArgs(1)),
		RunE: func(cmd *cobra.Command, args []string) error {
			return checkConfig(cmd, o, args, fleet)
		},
	}
	c.Flags().StringVar(&fleet, "fleet", "", "validate every gateway of this fleet file (gateways: [gw1.yaml, gw2.yaml])")
	return c
}

func checkConfig(cmd *cobra.Command, o *opts, args []string, fleet string) error {
	stdout := cmd.OutOrStdout()
	if len(args) > 1 {
		return cliutil.Usagef("check-config takes one FILE, got %d", len(args))
	}
	if fleet != "" {
		if len(args) == 1 {
			return cliutil.Usagef("check-config: give FILE or --fleet FLEET-FILE, not both")
		}
		cfgs, err := config.CheckFleet(fleet)
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
		fmt.Fprintf(stdout, "%s: OK: %d gateways, slices disjoint, static addresses outside every slice\n", fleet, len(cfgs))
		return nil
	}
	path := o.configPath()
	if len(args) == 1 {
		path = args[0]
	}
	cfg, warnings, err := config.Check(path, time.Now())
	for _, w := range warnings {
		fmt.Fprintln(cmd.ErrOrStderr(), w)
	}
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
		path, len(cfg.Identities), certs, psks, cfg.Pool.PrefixP, cfg.DataPlane.Mode, cfg.Listen.IKEAddr(), cfg.Listen.NATTAddr())
	return nil
}
