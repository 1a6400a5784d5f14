package cli

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"strings"

	"github.com/fleetgate/fleetgate/gateway/clientconfig"
	"github.com/fleetgate/fleetgate/gateway/config"
	"github.com/fleetgate/fleetgate/gateway/status"
)

func cmdClientConfig(args []string, stdout io.Writer) error {
	fs := flag.NewFlagSet("client-config", flag.ContinueOnError)
	fs.SetOutput(stdout)
	cfgPath := fs.String("c", DefaultConfig, "gateway configuration")
	format := fs.String("format", clientconfig.FormatStrongSwan, "output format: "+strings.Join(clientconfig.Formats(), ", "))
	gw := fs.String("gateway", "", "public name or address clients dial (required)")
	gwID := fs.String("gateway-id", "", "gateway certificate identity for cert auth (default: --gateway)")
	rest := args
	var name string
	if len(rest) > 0 && !strings.HasPrefix(rest[0], "-") {
		name, rest = rest[0], rest[1:]
	}
	if err := fs.Parse(rest); err != nil {
		return err
	}
	if name == "" && fs.NArg() > 0 {
		name = fs.Arg(0)
	}
	if name == "" {
		return errors.New("usage: gateway client-config IDENTITY --format F --gateway HOST [-c FILE]")
	}
	cfg, err := config.Load(*cfgPath)
	if err != nil {
		return err
	}
	p, err := clientconfig.FromConfig(cfg, name, *gw)
	if err != nil {
		return err
	}
	if *gwID != "" {
		p.GatewayID, p.ConfiguredID = *gwID, true
	}
	out, err := clientconfig.Render(*format, p)
	if err != nil {
		return err
	}
	_, err = io.WriteString(stdout, out)
	return err
}

func cmdStatus(ctx context.Context, args []string, stdout io.Writer) error {
	fs := flag.NewFlagSet("status", flag.ContinueOnError)
	fs.SetOutput(stdout)
	cfgPath := fs.String("c", "", "gateway configuration (to find the socket or metrics address)")
	sock := fs.String("socket", "", "unix control socket of the running gateway")
	url := fs.String("url", "", "metrics/status URL of the running gateway, e.g. http://127.0.0.1:9410")
	asJSON := fs.Bool("json", false, "print the raw JSON report")
	if err := fs.Parse(args); err != nil {
		return err
	}
	target := *sock
	if target == "" {
		target = *url
	}
	if target == "" {
		path := *cfgPath
		if path == "" {
			path = DefaultConfig
		}
		cfg, err := config.Load(path)
		if err != nil {
			return fmt.Errorf("%w (or give --socket / --url)", err)
		}
		switch {
		case cfg.Status.Socket != "":
			target = cfg.Status.Socket
		case cfg.Metrics.Listen != "off":
			target = "http://" + cfg.Metrics.Listen
		default:
			return errors.New("status: the configuration has neither status.socket nor metrics.listen")
		}
	}
	r, err := status.Fetch(ctx, target)
	if err != nil {
		return err
	}
	if *asJSON {
		return jsonOut(stdout, r)
	}
	return status.WriteTable(stdout, r)
}
