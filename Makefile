# The two commands of the README:
#   make demo   runs the whole chain (gateway + bridge + simulated sensors)
#   make test   runs the whole test suite (what CI runs)
.PHONY: test demo build bench fuzz

test:
	bash deploy/ci/test.sh

demo:
	go run ./demo

build:
	go build ./...

bench:
	go test -run='^$$' -bench=. -benchmem ./uplink/...

# Static release binaries (linux amd64, arm64, armv7) + SHA256SUMS in dist/.
.PHONY: dist
dist:
	bash deploy/dist.sh
