// Command gateway is fleetgate's central L2TP/IPsec gateway daemon.
//
//	go run ./gateway run -c configs/gateway.yaml
//	go run ./gateway --check-config configs/gateway.yaml
//	go run ./gateway pki init --dir pki
//	go run ./gateway client-config site-hall7 --format strongswan --gateway vpn.example.net -c configs/gateway.yaml
//	go run ./gateway status -c configs/gateway.yaml
//
// Everything is in gateway/cli and gateway/server; the session engine is
// linked in engine.go.
package main

import (
	"os"

	"github.com/fleetgate/fleetgate/gateway/cli"
)

func main() {
	os.Exit(cli.Main(os.Args[1:], os.Stdout, os.Stderr, newEngine))
}
