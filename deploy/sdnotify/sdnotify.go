// Package sdnotify tells systemd about a daemon's state through the
// sd_notify protocol (sd_notify(3)): one datagram of newline-separated
// KEY=VALUE assignments sent to the AF_UNIX SOCK_DGRAM socket named by
// $NOTIFY_SOCKET. A name starting with '@' is an abstract socket (Linux),
// which Go's net package maps to the leading NUL byte itself.
//
// It has no dependencies beyond the standard library, and does nothing
// (sent=false, no error) when the process was not started by systemd with
// Type=notify, so daemons may call it unconditionally:
//
//	sdnotify.Ready()      // after the listeners are bound and the data plane is up
//	sdnotify.Reloading()  // on SIGHUP, before re-reading the configuration
//	sdnotify.Ready()      // when the reload is done (or refused)
//	sdnotify.Stopping()   // on SIGTERM, before tearing sessions down
package sdnotify

import (
	"net"
	"os"
	"strings"
	"time"
)

// Notifier sends state updates to one notify socket.
type Notifier struct {
	// Socket is the notify socket path, or "@name" for an abstract socket.
	// Empty means "not under systemd": Notify is then a no-op.
	Socket string
}

// FromEnv returns a Notifier for $NOTIFY_SOCKET.
func FromEnv() *Notifier { return &Notifier{Socket: os.Getenv(EnvSocket)} }

// Notify sends state, one or more "KEY=VALUE" lines, in a single datagram.
// It reports whether a datagram was sent: false with a nil error when no
// socket is configured.
func (n *Notifier) Notify(state string) (sent bool, err error) {
	if n == nil || n.Socket == "" {
		return false, nil
	}
	if err := validate(state); err != nil {
		return false, err
	}
	if n.Socket[0] != '/' && n.Socket[0] != '@' {
		return false, ErrBadSocket
	}
	conn, err := net.DialUnix("unixgram", nil, &net.UnixAddr{Name: n.Socket, Net: "unixgram"})
	if err != nil {
		return false, &Error{Op: "dial", Err: err}
	}
	defer conn.Close()
	// The socket is local and systemd reads it promptly; the deadline only
	// guards against a wedged receiver.
	_ = conn.SetWriteDeadline(time.Now().Add(writeTimeout))
	if _, err := conn.Write([]byte(state)); err != nil {
		return false, &Error{Op: "write", Err: err}
	}
	return true, nil
}

// validate checks that every line of state is a KEY=VALUE assignment.
func validate(state string) error {
	if state == "" {
		return ErrEmptyState
	}
	for line := range strings.SplitSeq(strings.TrimSuffix(state, "\n"), "\n") {
		key, _, ok := strings.Cut(line, "=")
		if !ok || key == "" {
			return ErrBadState
		}
	}
	return nil
}

// Notify sends state to $NOTIFY_SOCKET (see Notifier.Notify).
func Notify(state string) (bool, error) { return FromEnv().Notify(state) }

// Ready tells systemd that start-up (or a reload) has finished.
func Ready() (bool, error) { return Notify(StateReady) }

// Reloading tells systemd that the daemon is reloading its configuration;
// send Ready when done.
func Reloading() (bool, error) { return Notify(StateReloading) }

// Stopping tells systemd that the daemon is shutting down.
func Stopping() (bool, error) { return Notify(StateStopping) }

// Status sends a free-form one-line status shown by `systemctl status`.
func Status(text string) (bool, error) {
	return Notify("STATUS=" + strings.ReplaceAll(text, "\n", " "))
}
