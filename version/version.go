// Package version carries the build's version information. deploy/dist.sh
// sets the variables at link time:
//
//	go build -ldflags "-X github.com/fleetgate/fleetgate/version.Version=$(git describe --tags --always --dirty) \
//	    -X github.com/fleetgate/fleetgate/version.Commit=$(git rev-parse HEAD) \
//	    -X github.com/fleetgate/fleetgate/version.Date=2026-11-23T21:40:00Z"
//
// Without them (go run, go build) the VCS stamp Go embeds in the binary is
// used when there is one, so a development build still names its commit.
package version

import (
	"fmt"
	"runtime"
	"runtime/debug"
)

// Set with -ldflags -X at link time; see the package comment.
var (
	// Version is `git describe --tags --always --dirty`, or "dev".
	Version = "dev"
	// Commit is the full commit hash, or "" when unknown.
	Commit = ""
	// Date is the build time (RFC 3339, UTC), or "" when unknown.
	Date = ""
)

// Info is the resolved version information of the running binary.
type Info struct {
	Version, Commit, Date string
	// Modified is true when the VCS stamp says the tree had local changes.
	Modified bool
	// GoVersion, OS and Arch describe the toolchain and target.
	GoVersion, OS, Arch string
}

// Get returns the link-time values, completed from the binary's embedded
// build information where they were not set.
func Get() Info {
	return resolve(Version, Commit, Date, debug.ReadBuildInfo)
}

func resolve(v, commit, date string, read func() (*debug.BuildInfo, bool)) Info {
	in := Info{Version: v, Commit: commit, Date: date, GoVersion: runtime.Version(), OS: runtime.GOOS, Arch: runtime.GOARCH}
	if bi, ok := read(); ok && bi != nil {
		for _, s := range bi.Settings {
			switch s.Key {
			case "vcs.revision":
				if in.Commit == "" {
					in.Commit = s.Value
				}
			case "vcs.time":
				if in.Date == "" {
					in.Date = s.Value
				}
			case "vcs.modified":
				in.Modified = s.Value == "true"
			case "GOARM":
				if in.Arch == "arm" {
					in.Arch = "armv" + s.Value
				}
			}
		}
	}
	return in
}

// String is the one-line form printed by `--version`:
// "fleetgate v0.3.0-12-gabcdef1 (commit abcdef1234ab, 2026-11-23T21:40:00Z, go1.26.8 linux/arm64)".
func String() string { return Get().String() }

// String formats in as one line.
func (in Info) String() string {
	commit := in.Commit
	if len(commit) > 12 {
		commit = commit[:12]
	}
	if commit == "" {
		commit = "unknown"
	}
	if in.Modified && in.Version == "dev" {
		commit += "+dirty"
	}
	date := in.Date
	if date == "" {
		date = "unknown date"
	}
	return fmt.Sprintf("fleetgate %s (commit %s, %s, %s %s/%s)", in.Version, commit, date, in.GoVersion, in.OS, in.Arch)
}
