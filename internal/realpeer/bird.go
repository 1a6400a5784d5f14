package realpeer

import (
	"context"
	"fmt"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/fleetgate/fleetgate/internal/netns"
	"github.com/fleetgate/fleetgate/internal/testenv"
)

// BirdNeighbor is one BGP session of a Bird router.
type BirdNeighbor struct {
	// Name is the protocol name in bird ("peer_gw1"; not a bird keyword
	// such as "gw"); birdc commands use it.
	Name string
	// Addr and AS of the neighbour.
	Addr string
	AS   uint32
	// Password enables TCP MD5 (RFC 2385).
	Password string
	// HoldTime in seconds (bird's default 240 when 0).
	HoldTime int
	// Active lets bird dial the neighbour too; by default it only
	// listens (passive), as the gateway dials its central routers.
	Active bool
}

// BirdConfig configures StartBird.
type BirdConfig struct {
	// RouterID and AS of the bird router.
	RouterID string
	AS       uint32
	// Neighbors are its BGP sessions.
	Neighbors []BirdNeighbor
	// Kernel exports the best routes into the namespace's kernel table,
	// so the host forwards along what BGP learnt.
	Kernel bool
	// IPv6 adds an IPv6 unicast channel to every BGP session (RFC 4760
	// multiprotocol routes over the same session).
	IPv6 bool
}

// Bird is a running BIRD 2 (Debian's bird2, "-f": foreground) with a
// private configuration and control socket.
type Bird struct {
	// Dir holds bird.conf and the control socket.
	Dir string
	// Socket is the control socket birdc talks to.
	Socket string
	// Proc is the bird process; its output is bird's log.
	Proc *netns.Proc
}

// StartBird starts bird in h (a namespace: BGP uses port 179) and waits
// until its control socket answers.
func StartBird(t testing.TB, h *netns.Host, cfg BirdConfig) *Bird {
	t.Helper()
	testenv.RequireRoot(t)
	bin := testenv.RequireBinary(t, "bird")
	testenv.RequireBinary(t, "birdc")
	if h == nil {
		t.Fatal("realpeer: StartBird needs a namespace host")
	}
	b := &Bird{Dir: privateDir(t, "bird")}
	b.Socket = filepath.Join(b.Dir, "bird.ctl")
	var conf strings.Builder
	fmt.Fprintf(&conf, "router id %s;\nlog stderr all;\nprotocol device { scan time 10; }\n", cfg.RouterID)
	if cfg.Kernel {
		conf.WriteString("protocol kernel { ipv4 { export all; }; }\n")
	}
	for _, n := range cfg.Neighbors {
		fmt.Fprintf(&conf, "protocol bgp %s {\n\tlocal as %d;\n\tneighbor %s as %d;\n", n.Name, cfg.AS, n.Addr, n.AS)
		if !n.Active {
			conf.WriteString("\tpassive on;\n")
		}
		if n.Password != "" {
			fmt.Fprintf(&conf, "\tpassword %q;\n", n.Password)
		}
		if n.HoldTime > 0 {
			fmt.Fprintf(&conf, "\thold time %d;\n", n.HoldTime)
		}
		conf.WriteString("\tipv4 { import all; export none; };\n")
		if cfg.IPv6 {
			conf.WriteString("\tipv6 { import all; export none; };\n")
		}
		conf.WriteString("}\n")
	}
	path := filepath.Join(b.Dir, "bird.conf")
	writeFile(t, path, []byte(conf.String()))
	b.Proc = netns.Start(t, h.Command(bin, "-f", "-c", path, "-s", b.Socket, "-P", filepath.Join(b.Dir, "bird.pid")))
	if !poll(10*time.Second, func() bool {
		select {
		case <-b.Proc.Done():
			return true
		default:
		}
		out, err := b.Command("show status")
		return err == nil && strings.Contains(out, "Daemon is up and running")
	}) || !strings.Contains(func() string { o, _ := b.Command("show status"); return o }(), "Daemon is up and running") {
		t.Fatalf("%v: bird did not answer on %s:\n%s\nconfig:\n%s", ErrNotReady, b.Socket, b.Proc.Output(), conf.String())
	}
	return b
}

// Command runs one birdc command (e.g. "show route") and returns its
// output.
func (b *Bird) Command(cmd string) (string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	out, err := exec.CommandContext(ctx, "birdc", append([]string{"-s", b.Socket}, strings.Fields(cmd)...)...).CombinedOutput()
	return string(out), err
}

// Routes returns `birdc show route` (all routes bird holds, with their
// next hops).
func (b *Bird) Routes() string {
	out, _ := b.Command("show route")
	return out
}

// HasRoute reports whether bird holds prefix with next hop via (e.g.
// "10.10.8.0/24", "192.0.2.1").
func (b *Bird) HasRoute(prefix, via string) bool {
	out, err := b.Command("show route " + prefix)
	if err != nil {
		return false
	}
	for _, l := range strings.Split(out, "\n") {
		if strings.Contains(l, "via "+via+" ") || strings.HasSuffix(l, "via "+via) {
			return strings.Contains(out, prefix)
		}
	}
	return false
}

// WaitRoute waits until HasRoute(prefix, via) equals present.
func (b *Bird) WaitRoute(prefix, via string, present bool, timeout time.Duration) bool {
	return poll(timeout, func() bool { return b.HasRoute(prefix, via) == present })
}

// Established reports whether bird's protocol name is in BGP state
// Established.
func (b *Bird) Established(name string) bool {
	out, _ := b.Command("show protocols " + name)
	return strings.Contains(out, "Established")
}
