// Package radiustest starts a private FreeRADIUS (Debian's freeradius 3.x)
// for tests: its own configuration directory under t.TempDir (a minimal
// radiusd.conf with pap, chap, mschap, files and detail), a users file with
// the test users, a client for 127.0.0.1, unprivileged loopback ports, and
// accounting written to a detail file the test can read. The process is
// stopped by PID in t.Cleanup.
package radiustest

import (
	"bufio"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/fleetgate/fleetgate/internal/testenv"
)

// User is one entry of the users file.
type User struct {
	Name     string
	Password string
	// Reply holds reply attributes as FreeRADIUS writes them, e.g.
	// `Framed-IP-Address = 10.10.0.77`.
	Reply []string
}

// Server is a running FreeRADIUS.
type Server struct {
	Auth, Acct string // host:port
	Secret     string
	Dir        string
	cmd        *exec.Cmd
	mu         sync.Mutex
	log        strings.Builder
}

// Log returns what FreeRADIUS printed so far (for failure messages).
func (s *Server) Log() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.log.String()
}

// Detail returns the accounting detail file's content.
func (s *Server) Detail() string {
	b, _ := os.ReadFile(filepath.Join(s.Dir, "detail", "detail"))
	return string(b)
}

func freePort(t testing.TB) int {
	t.Helper()
	c, err := net.ListenPacket("udp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	return c.LocalAddr().(*net.UDPAddr).Port
}

// Start launches FreeRADIUS with users; it skips (or fails in CI) when
// freeradius is not installed.
func Start(t testing.TB, users []User) *Server {
	t.Helper()
	bin := testenv.RequireBinary(t, "freeradius")
	dir := t.TempDir()
	for _, d := range []string{"detail", "run", "log"} {
		if err := os.MkdirAll(filepath.Join(dir, d), 0o700); err != nil {
			t.Fatal(err)
		}
	}
	dict, err := os.ReadFile("/etc/freeradius/3.0/dictionary")
	if err != nil {
		dict = nil // the local dictionary only adds site attributes
	}
	s := &Server{Secret: "fleetgate-test-secret", Dir: dir}
	authPort, acctPort := freePort(t), freePort(t)
	s.Auth = fmt.Sprintf("127.0.0.1:%d", authPort)
	s.Acct = fmt.Sprintf("127.0.0.1:%d", acctPort)
	var ub strings.Builder
	for _, u := range users {
		fmt.Fprintf(&ub, "%s\tCleartext-Password := %q\n", u.Name, u.Password)
		if len(u.Reply) > 0 {
			ub.WriteString("\t" + strings.Join(u.Reply, ",\n\t") + "\n")
		}
	}
	files := map[string]string{
		"dictionary":   string(dict),
		"users":        ub.String(),
		"radiusd.conf": fmt.Sprintf(confTemplate, dir, s.Secret, authPort, acctPort),
	}
	for name, content := range files {
		if err := os.WriteFile(filepath.Join(dir, name), []byte(content), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	s.cmd = exec.Command(bin, "-X", "-d", dir)
	pr, pw := io.Pipe()
	s.cmd.Stdout, s.cmd.Stderr = pw, pw
	if err := s.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	ready := make(chan struct{})
	exited := make(chan struct{})
	go func() {
		_ = s.cmd.Wait()
		pw.Close()
		close(exited)
	}()
	go func() {
		sc := bufio.NewScanner(pr)
		once := sync.Once{}
		for sc.Scan() {
			line := sc.Text()
			s.mu.Lock()
			s.log.WriteString(line + "\n")
			s.mu.Unlock()
			if strings.Contains(line, "Ready to process requests") {
				once.Do(func() { close(ready) })
			}
		}
	}()
	t.Cleanup(func() {
		_ = s.cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-exited:
		case <-time.After(5 * time.Second):
			_ = s.cmd.Process.Kill()
			<-exited
		}
	})
	select {
	case <-ready:
	case <-exited:
		t.Fatalf("freeradius exited during start-up:\n%s", s.Log())
	case <-time.After(20 * time.Second):
		t.Fatalf("freeradius not ready after 20s:\n%s", s.Log())
	}
	return s
}

const confTemplate = `# private FreeRADIUS for fleetgate tests
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
client localhost {
	ipaddr = 127.0.0.1
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
		ipaddr = 127.0.0.1
		port = %[3]d
	}
	listen {
		type = acct
		ipaddr = 127.0.0.1
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
