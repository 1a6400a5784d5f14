#!/usr/bin/env bash
# Static release builds (`make dist`): gateway, bridge and firmware-sim for
# the targets site boxes and cloud VMs use, with version information linked
# in (package version) and a SHA-256 checksums file.
#
#   deploy/dist.sh                 all targets into dist/
#   TARGETS="linux/arm64" deploy/dist.sh
#   DIST=/tmp/out deploy/dist.sh
#
# Every binary is CGO_ENABLED=0 (static, no libc), -trimpath (no build paths),
# stripped of the symbol table (-s -w). Output: dist/<cmd>-<os>-<arch>[v7]
# and dist/SHA256SUMS. A command whose directory has no main package yet is
# skipped with a loud line; STRICT=1 makes that an error.
set -euo pipefail
cd "$(dirname "$0")/.."

DIST=${DIST:-dist}
TARGETS=${TARGETS:-"linux/amd64 linux/arm64 linux/arm/7"}
CMDS=${CMDS:-"gateway bridge firmware-sim"}
STRICT=${STRICT:-0}

pkg=github.com/fleetgate/fleetgate/version
ver=$(git describe --tags --always --dirty 2>/dev/null || echo dev)
commit=$(git rev-parse HEAD 2>/dev/null || echo "")
# Reproducible: the commit time, not the wall clock, unless the tree is dirty.
if [[ $ver == *-dirty || -z $commit ]]; then
  date=$(date -u +%Y-%m-%dT%H:%M:%SZ)
else
  date=$(TZ=UTC git show -s --format=%cd --date=format-local:%Y-%m-%dT%H:%M:%SZ HEAD)
fi
ldflags="-s -w -X $pkg.Version=$ver -X $pkg.Commit=$commit -X $pkg.Date=$date"

mkdir -p "$DIST"
rm -f "$DIST/SHA256SUMS"
built=()
skipped=0
for cmd in $CMDS; do
  if [[ $(go list -f '{{.Name}}' "./$cmd" 2>/dev/null) != main ]]; then
    echo "SKIP $cmd: ./$cmd has no main package (yet)" >&2
    skipped=$((skipped + 1))
    continue
  fi
  for t in $TARGETS; do
    IFS=/ read -r goos goarch goarm <<<"$t"
    out="$DIST/$cmd-$goos-$goarch${goarm:+v$goarm}"
    echo "build $out ($ver)"
    CGO_ENABLED=0 GOOS=$goos GOARCH=$goarch GOARM=${goarm:-} \
      go build -trimpath -ldflags "$ldflags" -o "$out" "./$cmd"
    built+=("$(basename "$out")")
  done
done

if [[ ${#built[@]} -gt 0 ]]; then
  (cd "$DIST" && sha256sum "${built[@]}" > SHA256SUMS)
  echo "wrote $DIST/SHA256SUMS (${#built[@]} binaries, version $ver)"
fi
if [[ $skipped -gt 0 && $STRICT == 1 ]]; then
  echo "FAIL: $skipped command(s) skipped (STRICT=1)" >&2
  exit 1
fi
