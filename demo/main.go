// Command demo runs the whole fleetgate chain in one process (`make demo`):
// a central gateway, an edge bridge with a real L2TP/IPsec uplink over
// loopback UDP, and a simulated sensor fleet. See package demo/chain.
//
// It runs until --duration passes or Ctrl-C (SIGINT) / SIGTERM, then stops
// every component and prints the SUCCESS/FAILURE summary. Exit status: 0
// on SUCCESS, 1 on FAILURE or when the chain could not be built, 2 for a
// bad command line or scenario file. A second Ctrl-C while it shuts down
// kills it at once.
package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	"github.com/fleetgate/fleetgate/demo/chain"
)

func main() {
	dur := flag.Duration("duration", 0, "stop after this long with a success/failure summary (0: until Ctrl-C)")
	jsonOut := flag.Bool("json", false, "print the final report as JSON")
	scenarioFile := flag.String("scenario", "", "fleet scenario YAML (default: the embedded 50-sensor fleet)")
	verbose := flag.Bool("v", false, "log component lines to stderr")
	ipv6 := flag.Bool("ipv6", false, "run the chain over IPv6: uplink over ::1, IPV6CP, every endpoint at its IPv6 address, central at 2001:db8:200::10")
	flag.Parse()

	opts := chain.Options{Duration: *dur, IPv6: *ipv6}
	if *scenarioFile != "" {
		b, err := os.ReadFile(*scenarioFile)
		if err != nil {
			fmt.Fprintln(os.Stderr, "demo:", err)
			os.Exit(2)
		}
		opts.Scenario = b
	}
	if *verbose {
		opts.Logger = slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelInfo}))
	}
	tty := isTerminal(os.Stdout) && !*jsonOut
	if !*jsonOut {
		opts.OnUpdate = func(v chain.View) { draw(os.Stdout, v, tty) }
	}
	// The first Ctrl-C (or SIGTERM) stops the chain cleanly and prints the
	// summary; once it arrived the default handling is restored, so a
	// second Ctrl-C kills the process at once.
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	go func() { <-ctx.Done(); stop() }()
	v, err := chain.Run(ctx, opts)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	if *jsonOut {
		enc := json.NewEncoder(os.Stdout)
		enc.SetIndent("", "  ")
		_ = enc.Encode(v)
	} else {
		summary(os.Stdout, v)
	}
	if !v.Success {
		os.Exit(1)
	}
}

func isTerminal(f *os.File) bool {
	_, err := unix.IoctlGetTermios(int(f.Fd()), unix.TCGETS)
	return err == nil
}

var phasesShown int

// Terminal control for the in-place redraw: every frame starts at the
// top-left corner (cursor home), each line clears what an earlier, longer
// line left behind, and the rest of the screen is cleared after the last
// line. Nothing depends on counting lines, so a line the terminal wraps at a
// narrow width cannot leave a trail of old frames above the dashboard.
const (
	termHome      = "\x1b[H"  // cursor to row 1, column 1
	termClearLine = "\x1b[K"  // erase to the end of the line
	termClearDown = "\x1b[J"  // erase from the cursor to the end of the screen
	termClearAll  = "\x1b[2J" // erase the whole screen (first frame)
)

var framesDrawn int

// frame renders one dashboard frame for a terminal: cursor home (after a
// full clear on the first frame), every line followed by erase-to-end,
// then erase-below.
func frame(out string, first bool) string {
	var b strings.Builder
	if first {
		b.WriteString(termClearAll)
	}
	b.WriteString(termHome)
	b.WriteString(strings.ReplaceAll(out, "\n", termClearLine+"\n"))
	b.WriteString(termClearDown)
	return b.String()
}

// draw shows the view: redrawn in place on a terminal (clear-and-home, see
// frame), plain lines otherwise (one status line per update).
func draw(w io.Writer, v chain.View, tty bool) {
	if !tty {
		for _, p := range v.Uplink[min(phasesShown, len(v.Uplink)):] {
			fmt.Fprintf(w, "uplink: %s\n", p)
		}
		phasesShown = len(v.Uplink)
		up := "down"
		if v.UplinkUp {
			up = "up " + v.LocalAddr
		}
		fmt.Fprintf(w, "%5.1fs uplink %s | endpoints reporting %d/%d | round trip: %s | mqtt command: %s\n",
			v.Elapsed.Seconds(), up, v.Reporting, len(v.Endpoints), rtLine(v.RoundTrip), cmdLine(v.Command))
		return
	}
	var b strings.Builder
	fmt.Fprintf(&b, "fleetgate demo — %5.1fs   (Ctrl-C to stop)\n\n", v.Elapsed.Seconds())
	fmt.Fprintf(&b, "UPLINK (edge bridge → gateway, IKEv1/ESP/L2TP/PPP over loopback UDP); gateway sessions: %d\n", v.GatewaySes)
	ph := v.Uplink
	if len(ph) > 4 {
		ph = ph[len(ph)-4:]
	}
	for _, p := range ph {
		fmt.Fprintf(&b, "  %s\n", p)
	}
	for _, gl := range v.Gateway {
		fmt.Fprintf(&b, "  gateway: %s\n", gl)
	}
	fmt.Fprintf(&b, "\nENDPOINTS → central telemetry (collector), %d/%d reporting from their own address\n", v.Reporting, len(v.Endpoints))
	const cols = 3
	for i, e := range v.Endpoints {
		mark := " "
		if e.Messages > 0 && e.FromOwnAddr {
			mark = "✓"
		}
		fmt.Fprintf(&b, "  %s %-10s %-4s %-11s %4d", mark, e.Name, e.Protocol, e.Addr, e.Messages)
		if i%cols == cols-1 || i == len(v.Endpoints)-1 {
			b.WriteString("\n")
		}
	}
	fmt.Fprintf(&b, "\nCENTRAL → DEVICE  CoAP GET /sensors/temp from the central stack to %s: %s\n", v.RoundTrip.Target, rtLine(v.RoundTrip))
	if v.Command.Topic != "" {
		fmt.Fprintf(&b, "CENTRAL → DEVICE  MQTT %s to %s: %s\n", v.Command.Topic, v.Command.Target, cmdLine(v.Command))
	}
	fmt.Fprint(w, frame(b.String(), framesDrawn == 0))
	framesDrawn++
}

func rtLine(r chain.RoundTrip) string {
	if r.OK {
		return fmt.Sprintf("OK in %v: %s", r.RTT.Round(10*time.Microsecond), r.Result)
	}
	return r.Result
}

func cmdLine(c chain.MQTTCommand) string {
	if c.OK {
		return fmt.Sprintf("OK in %v (sent %d×): %s, from %s", c.RTT.Round(10*time.Microsecond), c.Sent, c.Reply, c.From)
	}
	return c.Reply
}

func summary(w io.Writer, v chain.View) {
	fmt.Fprintln(w)
	if v.Success {
		fam := "10.10.8.x"
		if len(v.Endpoints) > 0 && strings.Contains(v.Endpoints[0].Addr, ":") {
			fam = "IPv6 2001:db8:8::x"
		}
		fmt.Fprintf(w, "SUCCESS: telemetry from all %d endpoints reached the collector from their own %s address; round trip %s\n",
			len(v.Endpoints), fam, rtLine(v.RoundTrip))
		if v.Command.OK {
			fmt.Fprintf(w, "         MQTT command %s → %s\n", v.Command.Topic, cmdLine(v.Command))
		}
		return
	}
	fmt.Fprintf(w, "FAILURE (%d/%d endpoints reporting):\n", v.Reporting, len(v.Endpoints))
	for _, f := range v.Failures {
		fmt.Fprintf(w, "  - %s\n", f)
	}
}
