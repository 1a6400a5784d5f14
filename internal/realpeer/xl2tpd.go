package realpeer

import (
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/fleetgate/fleetgate/internal/netns"
	"github.com/fleetgate/fleetgate/internal/testenv"
)

// XL2TPDConfig configures StartXL2TPD as LAC (LNS set) or LNS (LNS unset).
type XL2TPDConfig struct {
	// Listen is the local address and UDP port (default 0.0.0.0:1701 in a
	// host; in the root namespace pick a free port with FreePort).
	Listen netip.AddrPort
	// LNS, when valid, makes xl2tpd a LAC dialling this LNS ([lac fg],
	// autodial unless NoAutodial).
	LNS netip.AddrPort
	// NoAutodial leaves the LAC idle until Dial.
	NoAutodial bool
	// IPRange and LocalIP configure an LNS ([lns default]); defaults
	// 10.77.1.10-10.77.1.20 and 10.77.1.1.
	IPRange, LocalIP string
	// Extra is appended to the LAC or LNS section verbatim.
	Extra string
	// Conf, when set, is the whole xl2tpd.conf instead of one built from
	// the fields above (to test a configuration we generate); Listen is
	// then only informational.
	Conf string
}

// XL2TPD is a running xl2tpd (foreground, -D) with a private config,
// pid file and control pipe. pppd cannot run on this kernel (no
// /dev/ppp): xl2tpd brings tunnel and session up, then the call ends.
type XL2TPD struct {
	// Dir is the private directory (xl2tpd.conf, options.pppd, control).
	Dir string
	// Control is the control pipe path.
	Control string
	// Proc is the xl2tpd process; its output is xl2tpd's log.
	Proc *netns.Proc
}

// StartXL2TPD starts xl2tpd in h (nil: root namespace).
func StartXL2TPD(t testing.TB, h *netns.Host, cfg XL2TPDConfig) *XL2TPD {
	t.Helper()
	testenv.RequireRoot(t)
	bin := testenv.RequireBinary(t, "xl2tpd")
	dir := privateDir(t, "xl2tpd")
	x := &XL2TPD{Dir: dir, Control: filepath.Join(dir, "control")}
	if !cfg.Listen.IsValid() {
		cfg.Listen = netip.MustParseAddrPort("0.0.0.0:1701")
	}
	pppOpts := filepath.Join(dir, "options.pppd")
	writeFile(t, pppOpts, []byte("noauth\nnodefaultroute\nnodetach\ndebug\nname fgsite\nuser fgsite\npassword fgpass\n"))
	conf := fmt.Sprintf("[global]\nlisten-addr = %s\nport = %d\naccess control = no\n\n",
		cfg.Listen.Addr(), cfg.Listen.Port())
	if cfg.LNS.IsValid() {
		auto := "yes"
		if cfg.NoAutodial {
			auto = "no"
		}
		conf += fmt.Sprintf("[lac fg]\nlns = %s:%d\nautodial = %s\nredial = no\nrequire authentication = no\nlength bit = yes\npppoptfile = %s\n%s\n",
			cfg.LNS.Addr(), cfg.LNS.Port(), auto, pppOpts, cfg.Extra)
	} else {
		if cfg.IPRange == "" {
			cfg.IPRange, cfg.LocalIP = "10.77.1.10-10.77.1.20", "10.77.1.1"
		}
		conf += fmt.Sprintf("[lns default]\nip range = %s\nlocal ip = %s\nrequire authentication = no\nlength bit = yes\npppoptfile = %s\n%s\n",
			cfg.IPRange, cfg.LocalIP, pppOpts, cfg.Extra)
	}
	if cfg.Conf != "" {
		conf = cfg.Conf
	}
	writeFile(t, filepath.Join(dir, "xl2tpd.conf"), []byte(conf))
	// A private (empty) secrets file: never read the system's.
	writeFile(t, filepath.Join(dir, "l2tp-secrets"), nil)
	x.Proc = netns.Start(t, h.Command(bin, "-D", "-c", filepath.Join(dir, "xl2tpd.conf"),
		"-p", filepath.Join(dir, "xl2tpd.pid"), "-C", x.Control, "-s", filepath.Join(dir, "l2tp-secrets")))
	if !poll(5*time.Second, func() bool { _, err := os.Stat(x.Control); return err == nil }) {
		t.Fatalf("%v: xl2tpd made no control pipe:\n%s", ErrNotReady, x.Proc.Output())
	}
	return x
}

// Dial asks a LAC to connect ("c fg" on the control pipe).
func (x *XL2TPD) Dial(t testing.TB) {
	t.Helper()
	f, err := os.OpenFile(x.Control, os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if _, err := f.WriteString("c fg\n"); err != nil {
		t.Fatal(err)
	}
}

// WaitOutput waits until xl2tpd's output contains every string in want and
// returns it; it fails the test after timeout. Useful lines: "Connection
// established to <addr>, <port>.  Local: <id>, Remote: <id>", "Call
// established with <addr>, Local: <id>, Remote: <id>", "start_pppd".
func (x *XL2TPD) WaitOutput(t testing.TB, timeout time.Duration, want ...string) string {
	t.Helper()
	var out string
	if !poll(timeout, func() bool { out = x.Proc.Output(); return containsAll(out, want) }) {
		t.Fatalf("xl2tpd's output lacks %q after %v:\n%s", want, timeout, out)
	}
	return out
}
