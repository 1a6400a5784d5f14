package realpeer

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/fleetgate/fleetgate/internal/netns"
	"github.com/fleetgate/fleetgate/internal/testenv"
)

// RADIUSUser is one entry of FreeRADIUS's users file.
type RADIUSUser struct {
	// Name and Password (Cleartext-Password: PAP, CHAP and MS-CHAP work).
	Name, Password string
	// Reply holds reply attributes as FreeRADIUS writes them, e.g.
	// `Framed-IP-Address = 10.10.0.77`.
	Reply []string
}

// FreeRADIUSConfig configures StartFreeRADIUS.
type FreeRADIUSConfig struct {
	// Users are the users file's entries.
	Users []RADIUSUser
	// Secret is the shared secret (default "fleetgate-test-secret").
	Secret string
	// Port is the authentication port (accounting: Port+1) on loopback
	// when started without a host, e.g. to restart a server where a
	// stopped one was; 0 picks a free one.
	Port int
}

// FreeRADIUS is a running FreeRADIUS 3 (Debian's freeradius, "-X":
// foreground, debug log to its output) with a private configuration: a
// minimal radiusd.conf with pap, chap, mschap, files and detail, the
// system dictionary, one client and accounting written to a detail file.
type FreeRADIUS struct {
	// Auth and Acct are the authentication and accounting addresses
	// (host:port) as a NAS in the caller's namespace reaches them.
	Auth, Acct string
	// Secret is the shared secret.
	Secret string
	// Dir is the private configuration directory.
	Dir string
	// Proc is the freeradius process; its output is the debug log.
	Proc *netns.Proc
}

// StartFreeRADIUS starts FreeRADIUS in h and waits until it is ready. With
// a nil h it listens on free loopback ports of the root namespace for the
// client 127.0.0.1 (no root needed); in a host it listens on 1812/1813 on
// every address and accepts any client.
func StartFreeRADIUS(t testing.TB, h *netns.Host, cfg FreeRADIUSConfig) *FreeRADIUS {
	t.Helper()
	if h != nil {
		testenv.RequireRoot(t)
	}
	bin := testenv.RequireBinary(t, "freeradius")
	if cfg.Secret == "" {
		cfg.Secret = "fleetgate-test-secret"
	}
	s := &FreeRADIUS{Secret: cfg.Secret, Dir: privateDir(t, "radius")}
	for _, d := range []string{"detail", "run", "log"} {
		if err := os.MkdirAll(filepath.Join(s.Dir, d), 0o700); err != nil {
			t.Fatal(err)
		}
	}
	listen, client, authPort := "127.0.0.1", "127.0.0.1", 1812
	if h == nil {
		authPort = cfg.Port
		if authPort == 0 {
			authPort = FreePort(t) // and authPort+1, both TCP and UDP
		}
	} else {
		listen, client = "*", "0.0.0.0/0"
	}
	s.Auth = fmt.Sprintf("127.0.0.1:%d", authPort)
	s.Acct = fmt.Sprintf("127.0.0.1:%d", authPort+1)
	if h != nil {
		s.Auth = fmt.Sprintf("%s:%d", h.Addr, authPort)
		s.Acct = fmt.Sprintf("%s:%d", h.Addr, authPort+1)
	}
	// radiusd reads the shipped dictionaries itself; the local one (a
	// copy of the system's, or empty) only adds site attributes.
	dict, _ := os.ReadFile("/etc/freeradius/3.0/dictionary")
	var users strings.Builder
	for _, u := range cfg.Users {
		fmt.Fprintf(&users, "%s\tCleartext-Password := %q\n", u.Name, u.Password)
		if len(u.Reply) > 0 {
			users.WriteString("\t" + strings.Join(u.Reply, ",\n\t") + "\n")
		}
	}
	writeFile(t, filepath.Join(s.Dir, "dictionary"), dict)
	writeFile(t, filepath.Join(s.Dir, "users"), []byte(users.String()))
	writeFile(t, filepath.Join(s.Dir, "radiusd.conf"),
		[]byte(fmt.Sprintf(freeradiusConf, s.Dir, s.Secret, authPort, authPort+1, client, listen)))
	s.Proc = netns.Start(t, h.Command(bin, "-X", "-d", s.Dir))
	var out string
	if !poll(20*time.Second, func() bool {
		out = s.Proc.Output()
		select {
		case <-s.Proc.Done():
			return true
		default:
		}
		return strings.Contains(out, "Ready to process requests")
	}) || !strings.Contains(out, "Ready to process requests") {
		t.Fatalf("%v: freeradius did not get ready:\n%s", ErrNotReady, out)
	}
	return s
}

// Log returns what FreeRADIUS printed so far.
func (s *FreeRADIUS) Log() string { return s.Proc.Output() }

// Detail returns the accounting detail file's content.
func (s *FreeRADIUS) Detail() string {
	b, _ := os.ReadFile(filepath.Join(s.Dir, "detail", "detail"))
	return string(b)
}

const freeradiusConf = `# private FreeRADIUS for fleetgate tests
prefix = /usr
exec_prefix = /usr
sysconfdir = /etc
localstatedir = %[1]s
raddbdir = %[1]s
confdir = %[1]s
logdir = %[1]s/log
run_dir = %[1]s/run
libdir = /usr/lib/freeradius
pidfile = %[1]s/run/radiusd.pid
name = freeradius
max_request_time = 30
cleanup_delay = 5
max_requests = 1024
hostname_lookups = no
log {
	destination = stdout
	auth = yes
}
security {
	allow_core_dumps = no
	max_attributes = 200
	reject_delay = 0
	status_server = yes
}
proxy_requests = no
client fleetgate {
	ipaddr = %[5]s
	secret = %[2]s
	nas_type = other
}
thread pool {
	start_servers = 2
	max_servers = 4
	min_spare_servers = 1
	max_spare_servers = 2
}
modules {
	pap {
	}
	chap {
	}
	mschap {
	}
	files {
		filename = ${confdir}/users
	}
	detail {
		filename = ${confdir}/detail/detail
		permissions = 0600
		header = "%%t"
	}
}
server fleetgate {
	listen {
		type = auth
		ipaddr = %[6]s
		port = %[3]d
	}
	listen {
		type = acct
		ipaddr = %[6]s
		port = %[4]d
	}
	authorize {
		files
		chap
		mschap
		pap
	}
	authenticate {
		Auth-Type PAP {
			pap
		}
		Auth-Type CHAP {
			chap
		}
		Auth-Type MS-CHAP {
			mschap
		}
	}
	preacct {
	}
	accounting {
		detail
	}
	post-auth {
	}
}
`
