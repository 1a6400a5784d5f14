// Device child processes of the CoAP relay measurement: the child side
// (helper-coap-devices: connect, closed-loop runs, sequential latency) and
// the parent side that starts them, spreads the fleet and sums their samples.

package suite

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/netip"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/plgd-dev/go-coap/v3/message"
	"github.com/plgd-dev/go-coap/v3/message/codes"
)

// childResult is what a device child reports for one command.
type childResult struct {
	Ready  bool    `json:"ready,omitempty"`
	N      uint64  `json:"n"`
	Failed uint64  `json:"failed"`
	Err    string  `json:"err,omitempty"`
	LatUS  []int32 `json:"lat_us,omitempty"`
}

// helperCoAPDevices is a device child: spec is
// state-file:start:count:source-ip:dst-host:dst-port. It connects its
// devices (16 handshakes in flight), prints {"ready":true} and then runs
// the commands it reads: "run <in flight> <duration>" (closed loop, one
// CON PUT at a time per device, at most <in flight> in this child) and
// "seq <n>" (one device, n sequential requests), each answered with one
// JSON line. EOF ends it.
func helperCoAPDevices(spec string) int {
	cs, code := parseDeviceChildSpec("helper-coap-devices", spec, 6)
	if code != 0 {
		return code
	}
	if len(cs.devs) == 0 {
		logf("helper-coap-devices: bad spec %q", spec)
		return 2
	}
	devs, src, dst := cs.devs, cs.src, cs.dst
	enc := json.NewEncoder(os.Stdout)
	conns, err := dialFleet(devs, src, dst, 16, true)
	if err != nil {
		_ = enc.Encode(childResult{Err: err.Error()})
		return 1
	}
	defer closeFleet(conns)
	_ = enc.Encode(childResult{Ready: true})
	sc := bufio.NewScanner(os.Stdin)
	for sc.Scan() {
		w := strings.Fields(sc.Text())
		var res childResult
		switch {
		case len(w) == 3 && w[0] == "run":
			inflight, _ := strconv.Atoi(w[1])
			dur, _ := time.ParseDuration(w[2])
			res = childSample(conns, max(1, inflight), dur)
		case len(w) == 2 && w[0] == "seq":
			n, _ := strconv.Atoi(w[1])
			d, err := seqLatency(conns[0], n)
			if err != nil {
				res.Err = err.Error()
			}
			for _, x := range d {
				res.LatUS = append(res.LatUS, int32(x/time.Microsecond))
			}
			res.N = uint64(len(d))
		default:
			res.Err = "bad command " + sc.Text()
		}
		_ = enc.Encode(res)
	}
	return 0
}

// childSample runs every device in a closed loop (one CON PUT
// /example_data at a time each, at most inflight at once: more overflows
// the servers' default UDP receive buffers and turns the figure into
// CoAP's 2 s retransmission timer) for dur and counts the exchanges
// completed within it; anything but 2.04/2.01 fails the device.
func childSample(conns []*devConn, inflight int, dur time.Duration) childResult {
	sem := make(chan struct{}, inflight)
	payload := []byte(`[{"n":"temp","u":"Cel","v":21.5}]`)
	var done, failed atomic.Uint64
	var firstErr atomic.Value
	stop := make(chan struct{})
	var wg sync.WaitGroup
	var mu sync.Mutex
	var lat []int32
	for _, c := range conns {
		wg.Add(1)
		go func() {
			defer wg.Done()
			var local []int32
			defer func() { mu.Lock(); lat = append(lat, local...); mu.Unlock() }()
			for {
				select {
				case <-stop:
					return
				case sem <- struct{}{}:
				}
				ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
				s := time.Now()
				resp, err := c.cc.Put(ctx, "/example_data", message.TextPlain, bytes.NewReader(payload))
				cancel()
				<-sem
				if err == nil && resp.Code() != codes.Changed && resp.Code() != codes.Created {
					err = fmt.Errorf("got %v, want 2.04 or 2.01", resp.Code())
				}
				if err != nil {
					if failed.Add(1) == 1 {
						firstErr.Store(err.Error())
					}
					return
				}
				select {
				case <-stop: // finished after the window: not counted
					return
				default:
				}
				local = append(local, int32(time.Since(s)/time.Microsecond))
				done.Add(1)
			}
		}()
	}
	time.Sleep(dur)
	n := done.Load()
	close(stop)
	wg.Wait()
	res := childResult{N: n, Failed: failed.Load(), LatUS: lat}
	if e, ok := firstErr.Load().(string); ok {
		res.Err = e
	}
	return res
}

// seqLatency measures unloaded round trips: one device, one request at a
// time, n requests.
func seqLatency(c *devConn, n int) ([]time.Duration, error) {
	payload := []byte(`[{"n":"temp","u":"Cel","v":21.5}]`)
	d := make([]time.Duration, 0, n)
	for range n {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		s := time.Now()
		resp, err := c.cc.Put(ctx, "/example_data", message.TextPlain, bytes.NewReader(payload))
		cancel()
		if err != nil {
			return nil, err
		}
		if resp.Code() != codes.Changed && resp.Code() != codes.Created {
			return nil, fmt.Errorf("got %v, want 2.04 or 2.01", resp.Code())
		}
		d = append(d, time.Since(s))
	}
	return d, nil
}

// child is a running helper process with line-oriented pipes.
type child struct {
	cmd *exec.Cmd
	in  io.WriteCloser
	out *bufio.Scanner
}

func startChild(t testing.TB, args ...string) *child {
	t.Helper()
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(exe, args...)
	in, out := launch(t, cmd, true)
	stopOnCleanup(t, cmd, in, 30*time.Second)
	c := &child{cmd: cmd, in: in, out: bufio.NewScanner(out)}
	c.out.Buffer(make([]byte, 1<<20), 64<<20)
	return c
}

func (c *child) line() (string, error) {
	if !c.out.Scan() {
		if err := c.out.Err(); err != nil {
			return "", err
		}
		return "", io.EOF
	}
	return c.out.Text(), nil
}

func (c *child) result() (childResult, error) {
	l, err := c.line()
	if err != nil {
		return childResult{}, fmt.Errorf("device child: %w", err)
	}
	var r childResult
	if err := json.Unmarshal([]byte(l), &r); err != nil {
		return childResult{}, fmt.Errorf("device child: %q: %w", tail(l, 200), err)
	}
	return r, nil
}

// fleetChildren starts device children for devices [0, n) of the state
// file, at most coapPerChild each, each on its own loopback source
// address 127.<net>.<k>.1, all connected to dst; it returns once all are
// ready.
func fleetChildren(t testing.TB, state string, n int, netByte int, dst netip.AddrPort) ([]*child, []int, error) {
	var cs []*child
	var sizes []int
	for k := 0; k*coapPerChild < n; k++ {
		start, cnt := k*coapPerChild, min(coapPerChild, n-k*coapPerChild)
		spec := fmt.Sprintf("%s:%d:%d:127.%d.%d.1:%s:%d", state, start, cnt, netByte, k, dst.Addr(), dst.Port())
		cs = append(cs, startChild(t, "-helper-coap-devices", spec))
		sizes = append(sizes, cnt)
	}
	for _, c := range cs {
		r, err := c.result()
		if err != nil {
			return nil, nil, err
		}
		if !r.Ready {
			return nil, nil, fmt.Errorf("device child: %s", r.Err)
		}
	}
	return cs, sizes, nil
}

// runChildren sends "run" to every child (in flight split by size) and
// merges their results; cpu is the CPU of the measured server over the
// same interval.
func runChildren(cs []*child, sizes []int, inflight int, dur time.Duration, cpu func() time.Duration, lat *[]int32) (Sample, error) {
	total := 0
	for _, s := range sizes {
		total += s
	}
	c0 := cpu()
	for i, c := range cs {
		if _, err := fmt.Fprintf(c.in, "run %d %v\n", max(1, inflight*sizes[i]/total), dur); err != nil {
			return Sample{}, err
		}
	}
	var n, failed uint64
	var firstErr string
	for _, c := range cs {
		r, err := c.result()
		if err != nil {
			return Sample{}, err
		}
		n += r.N
		failed += r.Failed
		if r.Err != "" && firstErr == "" {
			firstErr = r.Err
		}
		*lat = append(*lat, r.LatUS...)
	}
	used := cpu() - c0
	if failed > 0 {
		return Sample{}, fmt.Errorf("%d devices failed, first: %s", failed, firstErr)
	}
	if n == 0 {
		return Sample{}, fmt.Errorf("no request completed in %v", dur)
	}
	return Sample{Rate: float64(n) / dur.Seconds(), CPUPerOp: used / time.Duration(n)}, nil
}

func seqChild(c *child, n int) ([]int32, error) {
	if _, err := fmt.Fprintf(c.in, "seq %d\n", n); err != nil {
		return nil, err
	}
	r, err := c.result()
	if err != nil {
		return nil, err
	}
	if r.Err != "" {
		return nil, fmt.Errorf("%s", r.Err)
	}
	return r.LatUS, nil
}
