// Package sdnotify tells systemd (Type=notify units) what a daemon is
// doing: READY=1 once it serves, RELOADING=1 / READY=1 around a reload,
// STOPPING=1 on shutdown. It is a thin layer over go-systemd's daemon
// package (which writes the datagram to $NOTIFY_SOCKET, a path or an
// @abstract name) that keeps the daemons' call sites to one name per state.
// Outside systemd ($NOTIFY_SOCKET unset) every call is a no-op that
// reports sent == false and no error.
package sdnotify

import (
	"strings"

	"github.com/coreos/go-systemd/v22/daemon"
)

// EnvSocket is the variable systemd sets to its notify socket.
const EnvSocket = "NOTIFY_SOCKET"

// Notify sends state (one or more KEY=VALUE lines) to the service
// manager; sent is false when there is none.
func Notify(state string) (sent bool, err error) { return daemon.SdNotify(false, state) }

// Ready: start-up or a reload is complete.
func Ready() (bool, error) { return Notify(daemon.SdNotifyReady) }

// Reloading: a configuration reload has begun (Ready ends it).
func Reloading() (bool, error) { return Notify(daemon.SdNotifyReloading) }

// Stopping: shutdown has begun.
func Stopping() (bool, error) { return Notify(daemon.SdNotifyStopping) }

// Status sends a one-line free-form status (newlines become spaces).
func Status(text string) (bool, error) {
	return Notify("STATUS=" + strings.ReplaceAll(text, "\n", " "))
}
