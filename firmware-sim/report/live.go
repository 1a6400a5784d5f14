package report

import (
	"fmt"
	"io"
	"os"
	"strings"
	"time"
)

// Line is one snapshot for the live summary.
type Line struct {
	Elapsed   time.Duration
	Devices   int
	Totals    Counters
	Collected *SeqStats
	// Groups breaks the totals down by scenario group (terminal view).
	Groups []GroupLine
}

// GroupLine is one scenario group's share of a Line.
type GroupLine struct {
	Name     string
	Protocol string
	Devices  int
	Totals   Counters
}

// Live prints the summary: in place (ANSI home + clear) when out is a
// terminal, one plain line per refresh otherwise.
type Live struct {
	out  io.Writer
	term bool
}

// NewLive returns a printer for out; terminal output is detected when out
// is an *os.File on a character device.
func NewLive(out io.Writer) *Live {
	term := false
	if f, ok := out.(*os.File); ok {
		if fi, err := f.Stat(); err == nil && fi.Mode()&os.ModeCharDevice != 0 {
			term = true
		}
	}
	return &Live{out: out, term: term}
}

// Print writes one refresh.
func (l *Live) Print(s Line) {
	t := s.Totals
	lost := "n/a"
	if s.Collected != nil {
		lost = fmt.Sprintf("%d (collector: %d dup, %d gaps, %d reordered)", Lost(t.Sent, t.Acked, s.Collected), s.Collected.Duplicates, s.Collected.Gaps, s.Collected.Reordered)
	} else if t.Sent >= t.Acked {
		lost = fmt.Sprintf("%d unacked", t.Unacked)
	}
	if !l.term {
		fmt.Fprintf(l.out, "t=%s connected=%d/%d sent=%d acked=%d lost=%s handshakes=%d fail=%d reconnects=%d p50=%.1fms p99=%.1fms\n",
			s.Elapsed.Truncate(time.Second), t.Connected, s.Devices, t.Sent, t.Acked, strings.Fields(lost)[0], t.Handshakes, t.HandshakeFailures, t.Reconnects, t.Latency.P50Ms, t.Latency.P99Ms)
		return
	}
	var b strings.Builder
	b.WriteString("\x1b[H\x1b[2J")
	fmt.Fprintf(&b, "firmware-sim   elapsed %s\n\n", s.Elapsed.Truncate(time.Second))
	fmt.Fprintf(&b, "  devices connected   %d / %d\n", t.Connected, s.Devices)
	fmt.Fprintf(&b, "  handshakes          %d ok, %d failed, %d reconnects, %d rebinds\n", t.Handshakes, t.HandshakeFailures, t.Reconnects, t.Rebinds)
	fmt.Fprintf(&b, "  telemetry           %d sent, %d acknowledged, %d unacked (%d answered 5.03)\n", t.Sent, t.Acked, t.Unacked, t.Unavailable)
	fmt.Fprintf(&b, "  lost                %s\n", lost)
	fmt.Fprintf(&b, "  latency             p50 %.1f ms, p99 %.1f ms, max %.1f ms\n", t.Latency.P50Ms, t.Latency.P99Ms, t.Latency.MaxMs)
	fmt.Fprintf(&b, "  device side         %d requests served, %d notifications, %d MQTT commands (%d replies acked)\n", t.Served, t.Notifications, t.Commands, t.CommandReplies)
	fmt.Fprintf(&b, "  injected drops      %d out, %d in\n", t.DroppedOut, t.DroppedIn)
	if len(s.Groups) > 0 {
		fmt.Fprintf(&b, "\n  %-24s %-5s %9s %8s %8s %8s %9s\n", "group", "proto", "connected", "sent", "acked", "unacked", "p99 ms")
		for _, g := range s.Groups {
			fmt.Fprintf(&b, "  %-24s %-5s %4d/%-4d %8d %8d %8d %9.1f\n", g.Name, g.Protocol, g.Totals.Connected, g.Devices, g.Totals.Sent, g.Totals.Acked, g.Totals.Unacked, g.Totals.Latency.P99Ms)
		}
	}
	io.WriteString(l.out, b.String())
}
