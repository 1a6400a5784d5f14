// Package secretfile reads secrets (pre-shared keys, passwords) from files
// and refuses a file that group or others may access, as ssh refuses a
// private key: a secret readable by every local user is not a secret. The
// error names the file, its mode and the command that fixes it.
package secretfile

import (
	"errors"
	"fmt"
	"os"
	"strings"
)

// ErrEmpty is returned by Read for a file holding only white space.
var ErrEmpty = errors.New("secretfile: file is empty")

// Check refuses path if group or others have any permission on it (mode
// & 0o077 != 0), with the chmod that fixes it.
func Check(path string) error {
	st, err := os.Stat(path)
	if err != nil {
		return fmt.Errorf("cannot read %s: %w", path, err)
	}
	if m := st.Mode().Perm(); m&0o077 != 0 {
		return fmt.Errorf("%s holds secrets but is accessible by group or others (mode %04o): run chmod 600 %s (and chown it to the user the daemon runs as)", path, m, path)
	}
	return nil
}

// Read checks path (Check) and returns its content without surrounding
// white space (a trailing newline is not part of the secret).
func Read(path string) (string, error) {
	if err := Check(path); err != nil {
		return "", err
	}
	b, err := os.ReadFile(path)
	if err != nil {
		return "", fmt.Errorf("cannot read %s: %w", path, err)
	}
	s := strings.TrimSpace(string(b))
	if s == "" {
		return "", fmt.Errorf("%w: %s", ErrEmpty, path)
	}
	return s, nil
}
