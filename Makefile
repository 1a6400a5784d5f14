# The two commands of the README:
#   make demo   runs the whole chain (gateway + bridge + simulated sensors)
#   make demo-ipv6   the same over IPv6 (go run ./demo --ipv6)
#   make test   runs the whole test suite (what CI runs)
.PHONY: test demo demo-ipv6 build bench fuzz

test:
	bash deploy/ci/test.sh

demo:
	go run ./demo

demo-ipv6:
	go run ./demo --ipv6

build:
	go build ./...

# Side-by-side benchmarks (issue 9): table on stdout, docs/BENCHMARKS.md and
# docs/benchmarks.png; needs root for SoftEther and namespaces. BENCHFLAGS for
# longer runs, e.g. BENCHFLAGS='-reps 9 -sessions 1000,10000'; BENCHFLAGS=-quick
# runs every suite once in well under 2 minutes (make test does).
bench:
	go run ./bench $(BENCHFLAGS)

# Static release binaries (linux amd64, arm64, armv7) + SHA256SUMS in dist/.
.PHONY: dist
dist:
	bash deploy/dist.sh
