package realpeer

import (
	"context"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/fleetgate/fleetgate/internal/netns"
	"github.com/fleetgate/fleetgate/internal/testenv"
)

// CharonConfig configures StartCharon.
type CharonConfig struct {
	// Swanctl is a swanctl.conf (connections, secrets, authorities) loaded
	// with "swanctl --load-all" once charon is up; it may be empty and
	// loaded later with Load.
	Swanctl string
	// Files are written relative to the swanctl directory before loading:
	// "x509ca/ca.pem", "x509/me.pem", "ecdsa/me.key", "private/me.key" ...
	// (see PKI).
	Files map[string][]byte
	// LogLevel is the ike/chd/cfg/net log level (default 2; 4 logs key
	// material, never use it outside throwaway tests).
	LogLevel int
	// Charon holds extra lines for the charon { } section of
	// strongswan.conf, e.g. "retransmit_tries = 3".
	Charon string
}

// Charon is a running strongSwan charon with a private configuration.
type Charon struct {
	// Dir is the private directory: strongswan.conf, swanctl.conf and the
	// swanctl credential directories.
	Dir string
	// Vici is the path of charon's control socket.
	Vici string
	// LogPath is charon's log file.
	LogPath string
	// Proc is the charon process.
	Proc *netns.Proc

	swanctl string
	conf    string
}

// StartCharon starts charon in h (nil: the root namespace) with its own
// strongswan.conf (via STRONGSWAN_CONF, with no include of /etc), its own
// vici socket and a private /run (a tmpfs in a private mount namespace) for
// its pid file, then loads cfg.Swanctl. charon's IKE ports are the standard
// 500/4500, so in the root namespace only one charon can run at a time:
// give each one a host.
func StartCharon(t testing.TB, h *netns.Host, cfg CharonConfig) *Charon {
	t.Helper()
	testenv.RequireRoot(t)
	bin := testenv.RequireBinary(t, "charon")
	swanctl := testenv.RequireBinary(t, "swanctl")
	dir := privateDir(t, "charon")
	c := &Charon{Dir: dir, Vici: filepath.Join(dir, "charon.vici"), LogPath: filepath.Join(dir, "charon.log"), swanctl: swanctl}
	lvl := cfg.LogLevel
	if lvl == 0 {
		lvl = 2
	}
	c.conf = filepath.Join(dir, "strongswan.conf")
	writeFile(t, c.conf, fmt.Appendf(nil, `charon {
  load = random nonce openssl pem pkcs1 pkcs8 x509 pubkey revocation constraints kernel-netlink socket-default vici
  install_routes = no
  install_virtual_ip = no
  retransmit_tries = 3
  retransmit_timeout = 1
  %s
  filelog {
    fg {
      path = %s
      default = 1
      ike = %d
      chd = %d
      cfg = %d
      net = %d
      knl = 1
      flush_line = yes
      time_format = %%H:%%M:%%S
    }
  }
  syslog {
    daemon {
      default = -1
    }
  }
  plugins {
    vici {
      socket = unix://%s
    }
  }
}
swanctl {
  socket = unix://%s
}
`, cfg.Charon, c.LogPath, lvl, lvl, lvl, lvl, c.Vici, c.Vici))
	logOnFailure(t, "charon log", c.LogPath)
	cmd := h.Command("unshare", "-m", "--propagation", "private", "sh", "-c", "mount -t tmpfs fgcharon /run && exec "+bin)
	cmd.Env = append(os.Environ(), "STRONGSWAN_CONF="+c.conf)
	c.Proc = netns.Start(t, cmd)
	// Ready when the socket accepts a connection: charon creates the file
	// at bind(2), a moment before listen(2), and a swanctl that connects
	// in between is refused (seen under load).
	if !poll(10*time.Second, func() bool {
		conn, err := net.Dial("unix", c.Vici)
		if err != nil {
			return false
		}
		_ = conn.Close()
		return true
	}) {
		t.Fatalf("%v: charon created no vici socket:\n%s", ErrNotReady, c.Proc.Output())
	}
	for name, b := range cfg.Files {
		writeFile(t, filepath.Join(dir, name), b)
	}
	if cfg.Swanctl != "" {
		c.Load(t, cfg.Swanctl)
	}
	return c
}

// Swanctl runs swanctl against this charon (its vici socket and
// strongswan.conf) and returns the combined output.
func (c *Charon) Swanctl(ctx context.Context, args ...string) (string, error) {
	cmd := exec.CommandContext(ctx, c.swanctl, append(args, "--uri", "unix://"+c.Vici)...)
	cmd.Env = append(os.Environ(), "STRONGSWAN_CONF="+c.conf)
	out, err := cmd.CombinedOutput()
	if err != nil {
		return string(out), fmt.Errorf("realpeer: swanctl %s: %w", strings.Join(args, " "), err)
	}
	return string(out), nil
}

// Load writes conf as the swanctl.conf and loads everything
// (connections, secrets, credentials in the swanctl directories).
func (c *Charon) Load(t testing.TB, conf string) {
	t.Helper()
	p := filepath.Join(c.Dir, "swanctl.conf")
	writeFile(t, p, []byte(conf))
	if out, err := c.Swanctl(t.Context(), "--load-all", "--noprompt", "--file", p); err != nil {
		t.Fatalf("%v\n%s", err, out)
	}
}

// Initiate asks charon to initiate child (and its IKE SA), waiting at most
// timeout. It returns swanctl's output; on this kernel the error is
// expected once the SA install fails, so judge by WaitLog.
func (c *Charon) Initiate(ctx context.Context, child string, timeout time.Duration) (string, error) {
	return c.Swanctl(ctx, "--initiate", "--child", child, "--timeout", fmt.Sprint(int(timeout.Seconds())))
}

// Log returns charon's log so far.
func (c *Charon) Log() string {
	b, _ := os.ReadFile(c.LogPath)
	return string(b)
}

// WaitLog waits until charon's log contains every string in want and
// returns the log; it fails the test after timeout. Useful lines:
// "IKE_SA <name>[1] established", "CHILD_SA <name>{1} established",
// "received netlink error: Protocol not supported" (no ESP in this kernel),
// "unable to install inbound and outbound IPsec SA".
func (c *Charon) WaitLog(t testing.TB, timeout time.Duration, want ...string) string {
	t.Helper()
	var log string
	if !poll(timeout, func() bool { log = c.Log(); return containsAll(log, want) }) {
		t.Fatalf("charon's log lacks %q after %v", want, timeout)
	}
	return log
}

// StartCharonIPsecConf starts strongSwan the legacy way, as the
// `gateway client-config --format ipsec` output is meant to be used: the
// starter reads ipsecConf (an ipsec.conf) and drives charon over the
// stroke socket; charon's stroke plugin reads ipsecSecrets (an
// ipsec.secrets). Both run in h with a private /run; the returned Charon
// has no vici socket (Swanctl and Load do not apply), Log and WaitLog do.
func StartCharonIPsecConf(t testing.TB, h *netns.Host, ipsecConf, ipsecSecrets string) *Charon {
	t.Helper()
	testenv.RequireRoot(t)
	testenv.RequireBinary(t, "charon")
	starter := "/usr/lib/ipsec/starter"
	if _, err := os.Stat(starter); err != nil {
		starter = testenv.RequireBinary(t, "starter")
	}
	dir := privateDir(t, "starter")
	c := &Charon{Dir: dir, LogPath: filepath.Join(dir, "charon.log")}
	c.conf = filepath.Join(dir, "strongswan.conf")
	confPath, secretsPath := filepath.Join(dir, "ipsec.conf"), filepath.Join(dir, "ipsec.secrets")
	writeFile(t, confPath, []byte(ipsecConf))
	writeFile(t, secretsPath, []byte(ipsecSecrets))
	writeFile(t, c.conf, fmt.Appendf(nil, `charon {
  load = random nonce openssl pem pkcs1 pkcs8 x509 pubkey revocation constraints kernel-netlink socket-default stroke
  install_routes = no
  install_virtual_ip = no
  retransmit_tries = 3
  retransmit_timeout = 1
  filelog {
    fg {
      path = %s
      default = 1
      ike = 2
      cfg = 2
      chd = 2
      net = 2
      flush_line = yes
    }
  }
  syslog {
    daemon {
      default = -1
    }
  }
  plugins {
    stroke {
      secrets_file = %s
    }
  }
}
starter {
  load_warning = no
}
`, c.LogPath, secretsPath))
	logOnFailure(t, "charon log", c.LogPath)
	cmd := h.Command("unshare", "-m", "--propagation", "private", "sh", "-c",
		"mount -t tmpfs fgstarter /run && exec "+starter+" --nofork --conf "+confPath)
	cmd.Env = append(os.Environ(), "STRONGSWAN_CONF="+c.conf)
	c.Proc = netns.Start(t, cmd)
	return c
}
