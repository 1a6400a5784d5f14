#!/bin/sh
# topology.sh — build, by hand, the same namespace topology the Go tests
# build with internal/netns (addresses and interface names match).
#
#  sensors                 edge                  nat   (NAT=1, the default)
# 172.16.1.2 ---------- 172.16.1.1
#                       192.168.1.2 ---------- 192.168.1.1
#  sensors2 -------- edge2 (SITE2=1) --------- 192.168.2.1
# 172.16.2.2  172.16.2.1 / 192.168.2.2          198.51.100.2 (masquerade,
#                                                    |         ports 20000-24999)
#                                                   wan 198.51.100.1
#                                                       203.0.113.1
#                                                    |
#                                                   gw 203.0.113.2
#                                                      10.200.0.1
#                                                    |
#                                                   central 10.200.0.2
#
# With NAT=0, edge connects straight to wan as 198.51.100.2 (no edge2).
# In each namespace the interface toward a neighbour is named after it.
#
# usage: sudo [PREFIX=fgdemo] [NAT=1] [SITE2=0] deploy/netns/topology.sh up|down|status
#   up      build it (a failure half-way tears down what was built)
#   down    delete every namespace named $PREFIX-*
#   status  list them with their addresses
# Run things inside with: sudo ip netns exec fgdemo-edge <command>
set -eu

PREFIX=${PREFIX:-fgdemo}
NAT=${NAT:-1}
SITE2=${SITE2:-0}
[ "$SITE2" = 1 ] && NAT=1

# fg*: CI checks for leftovers by that prefix; fleetgate*: the daemons'
# topology of fleetgate-netns.sh, kept apart from the tests' fg<pid>x<n>-*.
case "$PREFIX" in fg*|fleetgate*) ;; *) echo "PREFIX must start with fg or fleetgate" >&2; exit 2 ;; esac

ns() { echo "$PREFIX-$1"; }
in_ns() { h=$1; shift; ip netns exec "$(ns "$h")" "$@"; }

hosts() {
	echo sensors edge wan gw central
	[ "$NAT" = 1 ] && echo nat
	[ "$SITE2" = 1 ] && echo sensors2 edge2
	true
}

down() {
	for n in $(ip netns list | awk '{print $1}'); do
		case "$n" in "$PREFIX"-*) ip netns del "$n" && echo "deleted $n" ;; esac
	done
}

# link A B A_ADDR B_ADDR: veth between hosts A and B; the interface in A is
# named B and vice versa.
link() {
	ip -n "$(ns "$1")" link add name "$2" type veth peer name "$1" netns "$(ns "$2")"
	ip -n "$(ns "$1")" addr add "$3" dev "$2"
	ip -n "$(ns "$2")" addr add "$4" dev "$1"
	ip -n "$(ns "$1")" link set dev "$2" up
	ip -n "$(ns "$2")" link set dev "$1" up
}

up() {
	# On any failure, remove what was built so far.
	trap 'echo "topology.sh: failed, cleaning up" >&2; down' EXIT
	for h in $(hosts); do
		ip netns add "$(ns "$h")"
		ip -n "$(ns "$h")" link set dev lo up
	done
	link sensors edge 172.16.1.2/24 172.16.1.1/24
	link wan gw 203.0.113.1/24 203.0.113.2/24
	link gw central 10.200.0.1/24 10.200.0.2/24
	ip -n "$(ns sensors)" route add default via 172.16.1.1
	ip -n "$(ns gw)" route add default via 203.0.113.1
	ip -n "$(ns central)" route add default via 10.200.0.1
	if [ "$NAT" = 1 ]; then
		link edge nat 192.168.1.2/24 192.168.1.1/24
		link nat wan 198.51.100.2/24 198.51.100.1/24
		ip -n "$(ns edge)" route add default via 192.168.1.1
		ip -n "$(ns nat)" route add default via 198.51.100.1
		ip -n "$(ns nat)" route add 172.16.1.0/24 via 192.168.1.2
		in_ns nat nft -f - <<'NFT'
table ip fgnat {
	chain post {
		type nat hook postrouting priority srcnat; policy accept;
		oifname "wan" meta l4proto { tcp, udp } masquerade to :20000-24999
		oifname "wan" masquerade
	}
}
NFT
	else
		link edge wan 198.51.100.2/24 198.51.100.1/24
		ip -n "$(ns edge)" route add default via 198.51.100.1
	fi
	if [ "$SITE2" = 1 ]; then
		link sensors2 edge2 172.16.2.2/24 172.16.2.1/24
		link edge2 nat 192.168.2.2/24 192.168.2.1/24
		ip -n "$(ns sensors2)" route add default via 172.16.2.1
		ip -n "$(ns edge2)" route add default via 192.168.2.1
		ip -n "$(ns nat)" route add 172.16.2.0/24 via 192.168.2.2
	fi
	for h in edge edge2 wan gw nat; do
		ip netns list | grep -q "^$(ns $h)\b" && in_ns "$h" sysctl -qw net.ipv4.ip_forward=1
	done
	trap - EXIT
	status
}

status() {
	for n in $(ip netns list | awk '{print $1}'); do
		case "$n" in "$PREFIX"-*) ;; *) continue ;; esac
		printf '%-9s %s\n' "${n#"$PREFIX"-}" "$(ip -n "$n" -br -4 addr show | awk '$1 != "lo" {printf "%s %s  ", $1, $3}')"
	done
}

[ "$(id -u)" = 0 ] || { echo "topology.sh: needs root" >&2; exit 1; }
case "${1:-}" in
up) up ;;
down) down ;;
status) status ;;
*) echo "usage: $0 up|down|status" >&2; exit 2 ;;
esac
