// Command bridge is the fleetgate edge bridge (see package bridge/cli for
// the commands): `bridge run -c /etc/fleetgate/bridge.yaml`.
package main

import (
	"os"

	"github.com/fleetgate/fleetgate/bridge/cli"
)

func main() { os.Exit(cli.Main(os.Args[1:], os.Stdout, os.Stderr)) }
