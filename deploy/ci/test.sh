#!/usr/bin/env bash
# The project's one test command (`make test`; .ci/run calls it).
#
#   1. installs missing Debian peers and the pinned staticcheck (root only)
#   2. builds everything; gofmt, go vet and staticcheck must be clean
#   3. unit and in-memory tests (-race on the protocol packages)
#   4. a short smoke run of every fuzz target
#   5. namespace end-to-end and real-peer interop tests (root)
#   6. the benchmark command in -quick mode: every suite once, small and
#      short (~30 s); fails on a failed suite or side, or a ratio above
#      its ceiling (a bench bug)
#
# As root, FLEETGATE_REQUIRE_ROOT_TESTS=1 is exported so a test that would
# skip for lack of root or of a peer binary fails instead: in CI nothing
# skips. FUZZTIME sets the fuzz smoke per target; it is a count of inputs
# (default 2000x), not a duration, because Go 1.26's time-bounded fuzzing
# sometimes ends with a bare "context deadline exceeded" and no crasher.
set -euo pipefail
cd "$(dirname "$0")/../.."

export PATH="$(go env GOPATH)/bin:$PATH"
FUZZTIME=${FUZZTIME:-2000x}
start=$(date +%s)
step() { printf '\n=== %s (%ds)\n' "$*" $(( $(date +%s) - start )); }

# Test namespaces are named fg<pid>x<n>-<host> after the test process that
# made them. Those present before this run (another run on a shared box)
# are not this run's to judge.
before_ns=$(ip netns list 2>/dev/null | awk '/^fg/ {print $1}' | sort || true)

step "dependencies"
bash deploy/ci/install-deps.sh
if [[ $(id -u) -eq 0 ]]; then
  export FLEETGATE_REQUIRE_ROOT_TESTS=1
else
  echo "NOTE: not root: namespace and real-peer tests will SKIP (each says why)."
fi

step "build"
go build ./...

step "gofmt"
unformatted=$(gofmt -l $(git ls-files '*.go' 2>/dev/null || find . -name '*.go'))
if [[ -n $unformatted ]]; then echo "gofmt needed:"; echo "$unformatted"; exit 1; fi

step "go vet"
go vet ./...

step "staticcheck"
staticcheck ./...

step "unit, in-memory and interop tests"
# -race on the protocol stack (where the concurrency is); the rest without,
# since gVisor under the race detector is slow on two cores.
race_pkgs=$(go list ./uplink/... ./downlink/... 2>/dev/null || true)
other_pkgs=$(go list ./... | grep -v -e /uplink/ -e /downlink/ || true)
status=0
if [[ -n $race_pkgs ]]; then go test -race -count=1 -timeout 15m $race_pkgs || status=1; fi
# Two packages at a time: these tests mostly wait (namespaces, real peers,
# timers; ~6 min of CPU in ~12 min of wall time one at a time), so the long
# e2e package runs beside the rest. Namespaces and ports are per test.
if [[ -n $other_pkgs ]]; then go test -count=1 -timeout 15m -p 2 $other_pkgs || status=1; fi

step "fuzz smoke (${FUZZTIME} per target)"
nfuzz=0
for pkg in $(go list ./...); do
  dir=$(go list -f '{{.Dir}}' "$pkg")
  compgen -G "$dir/*_test.go" >/dev/null || continue
  targets=$(grep -ho '^func Fuzz[A-Za-z0-9_]*' "$dir"/*_test.go | sed 's/^func //' || true)
  for t in $targets; do
    if ! go test -run='^$' -fuzz="^${t}\$" -fuzztime="$FUZZTIME" "$pkg" >/tmp/fuzz.$$.log 2>&1; then
      echo "FAIL fuzz $pkg $t"; cat /tmp/fuzz.$$.log; status=1
    else
      echo "ok   fuzz $pkg $t"
    fi
    nfuzz=$((nfuzz + 1))
  done
done
rm -f /tmp/fuzz.$$.log
echo "fuzz targets run: $nfuzz"

step "bench -quick (every suite once)"
go run ./bench -quick || status=1

step "leftovers"
# Left behind = made during this run by a test process that has exited.
# A namespace whose process still runs belongs to a test of another run
# on this machine (engineers share the box); on a CI machine there is none.
left=()
for ns in $(comm -13 <(echo "$before_ns") <(ip netns list 2>/dev/null | awk '/^fg/ {print $1}' | sort)); do
  pid=${ns#fg}; pid=${pid%%x*}
  if [[ ! $pid =~ ^[0-9]+$ ]] || [[ ! -d /proc/$pid ]]; then left+=("$ns"); fi
done
if [[ ${#left[@]} -ne 0 ]]; then echo "FAIL: ${#left[@]} test namespaces left behind: ${left[*]}"; status=1; fi

step "done, status $status"
exit $status
