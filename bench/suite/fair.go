package suite

import (
	"bytes"
	"os/exec"
	"path/filepath"
	"strings"
)

// fairCases are issue 18's "store-and-forward is fair" scenarios: the
// tests that run them (in make test too) and what they do.
var fairCases = []struct {
	pkg, test, attack string
}{
	{"./bridge/mqttrelay", "TestFairSpoolUnderFlood",
		"one authenticated MQTT device floods 4 KB QoS 1 into the spool (512 KiB, share 64 KiB) for 3 s during a WAN outage while 2 others publish QoS 1 at 100 msg/s"},
	{"./bridge/proxy", "TestCoapSpoolFairUnderFlood",
		"one CoAP device floods ~1 KB telemetry into the CoAP spool (128 KiB, share 16 KiB) during an outage while another keeps sending"},
}

// benchFair runs the fairness tests and records each as an "Under attack"
// row: the flood stays within its own share, every other device's
// telemetry is accepted and delivered after the outage.
func benchFair(_ *Options, rep *Report) {
	out, err := exec.Command("go", "env", "GOMOD").Output()
	gomod := strings.TrimSpace(string(out))
	for _, c := range fairCases {
		row := AttackRow{Target: "bridge", Attack: c.attack + " (" + c.test + ")",
			Bound: "flood held to its own share; every other device's QoS 1 telemetry accepted and delivered after the outage"}
		if err != nil || gomod == "" {
			row.Err = "go env GOMOD: not in the module"
			rep.attack(row)
			continue
		}
		cmd := exec.Command("go", "test", "-count=1", "-v", "-run", "^"+c.test+"$", c.pkg)
		cmd.Dir = filepath.Dir(gomod)
		var log bytes.Buffer
		cmd.Stdout, cmd.Stderr = &log, &log
		runErr := cmd.Run()
		for _, l := range strings.Split(log.String(), "\n") {
			if _, m, ok := strings.Cut(l, "flood: "); ok {
				row.Measured = "flood: " + strings.TrimSpace(m)
			}
		}
		switch {
		case runErr == nil && row.Measured != "":
			row.Held = true
		case runErr == nil:
			row.Err = "test passed without its figures line"
		case strings.Contains(log.String(), "--- FAIL"):
			row.Measured += " — test FAILED"
			logf("%s:\n%s", c.test, log.String())
		default:
			row.Err = runErr.Error()
			logf("%s:\n%s", c.test, log.String())
		}
		rep.attack(row)
	}
}
