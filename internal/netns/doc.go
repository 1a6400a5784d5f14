// Package netns builds network-namespace topologies for tests: named hosts
// joined by veth pairs, with TEST-NET addresses for the "internet", optional
// nftables masquerade (so NAT-T is exercised), random loss, WAN outages and
// NAT rebinding. Everything it creates is removed by t.Cleanup, also when the
// test fails or panics. All tests using it need root: New and Pair call
// testenv.RequireRoot first.
//
// The full topology built by New (addresses are fixed so tests and humans
// can reason about captures; deploy/netns/topology.sh builds the same):
//
//	 sensors                 edge                  nat (Options.NAT)
//	172.16.1.2 ---------- 172.16.1.1
//	                      192.168.1.2 ---------- 192.168.1.1
//	 sensors2   -------- edge2 (SecondSite) ---- 192.168.2.1
//	172.16.2.2  172.16.2.1 / 192.168.2.2         198.51.100.2  (masquerade)
//	                                                  |
//	                                                 wan 198.51.100.1
//	                                                     203.0.113.1
//	                                                  |
//	                                                 gw 203.0.113.2
//	                                                    10.200.0.1
//	                                                  |
//	                                                 central 10.200.0.2
//
// Without NAT, edge connects straight to wan: edge 198.51.100.2, wan
// 198.51.100.1 (SecondSite implies NAT). The gateway's VPN pool is 10.x
// (e.g. 10.10.0.0/16) and lives in userspace; central services
// sit on 10.200.0.0/24 behind gw. wan is a plain router with no route to the
// private site networks, so without masquerade nothing behind nat is
// reachable from the internet, as in production; nat routes the sensor LANs
// to their edge, so with NAT the sensors reach the internet too. central is
// reachable only from gw (in tests, through the VPN).
//
// Inside each namespace the interface toward a neighbour is named after that
// neighbour: in edge, "sensors" and "wan" (or "nat"); in wan, "nat" (or
// "edge") and "gw". Loss, captures and CutWAN use these names.
//
// Namespace names are "fg<pid>x<n>-<host>", unique per process and per
// topology, so parallel tests and parallel packages do not collide; CI fails
// if any namespace named fg* is left behind.
//
// Pair builds the simplest topology for protocol interop tests: hosts "a"
// (192.0.2.1/24) and "b" (192.0.2.2/24) on one veth, interfaces "b" and "a".
package netns
