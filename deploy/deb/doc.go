// Package deb holds the Debian packaging of fleetgate (nfpm.yaml, the
// maintainer scripts, the copyright and lintian override files) that
// deploy/dist.sh (`make dist`) builds into fleetgate_VERSION_ARCH.deb for
// amd64, arm64 and armhf. Its test builds the amd64 package, checks it
// with lintian, installs it with dpkg, runs the installed binaries and
// `systemd-analyze verify` on the installed units, and purges it.
package deb
