// Package e2e holds FleetGate's namespace end-to-end tests: the real
// gateway and bridge binaries, real TUN, real namespaces and real peers
// (libcoap, mosquitto). Everything lives in _test.go files; this file only
// carries the package documentation. See harness_test.go for the harness
// (Setup, Env, Endpoint) and how to use it.
//
// Run with: go test -count=1 -v ./e2e/ (root; namespaces from internal/netns).
package e2e
