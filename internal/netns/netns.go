package netns

import (
	"bytes"
	"context"
	"fmt"
	"maps"
	"net/netip"
	"os"
	"os/exec"
	"regexp"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/fleetgate/fleetgate/internal/testenv"
)

// Options selects the optional parts of the topology built by New.
type Options struct {
	// NAT puts a "nat" host with nftables masquerade between the site(s)
	// and wan.
	NAT bool
	// SecondSite adds "edge2" and "sensors2" behind the same NAT; it
	// implies NAT.
	SecondSite bool
}

// Host is one network namespace in a Topology. A nil *Host stands for the
// root namespace: its Command, Start and Do run there unchanged, which lets
// launchers take an optional host.
type Host struct {
	// Name is the host's role name ("edge", "gw", ...).
	Name string
	// NS is the namespace name (under /run/netns).
	NS string
	// Addr is the host's main address: the one facing the gateway for
	// site hosts, the public one for nat, wan's site-side address, gw's
	// public address, the service address for central and sensors.
	Addr netip.Addr
	// Ifaces maps each interface (named after the neighbour it leads to)
	// to its address and prefix.
	Ifaces map[string]netip.Prefix

	topo *Topology // for WireSized to find the far end of a veth
}

// Topology is a set of hosts built by New or Pair.
type Topology struct {
	t     testing.TB
	hosts map[string]*Host
	opts  Options

	mu      sync.Mutex
	natPort int // index of the current masquerade port range
}

var seq atomic.Uint32

// staleName matches namespaces made by this package: fg<pid>x<n>-<host>.
var staleName = regexp.MustCompile(`^fg(\d+)x\d+-[a-z0-9]+$`)

var reapOnce sync.Once

// reapStale deletes, once per process, namespaces this package made in
// processes that no longer exist (a test binary killed before its
// cleanups ran).
func reapStale() { reapOnce.Do(reapStaleNow) }

func reapStaleNow() {
	ents, err := os.ReadDir("/run/netns")
	if err != nil {
		return
	}
	for _, e := range ents {
		m := staleName.FindStringSubmatch(e.Name())
		if m == nil {
			continue
		}
		pid, err := strconv.Atoi(m[1])
		if err != nil || pid == os.Getpid() || unix.Kill(pid, 0) != unix.ESRCH {
			continue
		}
		_ = exec.Command("ip", "netns", "del", e.Name()).Run()
	}
}

// link describes one veth between hosts a and b.
type link struct {
	a, b         string
	aAddr, bAddr string // with prefix length
}

// New builds the topology described in the package documentation and
// registers its removal with t.Cleanup. It needs root.
func New(t testing.TB, opts Options) *Topology {
	t.Helper()
	testenv.RequireRoot(t)
	if opts.SecondSite {
		opts.NAT = true
	}
	names := []string{"sensors", "edge", "wan", "gw", "central"}
	links := []link{
		{"sensors", "edge", "172.16.1.2/24", "172.16.1.1/24"},
		{"wan", "gw", "203.0.113.1/24", "203.0.113.2/24"},
		{"gw", "central", "10.200.0.1/24", "10.200.0.2/24"},
	}
	routes := map[string]string{ // default gateway per host
		"sensors": "172.16.1.1", "gw": "203.0.113.1", "central": "10.200.0.1",
	}
	addr := map[string]string{
		"sensors": "172.16.1.2", "wan": "198.51.100.1", "gw": "203.0.113.2", "central": "10.200.0.2",
	}
	if opts.NAT {
		names = append(names, "nat")
		links = append(links,
			link{"edge", "nat", "192.168.1.2/24", "192.168.1.1/24"},
			link{"nat", "wan", "198.51.100.2/24", "198.51.100.1/24"})
		routes["edge"], routes["nat"] = "192.168.1.1", "198.51.100.1"
		addr["edge"], addr["nat"] = "192.168.1.2", "198.51.100.2"
	} else {
		links = append(links, link{"edge", "wan", "198.51.100.2/24", "198.51.100.1/24"})
		routes["edge"] = "198.51.100.1"
		addr["edge"] = "198.51.100.2"
	}
	if opts.SecondSite {
		names = append(names, "sensors2", "edge2")
		links = append(links,
			link{"sensors2", "edge2", "172.16.2.2/24", "172.16.2.1/24"},
			link{"edge2", "nat", "192.168.2.2/24", "192.168.2.1/24"})
		routes["sensors2"], routes["edge2"] = "172.16.2.1", "192.168.2.1"
		addr["sensors2"], addr["edge2"] = "172.16.2.2", "192.168.2.2"
	}
	topo := build(t, names, links, routes, addr)
	topo.opts = opts
	for _, h := range []string{"edge", "edge2", "wan", "gw", "nat"} {
		if topo.hosts[h] != nil {
			topo.mustRun(h, "sysctl", "-qw", "net.ipv4.ip_forward=1")
		}
	}
	if opts.NAT {
		topo.mustNFT("nat", natRuleset(0))
		// The NAT routes the sensor LANs to their edge (as a site router
		// would), so sensors can reach the internet through it too.
		topo.mustRun("nat", "ip", "route", "add", "172.16.1.0/24", "via", "192.168.1.2")
		if opts.SecondSite {
			topo.mustRun("nat", "ip", "route", "add", "172.16.2.0/24", "via", "192.168.2.2")
		}
	}
	return topo
}

// Pair builds two hosts "a" (192.0.2.1/24) and "b" (192.0.2.2/24) joined by
// one veth (interface "b" in a, "a" in b). It needs root.
func Pair(t testing.TB) *Topology {
	t.Helper()
	testenv.RequireRoot(t)
	return build(t, []string{"a", "b"},
		[]link{{"a", "b", "192.0.2.1/24", "192.0.2.2/24"}}, nil,
		map[string]string{"a": "192.0.2.1", "b": "192.0.2.2"})
}

// One builds a single host "a" with only loopback (up; Addr 127.0.0.1),
// for tests that need a private network stack (a TUN device, routes,
// addresses on lo) rather than a topology. It needs root.
func One(t testing.TB) *Host {
	t.Helper()
	testenv.RequireRoot(t)
	return build(t, []string{"a"}, nil, nil, map[string]string{"a": "127.0.0.1"}).Host("a")
}

func build(t testing.TB, names []string, links []link, routes, addr map[string]string) *Topology {
	t.Helper()
	prefix := fmt.Sprintf("fg%dx%d-", os.Getpid(), seq.Add(1))
	topo := &Topology{t: t, hosts: map[string]*Host{}}
	for _, n := range names {
		h := &Host{Name: n, NS: prefix + n, Addr: netip.MustParseAddr(addr[n]), Ifaces: map[string]netip.Prefix{}, topo: topo}
		// A namespace of this name can only be left over from a
		// killed process that had our PID: it is stale.
		_ = exec.Command("ip", "netns", "del", h.NS).Run()
		reapStale()
		if out, err := exec.Command("ip", "netns", "add", h.NS).CombinedOutput(); err != nil {
			t.Fatalf("netns: ip netns add %s: %v: %s", h.NS, err, out)
		}
		ns := h.NS
		t.Cleanup(func() {
			if out, err := exec.Command("ip", "netns", "del", ns).CombinedOutput(); err != nil {
				t.Errorf("netns: ip netns del %s: %v: %s", ns, err, out)
			}
		})
		topo.hosts[n] = h
		topo.mustRun(n, "ip", "link", "set", "dev", "lo", "up")
	}
	for _, l := range links {
		a, b := topo.hosts[l.a], topo.hosts[l.b]
		topo.mustRun(l.a, "ip", "link", "add", "name", l.b, "type", "veth", "peer", "name", l.a, "netns", b.NS)
		a.Ifaces[l.b] = netip.MustParsePrefix(l.aAddr)
		b.Ifaces[l.a] = netip.MustParsePrefix(l.bAddr)
		topo.mustRun(l.a, "ip", addrAdd(l.aAddr, l.b)...)
		topo.mustRun(l.b, "ip", addrAdd(l.bAddr, l.a)...)
		topo.mustRun(l.a, "ip", "link", "set", "dev", l.b, "up")
		topo.mustRun(l.b, "ip", "link", "set", "dev", l.a, "up")
	}
	for h, gw := range routes {
		topo.mustRun(h, "ip", "route", "add", "default", "via", gw)
	}
	return topo
}

// addrAdd is the arguments of "ip addr add" for prefix on dev. An IPv6 address
// skips Duplicate Address Detection (nodad): a fresh veth's address would
// otherwise stay tentative (unusable as a source) for a second or more.
func addrAdd(prefix, dev string) []string {
	args := []string{"addr", "add", prefix, "dev", dev}
	if p, err := netip.ParsePrefix(prefix); err == nil && p.Addr().Is6() {
		args = append(args, "nodad")
	}
	return args
}

// Pair6 is Pair on an IPv6-only link: "a" 2001:db8::1/64 and "b"
// 2001:db8::2/64 (RFC 3849 documentation prefix), no IPv4 address but
// loopback. It needs root.
func Pair6(t testing.TB) *Topology {
	t.Helper()
	testenv.RequireRoot(t)
	return build(t, []string{"a", "b"},
		[]link{{"a", "b", "2001:db8::1/64", "2001:db8::2/64"}}, nil,
		map[string]string{"a": "2001:db8::1", "b": "2001:db8::2"})
}

// AddAddr adds one more address (with prefix length) to host's interface
// iface, e.g. an IPv6 address beside a link's IPv4 one; removed with the
// namespace.
func (topo *Topology) AddAddr(host, iface, prefix string) {
	topo.t.Helper()
	topo.mustRun(host, "ip", addrAdd(prefix, iface)...)
}

// Host returns the named host; it fails the test if there is none.
func (topo *Topology) Host(name string) *Host {
	h := topo.hosts[name]
	if h == nil {
		topo.t.Helper()
		topo.t.Fatalf("%v: %q", ErrNoHost, name)
	}
	return h
}

// Hosts returns the host names of the topology, sorted.
func (topo *Topology) Hosts() []string {
	return slices.Sorted(maps.Keys(topo.hosts))
}

func (topo *Topology) mustRun(host string, name string, args ...string) string {
	topo.t.Helper()
	out, err := topo.hosts[host].Command(name, args...).CombinedOutput()
	if err != nil {
		topo.t.Fatalf("netns: in %s: %s %s: %v: %s", host, name, strings.Join(args, " "), err, out)
	}
	return string(out)
}

// mustNFT loads an nftables script in host.
func (topo *Topology) mustNFT(host, script string) {
	topo.t.Helper()
	cmd := topo.hosts[host].Command("nft", "-f", "-")
	cmd.Stdin = strings.NewReader(script)
	if out, err := cmd.CombinedOutput(); err != nil {
		topo.t.Fatalf("netns: in %s: nft: %v: %s\nscript:\n%s", host, err, out, script)
	}
}

// Command returns an exec.Cmd running name inside the host's namespace
// (through "ip netns exec", which execs: the PID is the program's own).
func (h *Host) Command(name string, args ...string) *exec.Cmd {
	if h == nil {
		return exec.Command(name, args...)
	}
	return exec.Command("ip", append([]string{"netns", "exec", h.NS, name}, args...)...)
}

// CommandContext is Command with a context that kills the process.
func (h *Host) CommandContext(ctx context.Context, name string, args ...string) *exec.Cmd {
	if h == nil {
		return exec.CommandContext(ctx, name, args...)
	}
	return exec.CommandContext(ctx, "ip", append([]string{"netns", "exec", h.NS, name}, args...)...)
}

// Run runs a command in the host's namespace and returns its combined
// output; the error includes the output.
func (h *Host) Run(ctx context.Context, name string, args ...string) (string, error) {
	out, err := h.CommandContext(ctx, name, args...).CombinedOutput()
	if err != nil {
		return string(out), fmt.Errorf("netns: %s %s in %s: %w: %s", name, strings.Join(args, " "), h.ns(), err, bytes.TrimSpace(out))
	}
	return string(out), nil
}

func (h *Host) ns() string {
	if h == nil {
		return "root namespace"
	}
	return h.NS
}

// Do runs fn on a locked OS thread switched into the host's namespace and
// switches back afterwards. Sockets created by fn stay in the namespace for
// their whole life. If the thread cannot be switched back it is never
// unlocked, so the Go runtime discards it. A nil host runs fn directly.
func (h *Host) Do(fn func() error) error {
	if h == nil {
		return fn()
	}
	errc := make(chan error, 1)
	go func() {
		runtime.LockOSThread()
		orig, err := os.Open(fmt.Sprintf("/proc/self/task/%d/ns/net", unix.Gettid()))
		if err != nil {
			runtime.UnlockOSThread()
			errc <- fmt.Errorf("netns: open own namespace: %w", err)
			return
		}
		defer orig.Close()
		target, err := os.Open("/run/netns/" + h.NS)
		if err != nil {
			runtime.UnlockOSThread()
			errc <- fmt.Errorf("netns: %w", err)
			return
		}
		defer target.Close()
		if err := unix.Setns(int(target.Fd()), unix.CLONE_NEWNET); err != nil {
			runtime.UnlockOSThread()
			errc <- fmt.Errorf("netns: setns %s: %w", h.NS, err)
			return
		}
		ferr := fn()
		if err := unix.Setns(int(orig.Fd()), unix.CLONE_NEWNET); err != nil {
			// Leave the thread locked: the runtime kills it on exit.
			errc <- fmt.Errorf("netns: restore namespace: %w (fn: %v)", err, ferr)
			return
		}
		runtime.UnlockOSThread()
		errc <- ferr
	}()
	return <-errc
}

// Proc is a process started by Start. It is killed by PID at cleanup and
// its output is logged if the test failed.
type Proc struct {
	// Cmd is the started command.
	Cmd *exec.Cmd
	// PID is the process ID.
	PID  int
	out  lockedBuffer
	done chan struct{}
	err  error
}

// Start starts cmd (typically from Host.Command) with its stdout and stderr
// captured, kills it by PID at cleanup and, when the test failed, logs what
// it printed.
func Start(t testing.TB, cmd *exec.Cmd) *Proc {
	t.Helper()
	p := &Proc{Cmd: cmd, done: make(chan struct{})}
	if cmd.Stdout == nil {
		cmd.Stdout = &p.out
	}
	if cmd.Stderr == nil {
		cmd.Stderr = &p.out
	}
	if cmd.WaitDelay == 0 {
		// A forked child holding the output pipe must not block Wait.
		cmd.WaitDelay = time.Second
	}
	// If the test binary dies without running cleanups (killed, or its
	// output pipe closed), the kernel kills the process: Pdeathsig. It
	// fires when the forking OS thread exits, so the fork happens on a
	// locked thread that lives until the process has been reaped.
	if cmd.SysProcAttr == nil {
		cmd.SysProcAttr = &unix.SysProcAttr{}
	}
	cmd.SysProcAttr.Pdeathsig = unix.SIGKILL
	started := make(chan error, 1)
	go func() {
		runtime.LockOSThread()
		defer runtime.UnlockOSThread()
		if err := cmd.Start(); err != nil {
			started <- err
			return
		}
		started <- nil
		p.err = cmd.Wait()
		close(p.done)
	}()
	if err := <-started; err != nil {
		t.Fatalf("netns: start %v: %v", cmd.Args, err)
	}
	p.PID = cmd.Process.Pid
	t.Cleanup(func() {
		p.Stop()
		if t.Failed() {
			t.Logf("process %d %v output:\n%s", p.PID, cmd.Args, p.Output())
		}
	})
	return p
}

// Start starts name with args in the host's namespace; see the package
// function Start.
func (h *Host) Start(t testing.TB, name string, args ...string) *Proc {
	t.Helper()
	return Start(t, h.Command(name, args...))
}

// Output returns what the process printed so far.
func (p *Proc) Output() string { return p.out.String() }

// Done is closed when the process has exited.
func (p *Proc) Done() <-chan struct{} { return p.done }

// Err returns the process's exit error once Done is closed.
func (p *Proc) Err() error {
	<-p.done
	return p.err
}

// Stop sends SIGTERM by PID, waits up to two seconds, then SIGKILL. When
// the command was started with SysProcAttr.Setpgid (for daemons that fork
// workers), the signals go to the process group whose ID is that PID.
func (p *Proc) Stop() {
	pid := p.PID
	if a := p.Cmd.SysProcAttr; a != nil && a.Setpgid {
		pid = -pid
	}
	select {
	case <-p.done:
		if pid < 0 {
			_ = unix.Kill(pid, unix.SIGKILL) // workers that outlived the leader
		}
		return
	default:
	}
	_ = unix.Kill(pid, unix.SIGTERM)
	select {
	case <-p.done:
	case <-time.After(2 * time.Second):
		_ = unix.Kill(pid, unix.SIGKILL)
		<-p.done
	}
	if pid < 0 {
		_ = unix.Kill(pid, unix.SIGKILL)
	}
}

type lockedBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}
