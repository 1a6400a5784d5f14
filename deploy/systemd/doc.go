// Package systemd holds fleetgate's systemd units (fleetgate-gateway.service,
// fleetgate-bridge.service) and sysusers file; its test checks them with
// `systemd-analyze verify` and `systemd-analyze security --offline`.
// There is no Go code to import: see deploy/README.md.
package systemd
