// Package ctlsock opens the daemons' unix control sockets. The socket file
// appears at its path only once it is listening with its final mode, so a
// client (or a test) that sees the file can connect at once: it is bound
// under a temporary name in the same directory, listened on, given mode
// 0660 (root and the fleetgate group: the file mode is the socket's access
// control) and renamed into place.
package ctlsock

import (
	"fmt"
	"net"
	"os"
	"path/filepath"
)

// Mode is the control socket's file mode.
const Mode = 0o660

// Listen creates the directory of path (0750) if needed, replaces a stale
// socket file at path, and listens there. Closing the listener removes
// the file.
func Listen(path string) (net.Listener, error) {
	if err := os.MkdirAll(filepath.Dir(path), 0o750); err != nil {
		return nil, err
	}
	tmp := fmt.Sprintf("%s.%d.tmp", path, os.Getpid())
	_ = os.Remove(tmp)
	ln, err := net.ListenUnix("unix", &net.UnixAddr{Name: tmp, Net: "unix"})
	if err != nil {
		return nil, err
	}
	ln.SetUnlinkOnClose(false)
	if err := os.Chmod(tmp, Mode); err != nil {
		ln.Close()
		_ = os.Remove(tmp)
		return nil, err
	}
	if err := os.Rename(tmp, path); err != nil {
		ln.Close()
		_ = os.Remove(tmp)
		return nil, err
	}
	return &listener{UnixListener: ln, path: path}, nil
}

type listener struct {
	*net.UnixListener
	path string
}

// Close stops listening and removes the socket file.
func (l *listener) Close() error {
	err := l.UnixListener.Close()
	_ = os.Remove(l.path)
	return err
}
