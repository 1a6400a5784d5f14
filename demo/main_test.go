package main

import (
	"bufio"
	"errors"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// signalScenario is a small fleet so the demo is all green within seconds.
const signalScenario = `
name: signal-test
seed: 3
target: {coap: "127.0.0.1:1", coap_path: /telemetry, mqtt: "127.0.0.1:1", mqtt_topic: telemetry/senml, server_name: bridge.local, insecure_skip_verify: true}
credentials: {seed: fleetgate-signal-test}
groups:
  - {name: psk, count: 3, protocol: coap, auth: psk, suite: ccm8, cid: true, format: cbor, interval: 1s}
  - {name: mqtt, count: 2, protocol: mqtt, format: json, interval: 1s}
`

var (
	buildOnce sync.Once
	binPath   string
	buildErr  error
)

// demoBinary builds the demo command once per test binary.
func demoBinary(t *testing.T) string {
	t.Helper()
	buildOnce.Do(func() {
		dir, err := os.MkdirTemp("", "fleetgate-demo-bin-")
		if err != nil {
			buildErr = err
			return
		}
		binPath = filepath.Join(dir, "demo")
		out, err := exec.Command("go", "build", "-o", binPath, ".").CombinedOutput()
		if err != nil {
			buildErr = errors.New(string(out))
		}
	})
	if buildErr != nil {
		t.Fatalf("go build: %v", buildErr)
	}
	return binPath
}

func TestMain(m *testing.M) {
	code := m.Run()
	if binPath != "" {
		_ = os.RemoveAll(filepath.Dir(binPath))
	}
	os.Exit(code)
}

// runUntil starts the built demo on the small fleet, waits for a line
// containing every string of want (at most 60 s; on stdout, or with -v on stderr where the
// components log), sends sig and returns the whole stdout, the exit code
// and how long the process took to exit after sig.
func runUntil(t *testing.T, want []string, onStderr bool, sig syscall.Signal) (string, int, time.Duration) {
	t.Helper()
	sc := filepath.Join(t.TempDir(), "fleet.yaml")
	if err := os.WriteFile(sc, []byte(signalScenario), 0o644); err != nil {
		t.Fatal(err)
	}
	args := []string{"--scenario", sc}
	if onStderr {
		args = append(args, "-v")
	}
	cmd := exec.Command(demoBinary(t), args...)
	cmd.Env = append(os.Environ(), "GOTRACEBACK=all")
	var out, stderr strings.Builder
	var watched io.Reader
	if onStderr {
		pipe, err := cmd.StderrPipe()
		if err != nil {
			t.Fatal(err)
		}
		watched, cmd.Stdout = pipe, &out
	} else {
		pipe, err := cmd.StdoutPipe()
		if err != nil {
			t.Fatal(err)
		}
		watched, cmd.Stderr = pipe, &stderr
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan struct{})
	t.Cleanup(func() {
		select {
		case <-exited:
		default:
			_ = cmd.Process.Kill()
			<-exited
		}
	})
	seen := make(chan struct{})
	readDone := make(chan struct{})
	go func() {
		defer close(readDone)
		s := bufio.NewScanner(watched)
		s.Buffer(nil, 1<<20)
		once := sync.Once{}
		dst := &out
		if onStderr {
			dst = &stderr
		}
		for s.Scan() {
			dst.WriteString(s.Text() + "\n")
			all := true
			for _, w := range want {
				all = all && strings.Contains(s.Text(), w)
			}
			if all {
				once.Do(func() { close(seen) })
			}
		}
	}()
	var waitErr error
	go func() { <-readDone; waitErr = cmd.Wait(); close(exited) }()
	select {
	case <-seen:
	case <-exited:
		t.Fatalf("demo exited before %q:\n%s\nstderr:\n%s", want, out.String(), stderr.String())
	case <-time.After(60 * time.Second):
		t.Fatalf("no %q within 60s:\n%s", want, out.String())
	}
	sent := time.Now()
	if err := cmd.Process.Signal(sig); err != nil {
		t.Fatal(err)
	}
	const bound = 20 * time.Second
	select {
	case <-exited:
	case <-time.After(bound):
		_ = cmd.Process.Signal(syscall.SIGQUIT) // goroutine dump for the failure message
		<-exited
		t.Fatalf("demo still running %v after %v:\n%s\nstderr:\n%s", bound, sig, out.String(), stderr.String())
	}
	took := time.Since(sent)
	code := 0
	var ee *exec.ExitError
	if errors.As(waitErr, &ee) {
		code = ee.ExitCode()
		if ws, ok := ee.Sys().(syscall.WaitStatus); ok && ws.Signaled() {
			t.Fatalf("demo killed by %v instead of exiting:\n%s", ws.Signal(), stderr.String())
		}
	} else if waitErr != nil {
		t.Fatal(waitErr)
	}
	for _, bad := range []string{"goroutine ", "panic:", "SIGQUIT", "fatal error"} {
		if strings.Contains(stderr.String(), bad) || strings.Contains(out.String(), bad) {
			t.Fatalf("output contains %q:\nstdout:\n%s\nstderr:\n%s", bad, out.String(), stderr.String())
		}
	}
	return out.String(), code, took
}

// TestCtrlCAfterSuccess: SIGINT (Ctrl-C) once every endpoint reported and
// the CoAP round trip and the MQTT command succeeded: the demo stops every component, prints SUCCESS
// and exits 0.
func TestCtrlCAfterSuccess(t *testing.T) {
	out, code, took := runUntil(t, []string{"endpoints reporting 5/5 |", "| round trip: OK", "| mqtt command: OK"}, false, syscall.SIGINT)
	if code != 0 || !strings.Contains(out, "\nSUCCESS: telemetry from all 5 endpoints") {
		t.Fatalf("after Ctrl-C: exit %d, want 0 with a SUCCESS summary:\n%s", code, out)
	}
	t.Logf("exited %v after SIGINT, code %d", took.Round(time.Millisecond), code)
}

// TestSIGTERMDuringStart: SIGTERM as soon as the bridge started dialling
// its uplink (its "bridge started" log line), before any telemetry: a
// clean stop with the FAILURE summary naming what was missing, exit 1 (or,
// should every device have made it in time, SUCCESS and 0: the exit code
// always matches the summary).
func TestSIGTERMDuringStart(t *testing.T) {
	out, code, took := runUntil(t, []string{"bridge started"}, true, syscall.SIGTERM)
	switch {
	case strings.Contains(out, "\nFAILURE ("):
		if code != 1 {
			t.Fatalf("FAILURE summary with exit %d, want 1:\n%s", code, out)
		}
	case strings.Contains(out, "\nSUCCESS: "):
		if code != 0 {
			t.Fatalf("SUCCESS summary with exit %d, want 0:\n%s", code, out)
		}
	default:
		t.Fatalf("no summary after SIGTERM (exit %d):\n%s", code, out)
	}
	t.Logf("exited %v after SIGTERM, code %d; summary:\n%s", took.Round(time.Millisecond), code, out[strings.LastIndex(out, "\n\n")+1:])
}
