#!/bin/bash
# fleetgate-netns.sh — the production-like chain on one machine, with the
# real binaries and a real TUN, in network namespaces (topology.sh builds
# them; addresses as in internal/netns):
#
#   sensors 172.16.1.2    firmware-sim: CoAP/DTLS (PSK) and MQTT/TLS devices
#     |
#   edge 172.16.1.1       bridge: DTLS/CoAP :5684 and MQTT/TLS :8883 on
#     |  192.168.1.2      172.16.1.1, userspace IP stack, L2TP/IPsec uplink;
#     |                   /status and /metrics on 127.0.0.1:9420 (in edge)
#   nat 192.168.1.1       nftables masquerade (the site's NAT router)
#     |  198.51.100.2
#   wan 198.51.100.1 / 203.0.113.1
#     |
#   gw 203.0.113.2        gateway: IKE :500, NAT-T :4500, TUN fg0, pool
#     |  10.200.0.1       10.10.0.0/24, framed route 10.10.8.0/24 → the site;
#     |                   /metrics and /status on 127.0.0.1:9410 (in gw)
#   central 10.200.0.2    mosquitto :1883 (MQTT from the bridge's relay, one
#                         connection per endpoint from its 10.10.8.N address)
#                         and `firmware-sim collect` (CoAP sink :5683,
#                         subscribed to mosquitto; stats on 127.0.0.1:9464)
#
# usage: sudo deploy/netns/fleetgate-netns.sh up|status|down|logs|crash NAME
#   up      build the binaries (unless BIN_DIR is given), the namespaces,
#           the configs, provision the endpoints and start every process;
#           fails if this PREFIX is already up
#   status  processes, gateway sessions, bridge endpoints, central counts
#   down    stop the processes (by PID file: SIGTERM, SIGKILL after 5 s),
#           delete the namespaces; logs and configs stay in STATE_DIR
#   logs    where the logs are
#   crash gateway|bridge
#           kill -9 that daemon and start it again (its old log is kept as
#           NAME.log.crashed); `status` shows the uplink and telemetry return
#
# Environment: PREFIX (namespace names, default fleetgate: fleetgate-edge,
# ...; never fg<digits>..., the tests' names), STATE_DIR (default
# /tmp/fleetgate-netns), BIN_DIR (prebuilt gateway, bridge, firmware-sim),
# COAP (CoAP devices, default 4), MQTT (MQTT devices, default 2),
# INTERVAL (telemetry period, default 2s).
#
# Run anything inside with: sudo ip netns exec fleetgate-central mosquitto_sub -h 10.200.0.2 -t 'sites/#' -v
# A command to an MQTT device (its reply shows up on .../status/cmd/ping):
#   sudo ip netns exec fleetgate-central mosquitto_pub -h 10.200.0.2 -q 1 -t sites/hall7/sensor-5/cmd/ping -m hello
# A CoAP GET to a device's VPN address from central, through gw's TUN
# (libcoap; the device answers SenML in CBOR):
#   sudo ip netns exec fleetgate-central coap-client-openssl coap://10.10.8.1/sensors/temp
set -euo pipefail

PREFIX=${PREFIX:-fleetgate}
STATE_DIR=${STATE_DIR:-/tmp/fleetgate-netns}
COAP=${COAP:-4}
MQTT=${MQTT:-2}
INTERVAL=${INTERVAL:-2s}
HERE=$(cd "$(dirname "$0")" && pwd)
ROOT=$(cd "$HERE/../.." && pwd)

case "$PREFIX" in
fg[0-9]*) echo "fleetgate-netns: PREFIX $PREFIX looks like the tests' namespaces (fg<pid>x<n>-)" >&2; exit 2 ;;
fleetgate*) ;;
*) echo "fleetgate-netns: PREFIX must start with fleetgate" >&2; exit 2 ;;
esac

# Fixed addressing (TEST-NET outside, 10.x inside the VPN).
SITE=hall7
SITE_PREFIX=10.10.8.0/24
BRIDGE_ADDR=10.10.8.254
BRIDGE_LAN=172.16.1.1
GW_PUBLIC=203.0.113.2
CENTRAL=10.200.0.2
BRIDGE_HTTP=127.0.0.1:9420
GW_HTTP=127.0.0.1:9410
COLLECT_HTTP=127.0.0.1:9464
# Demo secrets, generated per `up` into STATE_DIR (mode 0600).
PSK_FILE=$STATE_DIR/secrets/site.psk
PPP_FILE=$STATE_DIR/secrets/ppp.password

ns() { echo "$PREFIX-$1"; }
in_ns() { local h=$1; shift; ip netns exec "$(ns "$h")" "$@"; }
T0=${EPOCHREALTIME/,/.}
log() { echo "fleetgate-netns: [$(awk -v a="$T0" -v b="${EPOCHREALTIME/,/.}" 'BEGIN {printf "%5.1fs", b - a}')] $*"; }
die() { echo "fleetgate-netns: $*" >&2; exit 1; }

# Processes, in start order; each has $STATE_DIR/run/NAME.pid and
# $STATE_DIR/logs/NAME.log.
PROCS=(mosquitto collector gateway bridge fleet)

namespaces() { ip netns list | awk '{print $1}' | grep -E "^$PREFIX-(sensors|edge|nat|wan|gw|central)\$" || true; }

pid_of() { [ -s "$STATE_DIR/run/$1.pid" ] && cat "$STATE_DIR/run/$1.pid"; }
# pid_alive PID: the process exists and is not a zombie waiting for init.
pid_alive() {
	local stat
	kill -0 "$1" 2>/dev/null || return 1
	read -r stat <"/proc/$1/stat" 2>/dev/null || return 1
	stat=${stat##*) }
	[ "${stat%% *}" != Z ]
}
alive() { local p; p=$(pid_of "$1") && pid_alive "$p"; }

# start NAME HOST CMD...: run CMD in HOST's namespace in the background,
# output to the log, PID to the PID file (ip netns exec execs CMD, so $! is
# the daemon itself).
start() {
	local name=$1 host=$2; shift 2
	nohup ip netns exec "$(ns "$host")" "$@" </dev/null >"$STATE_DIR/logs/$name.log" 2>&1 &
	echo $! >"$STATE_DIR/run/$name.pid"
	log "started $name in $(ns "$host") (pid $!), log $STATE_DIR/logs/$name.log"
}

# wait_for WHAT SECONDS PROC CMD...: poll CMD until it succeeds; fail if PROC
# died or the time is up.
wait_for() {
	local what=$1 secs=$2 proc=$3; shift 3
	local end=$((SECONDS + secs))
	until "$@" >/dev/null 2>&1; do
		if ! alive "$proc"; then
			tail -n 30 "$STATE_DIR/logs/$proc.log" >&2 || true
			die "$proc exited while waiting for: $what"
		fi
		[ $SECONDS -lt $end ] || { tail -n 30 "$STATE_DIR/logs/$proc.log" >&2 || true; die "timed out ($secs s) waiting for: $what"; }
		sleep 0.2
	done
}

listening() { in_ns "$1" ss -Hln "$2" | grep -q "$3"; }
uplink_up() { in_ns edge "$BIN/bridge" -c "$STATE_DIR/bridge.yaml" status 2>/dev/null | grep -Eq '^uplink:? +up'; }

write_configs() {
	mkdir -p "$STATE_DIR/secrets" "$STATE_DIR/run" "$STATE_DIR/logs" "$STATE_DIR/bridge-state"
	chmod 700 "$STATE_DIR/secrets" "$STATE_DIR/bridge-state"
	umask 077
	[ -s "$PSK_FILE" ] || head -c 24 /dev/urandom | od -An -tx1 | tr -d ' \n' >"$PSK_FILE"
	[ -s "$PPP_FILE" ] || head -c 16 /dev/urandom | od -An -tx1 | tr -d ' \n' >"$PPP_FILE"
	local psk ppp
	psk=$(cat "$PSK_FILE")
	ppp=$(cat "$PPP_FILE")
	cat >"$STATE_DIR/gateway.yaml" <<EOF
# written by deploy/netns/fleetgate-netns.sh
listen: {address: 0.0.0.0, ike_port: 500, natt_port: 4500, l2tp_port: 1701}
psk: {shared_file: $PSK_FILE}
pool: {prefix: 10.10.0.0/24, gateway: 10.10.0.1}
mtu: 1400
push_routes: [10.200.0.0/24]
dataplane: {mode: tun, tun: fg0}
policy: {default: deny}
policies:
  central:
    default: deny
    allow:
      - {dst: $CENTRAL/32, proto: tcp, ports: [1883]}
      - {dst: $CENTRAL/32, proto: udp, ports: [5683]}
      - {dst: $CENTRAL/32, proto: icmp}
identities:
  - name: $SITE
    auth: psk
    ppp: {user: $SITE, password: "$ppp", methods: [mschapv2]}
    routes: [$SITE_PREFIX]
    policy: central
metrics: {listen: "$GW_HTTP"}
log: {level: info, format: json}
EOF
	cat >"$STATE_DIR/bridge.yaml" <<EOF
# written by deploy/netns/fleetgate-netns.sh
site: $SITE
prefix: $SITE_PREFIX
bridge_address: $BRIDGE_ADDR
state_dir: $STATE_DIR/bridge-state
downlink: {coap_listen: "$BRIDGE_LAN:5684", advertised_host: $BRIDGE_LAN}
central_coap: $CENTRAL:5683
http_listen: "$BRIDGE_HTTP"
log_format: json
mqtt: {enabled: true, tls_listen: "$BRIDGE_LAN:8883", central: "$CENTRAL:1883"}
uplink:
  mode: l2tp-ipsec
  gateways: ["$GW_PUBLIC:500"]
  nat_t_port: 4500
  psk: "$psk"
  local_id: $SITE.sites.example
  ppp_user: $SITE
  ppp_password: "$ppp"
  min_backoff: 500ms
  max_backoff: 5s
EOF
	cat >"$STATE_DIR/mosquitto.conf" <<EOF
# written by deploy/netns/fleetgate-netns.sh: the central broker (plain MQTT
# inside the VPN; the gateway's policy admits only the site's relay).
listener 1883 $CENTRAL
allow_anonymous true
persistence false
log_dest stderr
log_type error
log_type warning
log_type notice
log_type information
connection_messages true
log_timestamp true
EOF
	umask 022
}

# provision: one endpoint per simulated device (`bridge endpoint add`), its
# PSK written to the firmware-sim credentials file.
provision() {
	local creds=$STATE_DIR/fleet.creds n=0 i kind proto out id key
	umask 077
	echo "# fleetgate credentials v1 (from bridge endpoint add)" >"$creds"
	for i in $(seq 1 $((COAP + MQTT))); do
		n=$i
		if [ "$i" -le "$COAP" ]; then proto=coap kind=psk; else proto=mqtt kind=mqtt; fi
		out=$("$BIN/bridge" -c "$STATE_DIR/bridge.yaml" endpoint add "sensor-$n" --protocol $proto)
		id=$(sed -n 's/^#define FLEETGATE_PSK_IDENTITY "\(.*\)"$/\1/p' <<<"$out")
		key=$(sed -n 's/^#define FLEETGATE_PSK "\([^"]*\)".*/\1/p' <<<"$out")
		[ -n "$id" ] && [ -n "$key" ] || die "endpoint add sensor-$n: no identity/PSK in its output"
		echo "sensor-$n $kind $id text:$key" >>"$creds"
	done
	umask 022
	cat >"$STATE_DIR/fleet.yaml" <<EOF
# written by deploy/netns/fleetgate-netns.sh
name: netns
duration: 0s
target:
  coap: $BRIDGE_LAN:5684
  mqtt: $BRIDGE_LAN:8883
  # Devices verify the bridge's certificate against the site CA, as real
  # firmware does (it names bridge.$SITE and the advertised address).
  server_name: bridge.$SITE
  ca_file: $STATE_DIR/bridge-state/ca/ca.pem
credentials: {file: fleet.creds}
report: {interval: 5s}
groups:
  - {name: coap, count: $COAP, protocol: coap, auth: psk, suite: ccm8, cid: true, format: cbor, interval: $INTERVAL}
EOF
	if [ "$MQTT" -gt 0 ]; then
		echo "  - {name: mqtt, count: $MQTT, protocol: mqtt, format: json, interval: $INTERVAL}" >>"$STATE_DIR/fleet.yaml"
	fi
	log "provisioned sensor-1..sensor-$((COAP + MQTT)) (CoAP 1..$COAP, MQTT $((COAP + 1))..$((COAP + MQTT))) at 10.10.8.N"
}

build() {
	if [ -n "${BIN_DIR:-}" ]; then
		BIN=$BIN_DIR
	else
		BIN=$STATE_DIR/bin
		log "building gateway, bridge, firmware-sim into $BIN"
		(cd "$ROOT" && go build -o "$BIN/" ./gateway ./bridge ./firmware-sim)
	fi
	for b in gateway bridge firmware-sim; do [ -x "$BIN/$b" ] || die "no $BIN/$b"; done
}

up() {
	[ -z "$(namespaces)" ] || die "already up (namespaces $(namespaces | tr '\n' ' ')); run '$0 down' first"
	for p in "${PROCS[@]}"; do
		! alive "$p" || die "already up ($p pid $(pid_of "$p") is running); run '$0 down' first"
	done
	for b in ip nft ss mosquitto; do command -v $b >/dev/null || die "needs $b"; done
	mkdir -p "$STATE_DIR"
	build
	echo "$BIN" >"$STATE_DIR/bin.path"
	trap 'echo "fleetgate-netns: up failed, tearing down" >&2; down >&2' EXIT
	PREFIX=$PREFIX NAT=1 SITE2=0 "$HERE/topology.sh" up >/dev/null
	rm -f "$STATE_DIR"/logs/*.log "$STATE_DIR"/run/*.pid "$STATE_DIR/fleet.creds"
	rm -rf "$STATE_DIR/bridge-state"
	write_configs
	"$BIN/gateway" --check-config "$STATE_DIR/gateway.yaml" >/dev/null
	"$BIN/bridge" --check-config "$STATE_DIR/bridge.yaml" >/dev/null
	provision

	start mosquitto central mosquitto -c "$STATE_DIR/mosquitto.conf"
	wait_for "mosquitto on $CENTRAL:1883" 10 mosquitto listening central -t "$CENTRAL:1883 "
	start collector central "$BIN/firmware-sim" collect --coap "$CENTRAL:5683" --mqtt "tcp://$CENTRAL:1883" --http "$COLLECT_HTTP"
	wait_for "collector on $CENTRAL:5683" 10 collector listening central -u "$CENTRAL:5683 "
	start gateway gw "$BIN/gateway" run -c "$STATE_DIR/gateway.yaml"
	wait_for "gateway IKE/NAT-T listeners" 20 gateway listening gw -u ":4500 "
	start bridge edge "$BIN/bridge" run -c "$STATE_DIR/bridge.yaml"
	wait_for "bridge uplink up (IKE, ESP, L2TP, PPP)" 30 bridge uplink_up
	start fleet sensors "$BIN/firmware-sim" run -c "$STATE_DIR/fleet.yaml" --json "$STATE_DIR/fleet-report.json"
	sleep 0.5
	alive fleet || { cat "$STATE_DIR/logs/fleet.log" >&2; die "firmware-sim exited"; }
	trap - EXIT
	log "up. '$0 status' shows the sessions, '$0 down' stops everything."
	logs
}

logs() {
	log "logs in $STATE_DIR/logs/: $(cd "$STATE_DIR/logs" 2>/dev/null && ls | tr '\n' ' ')"
	log "configs: $STATE_DIR/{gateway,bridge}.yaml, $STATE_DIR/mosquitto.conf, $STATE_DIR/fleet.yaml"
}

status() {
	[ -s "$STATE_DIR/bin.path" ] && BIN=$(cat "$STATE_DIR/bin.path") || BIN=${BIN_DIR:-$STATE_DIR/bin}
	echo "== processes"
	for p in "${PROCS[@]}"; do
		if alive "$p"; then printf '  %-10s pid %s running\n' "$p" "$(pid_of "$p")"; else printf '  %-10s not running\n' "$p"; fi
	done
	echo "== namespaces"
	PREFIX=$PREFIX "$HERE/topology.sh" status | sed 's/^/  /'
	if alive gateway; then
		echo "== gateway sessions (gateway status, in $(ns gw))"
		in_ns gw "$BIN/gateway" status -c "$STATE_DIR/gateway.yaml" 2>&1 | sed 's/^/  /' || true
	fi
	if alive bridge; then
		echo "== bridge (bridge status, in $(ns edge))"
		in_ns edge "$BIN/bridge" -c "$STATE_DIR/bridge.yaml" status 2>&1 | sed 's/^/  /' || true
	fi
	if alive mosquitto; then
		echo "== central mosquitto: relay connections (one per MQTT endpoint, from its VPN address)"
		grep -E 'New client connected from 10\.10\.' "$STATE_DIR/logs/mosquitto.log" | tail -n "$((MQTT + 2))" | sed 's/^/  /' || true
	fi
	if alive collector; then
		echo "== central collector (telemetry per device, from sequence numbers)"
		# HTTP/1.0 over bash's /dev/tcp (no curl needed), body only.
		in_ns central timeout 5 bash -c 'exec 3<>"/dev/tcp/${1%:*}/${1#*:}" && printf "GET /stats HTTP/1.0\r\nHost: %s\r\n\r\n" "$1" >&3 && sed "1,/^\r\{0,1\}$/d" <&3' _ "$COLLECT_HTTP" 2>/dev/null | head -c 2000 | sed 's/^/  /' || true
		echo
	fi
}

# stop NAME: SIGTERM by PID file, SIGKILL after 5 s.
stop() {
	local p
	p=$(pid_of "$1") || return 0
	if pid_alive "$p"; then
		kill -TERM "$p" 2>/dev/null || true
		for _ in $(seq 100); do pid_alive "$p" || break; sleep 0.05; done
		if pid_alive "$p"; then
			log "$1 (pid $p) ignored SIGTERM for 5 s, killing"
			kill -KILL "$p" 2>/dev/null || true
		fi
		log "stopped $1 (pid $p)"
	fi
	rm -f "$STATE_DIR/run/$1.pid"
}

# crash NAME: kill -9 the gateway or the bridge (by PID file) and start it
# again as `up` did: the field's crash and restart; telemetry and the uplink
# come back without help (`status` shows it).
crash() {
	[ -s "$STATE_DIR/bin.path" ] || die "not up"
	BIN=$(cat "$STATE_DIR/bin.path")
	local p
	case "$1" in gateway | bridge) ;; *) die "crash: gateway or bridge, not '$1'" ;; esac
	p=$(pid_of "$1") && pid_alive "$p" || die "$1 is not running"
	kill -KILL "$p"
	for _ in $(seq 100); do pid_alive "$p" || break; sleep 0.05; done
	log "killed $1 (pid $p) with SIGKILL"
	mv -f "$STATE_DIR/logs/$1.log" "$STATE_DIR/logs/$1.log.crashed"
	case "$1" in
	gateway)
		start gateway gw "$BIN/gateway" run -c "$STATE_DIR/gateway.yaml"
		wait_for "gateway IKE/NAT-T listeners" 20 gateway listening gw -u ":4500 "
		;;
	bridge) start bridge edge "$BIN/bridge" run -c "$STATE_DIR/bridge.yaml" ;;
	esac
}

down() {
	local i
	for ((i = ${#PROCS[@]} - 1; i >= 0; i--)); do stop "${PROCS[$i]}"; done
	PREFIX=$PREFIX "$HERE/topology.sh" down >/dev/null
	[ -z "$(namespaces)" ] || die "namespaces left: $(namespaces | tr '\n' ' ')"
	log "down (logs kept in $STATE_DIR/logs)"
}

[ "$(id -u)" = 0 ] || die "needs root (namespaces, TUN)"
case "${1:-}" in
up) up ;;
crash) crash "${2:-}" ;;
status) status ;;
down) down ;;
logs) logs ;;
*) echo "usage: $0 up|status|down|logs|crash gateway|bridge" >&2; exit 2 ;;
esac
