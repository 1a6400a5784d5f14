// Command firmware-sim simulates fleets of microcontroller sensors (CoAP
// over DTLS, MQTT over TLS) and collects their telemetry centrally.
//
//	firmware-sim run -c configs/fleet-small.yaml     run a fleet, live summary, JSON report
//	firmware-sim collect --coap :5683 --http :9464   central collector (CoAP sink, MQTT subscriber)
//	firmware-sim creds -c configs/fleet-demo.yaml    print the fleet's generated credentials file
//
// See package firmware-sim/cli for the flags.
package main

import (
	"os"

	"github.com/fleetgate/fleetgate/firmware-sim/cli"
)

func main() { os.Exit(cli.Main(os.Args[1:], os.Stdout, os.Stderr)) }
