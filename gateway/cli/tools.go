package cli

import (
	"context"
	"errors"
	"fmt"
	"io"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/fleetgate/fleetgate/gateway/clientconfig"
	"github.com/fleetgate/fleetgate/gateway/config"
	"github.com/fleetgate/fleetgate/gateway/status"
	"github.com/fleetgate/fleetgate/internal/cliutil"
	"github.com/fleetgate/fleetgate/internal/fleetview"
)

func clientConfigCmd(o *opts) *cobra.Command {
	var format, gw, gwID string
	c := &cobra.Command{
		Use:   "client-config IDENTITY --gateway HOST",
		Short: "Print a client configuration for IDENTITY (formats: " + strings.Join(clientconfig.Formats(), ", ") + ")",
		Args:  cliutil.ExactArgs("IDENTITY"),
		RunE: func(cmd *cobra.Command, args []string) error {
			cfg, err := config.Load(o.configPath())
			if err != nil {
				return err
			}
			p, err := clientconfig.FromConfig(cfg, args[0], gw)
			if err != nil {
				return err
			}
			if gwID != "" {
				p.GatewayID, p.ConfiguredID = gwID, true
			}
			out, err := clientconfig.Render(format, p)
			if err != nil {
				return err
			}
			_, err = io.WriteString(cmd.OutOrStdout(), out)
			return err
		},
	}
	c.Flags().StringVar(&format, "format", clientconfig.FormatStrongSwan, "output format: "+strings.Join(clientconfig.Formats(), ", "))
	c.Flags().StringVar(&gw, "gateway", "", "public name or address clients dial (required)")
	c.Flags().StringVar(&gwID, "gateway-id", "", "gateway certificate identity for cert auth (default: --gateway)")
	_ = c.MarkFlagRequired("gateway")
	return c
}

// target flags name the running daemon: --socket, --url, else the
// configuration's status.socket (then metrics.listen).
type target struct {
	socket, url string
}

func (t *target) add(c *cobra.Command, url bool) {
	c.Flags().StringVar(&t.socket, "socket", "", "unix control socket of the running gateway (default: status.socket of -c)")
	if url {
		c.Flags().StringVar(&t.url, "url", "", "status URL of the running gateway, e.g. http://127.0.0.1:9410 (read-only)")
	}
}

// resolve returns the socket path or URL to ask; socketOnly refuses the
// HTTP listener (control actions are only on the socket).
func (t *target) resolve(o *opts, socketOnly bool) (string, error) {
	if t.socket != "" {
		return t.socket, nil
	}
	if t.url != "" {
		return t.url, nil
	}
	cfg, err := config.Load(o.configPath())
	if err != nil {
		return "", fmt.Errorf("%w (or give --socket)", err)
	}
	switch {
	case cfg.Status.Socket != "":
		return cfg.Status.Socket, nil
	case !socketOnly && cfg.Metrics.Listen != "off" && cfg.Metrics.Listen != "":
		return "http://" + cfg.Metrics.Listen, nil
	}
	return "", errors.New("the configuration has no status.socket (the control socket)")
}

func (t *target) report(ctx context.Context, o *opts) (status.Report, error) {
	dst, err := t.resolve(o, false)
	if err != nil {
		return status.Report{}, err
	}
	return status.Fetch(ctx, dst)
}

func statusCmd(ctx context.Context, o *opts) *cobra.Command {
	t := &target{}
	var asJSON bool
	c := &cobra.Command{
		Use:   "status",
		Short: "Show the running gateway: engine, sessions, BGP, RADIUS, CRL",
		Args:  cliutil.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			r, err := t.report(ctx, o)
			if err != nil {
				return err
			}
			if asJSON {
				return jsonOut(cmd.OutOrStdout(), r)
			}
			return status.WriteTable(cmd.OutOrStdout(), r)
		},
	}
	t.add(c, true)
	c.Flags().BoolVar(&asJSON, "json", false, "print the JSON report")
	return c
}

// sessionsView fetches the sessions view (internal/fleetview, the status
// page's type) from the control socket, or /api/sessions of --url.
func (t *target) sessionsView(ctx context.Context, o *opts) (fleetview.Sessions, error) {
	var v fleetview.Sessions
	dst, err := t.resolve(o, false)
	if err != nil {
		return v, err
	}
	if err := fleetview.FetchView(ctx, dst, "sessions", &v); err != nil {
		return v, err
	}
	if v.Sessions == nil {
		v.Sessions = []fleetview.Session{}
	}
	return v, nil
}

func sessionsCmd(ctx context.Context, o *opts) *cobra.Command {
	t := &target{}
	var asJSON bool
	c := &cobra.Command{
		Use:   "sessions",
		Short: "List the sessions of the running gateway (swanctl --list-conns)",
		Long: `List the sessions of the running gateway over its control socket.
--json prints the sessions view, the same JSON the status page serves as
/api/sessions (internal/fleetview.Sessions).`,
		Args: cliutil.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			v, err := t.sessionsView(ctx, o)
			if err != nil {
				return err
			}
			if asJSON {
				return jsonOut(cmd.OutOrStdout(), v)
			}
			tw := tabwriter.NewWriter(cmd.OutOrStdout(), 0, 4, 2, ' ', 0)
			fmt.Fprintln(tw, "ID\tIDENTITY\tPEER\tVPN ADDRESS\tOUTER\tROUTES\tRX BYTES\tTX BYTES\tUP")
			for _, s := range v.Sessions {
				rs := s.Routes
				if s.IPv6Prefix != "" { // both families in one column
					rs = append(rs[:len(rs):len(rs)], s.IPv6Prefix)
				}
				fmt.Fprintf(tw, "%d\t%s\t%s\t%s\t%s\t%s\t%d\t%d\t%s\n", s.ID, s.Identity, dash(s.Peer), s.VPNAddr, dash(s.Outer), dash(strings.Join(rs, ",")),
					s.RxBytes, s.TxBytes, since(v.Now, s.Since))
			}
			return tw.Flush()
		},
	}
	t.add(c, true)
	c.Flags().BoolVar(&asJSON, "json", false, "print the sessions view as JSON (as /api/sessions)")
	term := &cobra.Command{
		Use:   "terminate IDENTITY",
		Short: "Close every session of IDENTITY (its peer is told: PPP, L2TP and IKE Delete)",
		Args:  cliutil.ExactArgs("IDENTITY"),
		RunE: func(cmd *cobra.Command, args []string) error {
			dst, err := t.resolve(o, true)
			if err != nil {
				return err
			}
			n, err := status.Terminate(ctx, dst, args[0])
			if err != nil {
				return err
			}
			if n == 0 {
				return fmt.Errorf("no session of identity %q", args[0])
			}
			fmt.Fprintf(cmd.OutOrStdout(), "terminated %d session(s) of %s\n", n, args[0])
			return nil
		},
	}
	term.Flags().StringVar(&t.socket, "socket", "", "unix control socket of the running gateway (default: status.socket of -c)")
	c.AddCommand(term)
	return c
}

func sasCmd(ctx context.Context, o *opts) *cobra.Command {
	t := &target{}
	var asJSON bool
	c := &cobra.Command{
		Use:   "sas",
		Short: "List the security associations of the running gateway (swanctl --list-sas)",
		Args:  cliutil.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			v, err := t.sessionsView(ctx, o)
			if err != nil {
				return err
			}
			sas := status.SAs(v)
			if asJSON {
				return jsonOut(cmd.OutOrStdout(), sas)
			}
			tw := tabwriter.NewWriter(cmd.OutOrStdout(), 0, 4, 2, ' ', 0)
			fmt.Fprintln(tw, "IDENTITY\tPEER\tIMPLEMENTATION\tESP SUITE\tMODE\tESTABLISHED\tRX PACKETS\tTX PACKETS\tREKEYS")
			for _, s := range sas {
				rk := "-"
				if s.Rekeys >= 0 {
					rk = fmt.Sprint(s.Rekeys)
				}
				fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%d\t%d\t%s\n", s.Identity, dash(s.Peer), dash(s.Implementation), dash(s.Suite), s.Mode,
					since(v.Now, s.Established), s.RxPackets, s.TxPackets, rk)
			}
			return tw.Flush()
		},
	}
	t.add(c, true)
	c.Flags().BoolVar(&asJSON, "json", false, "print the SAs as JSON")
	return c
}

func dash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

func since(now, t time.Time) string {
	if t.IsZero() {
		return "-"
	}
	return now.Sub(t).Round(time.Second).String()
}
