package suite

import (
	"bytes"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"time"
)

// soakResult is e2e's SoakReport (e2e/soak_test.go), as its JSON.
type soakResult struct {
	Duration  string       `json:"duration"`
	Plan      string       `json:"plan"`
	Cycles    int          `json:"cycles"`
	Devices   []soakDevice `json:"devices"`
	FirstCoAP []string     `json:"uplink_back_to_first_coap"`
	Retrans   float64      `json:"coap_spool_retransmits"`
	Replaced  float64      `json:"proxy_upstream_replaced"`
	// Err says why the soak failed (its assertions, or it did not run).
	Err string `json:"-"`
	// Test is the e2e test that ran and Took how long it took.
	Test string        `json:"-"`
	Took time.Duration `json:"-"`
}

type soakDevice struct {
	Name        string `json:"name"`
	Kind        string `json:"kind"`
	Sent        int64  `json:"sent"`
	Acked       int64  `json:"acked"`
	AtCentral   int64  `json:"at_central"`
	Lost        int64  `json:"lost"`
	Duplicated  int64  `json:"duplicated"`
	Unavailable int64  `json:"unavailable_503"`
	Delivered   int64  `json:"refused_503_delivered"`
	TimedOut    int64  `json:"timed_out"`
	Handshakes  int64  `json:"handshakes"`
}

// benchSoak runs the field soak of issue 16 — the real gateway and bridge
// in namespaces, CoAP and MQTT devices sending through WAN cuts, SIGKILLs
// of both daemons and 20 % loss — as e2e's TestSoakLong for -soak-dur
// (-soak-dur 0: the short TestSoak; -quick: only the report path, with a
// fixed report), and records its figures.
func benchSoak(o *Options, rep *Report) {
	res := &soakResult{Test: "TestSoakLong"}
	rep.soak = res
	if os.Geteuid() != 0 {
		res.Err = "skipped: needs root (network namespaces)"
		rep.note("soak %s", res.Err)
		return
	}
	out, err := exec.Command("go", "env", "GOMOD").Output()
	gomod := strings.TrimSpace(string(out))
	if err != nil || gomod == "" || gomod == os.DevNull {
		res.Err = "go env GOMOD: not in the module"
		rep.note("soak failed to run: %s", res.Err)
		return
	}
	dir, err := os.MkdirTemp("", "fleetgate-soak-")
	if err != nil {
		res.Err = err.Error()
		return
	}
	defer os.RemoveAll(dir)
	file := filepath.Join(dir, "soak.json")
	args := []string{"test", "-count=1", "./e2e"}
	switch {
	case o.Quick:
		// make test runs TestSoak in the e2e package already: -quick only
		// checks the report path (exec, JSON, table) with a fixed report.
		res.Test = "TestSoakReportJSON"
		args = append(args, "-run", "^TestSoakReportJSON$", "-timeout", "5m", "-args", "-soak.report="+file)
	case o.SoakDur <= 0:
		res.Test = "TestSoak"
		args = append(args, "-run", "^TestSoak$", "-timeout", "15m", "-args", "-soak.report="+file)
	default:
		args = append(args, "-run", "^TestSoakLong$", "-timeout", (o.SoakDur + 20*time.Minute).String(),
			"-args", "-soak.duration="+o.SoakDur.String(), "-soak.report="+file)
	}
	logf("soak: go %s", strings.Join(args, " "))
	cmd := exec.Command("go", args...)
	cmd.Dir = filepath.Dir(gomod)
	var log bytes.Buffer
	cmd.Stdout, cmd.Stderr = &log, &log
	t0 := time.Now()
	runErr := cmd.Run()
	res.Took = time.Since(t0)
	if b, err := os.ReadFile(file); err == nil {
		if err := json.Unmarshal(b, res); err != nil {
			res.Err = "report: " + err.Error()
		}
	} else if runErr == nil {
		res.Err = "no report written"
	}
	if runErr != nil {
		// The test's own failure lines say which figure broke.
		var why []string
		for _, l := range strings.Split(log.String(), "\n") {
			if strings.Contains(l, "soak_test.go") && !strings.Contains(l, ": soak:") && !strings.Contains(l, "coap at central") &&
				!strings.Contains(l, "first CoAP message") {
				why = append(why, strings.TrimSpace(l))
			}
		}
		res.Err = fmt.Sprintf("%v: %s", runErr, strings.Join(lastN(why, 5), "; "))
		logf("soak output:\n%s", log.String())
	}
	printSoak(rep, res)
}

func lastN(s []string, n int) []string {
	if len(s) > n {
		return s[len(s)-n:]
	}
	return s
}

func printSoak(rep *Report, s *soakResult) {
	w := rep.w()
	fmt.Fprintf(w, "\nField soak (%s, %s): %s\n", s.Test, s.Took.Round(time.Second), s.Plan)
	for _, d := range s.Devices {
		fmt.Fprintf(w, "  %-8s %-36s sent %6d acked %6d central %6d lost %d dup %d 5.03 %d timeouts %d handshakes %d\n",
			d.Name, d.Kind, d.Sent, d.Acked, d.AtCentral, d.Lost, d.Duplicated, d.Unavailable, d.TimedOut, d.Handshakes)
	}
	fmt.Fprintf(w, "  uplink back → first CoAP message at central: %v\n", s.FirstCoAP)
	if s.Err != "" {
		fmt.Fprintf(w, "  FAILED: %s\n", s.Err)
	}
}

// soakSection renders the soak's section of BENCHMARKS.md.
func soakSection(b *bytes.Buffer, rep *Report) {
	s := rep.soak
	if s == nil {
		return
	}
	b.WriteString("## Field soak: CoAP and MQTT telemetry through outages\n\n")
	fmt.Fprintf(b, "e2e `%s` (issue 16) with the real gateway and bridge in namespaces, run by this command (%v): %s. ", s.Test, s.Took.Round(time.Second), s.Plan)
	b.WriteString("Central counts by device sequence number. *lost* = acknowledged to the device and missing at central; *dup* = delivered more than once (MQTT QoS 1 is at least once); *5.03* = telemetry the bridge answered 5.03 with Max-Age (passthrough while the uplink was down, or its exchange failed); *timeouts* = exchanges without any answer (the bridge was killed); *hs* = DTLS handshakes.\n\n")
	if s.Err != "" {
		fmt.Fprintf(b, "**Failed**: %s\n\n", strings.ReplaceAll(s.Err, "|", "/"))
	}
	if len(s.Devices) > 0 {
		b.WriteString("| device | kind | sent | acked | at central | lost | dup | 5.03 | timeouts | hs |\n|---|---|---:|---:|---:|---:|---:|---:|---:|---:|\n")
		for _, d := range s.Devices {
			fmt.Fprintf(b, "| %s | %s | %d | %d | %d | %d | %d | %d | %d | %d |\n", d.Name, d.Kind, d.Sent, d.Acked, d.AtCentral, d.Lost, d.Duplicated, d.Unavailable, d.TimedOut, d.Handshakes)
		}
		fmt.Fprintf(b, "\nUplink back → first CoAP message at central, per cycle (0s: it arrived before the 100 ms /status poll saw the uplink up): %s; spooled CoAP retransmissions %.0f; upstream conns replaced %.0f.\n\n",
			strings.Join(s.FirstCoAP, ", "), s.Retrans, s.Replaced)
	}
}
