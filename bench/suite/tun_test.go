package suite

import (
	"strings"
	"testing"
	"time"
)

// TestTunArithmetic: the tun note's figures follow from the three sides'
// CPU per packet, and a side without a CPU figure gives no note.
func TestTunArithmetic(t *testing.T) {
	row := func(name string, us float64) Row {
		return Row{Name: name, Median: Sample{Rate: 1, CPUPerOp: time.Duration(us * 1000)}}
	}
	got := tunArithmetic([]Row{row("v", 3.2), row("w", 5), row("c", 2.4)}, "v", "w", "c")
	for _, want := range []string{"(the TUN ceiling) 2.40", "adds 0.80", "= 3.20", "water adds 2.60", "= 5.00", "by CPU = 1.56", "at zero 2.08", "2x needs vnet <= 2.50: vnet's own work <= 0.10 (today 0.80)"} {
		if !strings.Contains(got, want) {
			t.Errorf("missing %q in %q", want, got)
		}
	}
	if got := tunArithmetic([]Row{row("v", 3), row("w", 4), row("c", 2.5)}, "v", "w", "c"); !strings.Contains(got, "out of reach") {
		t.Errorf("2x below the ceiling not called out of reach: %q", got)
	}
	if got := tunArithmetic([]Row{row("v", 3), row("w", 5)}, "v", "w", "c"); got != "" {
		t.Errorf("note without a ceiling figure: %q", got)
	}
}
