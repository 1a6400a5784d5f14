#!/usr/bin/env bash
# Static release builds (`make dist`): gateway, bridge and firmware-sim for
# the targets site boxes and cloud VMs use, with version information linked
# in (package version), a SHA-256 checksums file, and a Debian package per
# target (fleetgate_VERSION_ARCH.deb for amd64, arm64, armhf; deploy/deb).
#
#   deploy/dist.sh                 all targets into dist/
#   TARGETS="linux/arm64" deploy/dist.sh
#   DIST=/tmp/out deploy/dist.sh
#   DEBS=0 deploy/dist.sh          binaries only
#
# The packages are built by nfpm (github.com/goreleaser/nfpm) at a pinned
# version through `go run` (NFPM overrides the command); deploy/deb/nfpm.yaml
# lists their content: /usr/bin/fleetgate-{gateway,bridge,firmware-sim},
# the units (ExecStart on /usr/bin), sysusers.d, and the example
# configurations as conffiles in /etc/fleetgate. No secrets.
#
# Every release binary is CGO_ENABLED=0 (static, no libc), -trimpath (no build paths),
# stripped of the symbol table (-s -w). Output: dist/<cmd>-<os>-<arch>[v7]
# and dist/SHA256SUMS. A command whose directory has no main package yet is
# skipped with a loud line; STRICT=1 makes that an error.
set -euo pipefail
cd "$(dirname "$0")/.."

DIST=${DIST:-dist}
TARGETS=${TARGETS:-"linux/amd64 linux/arm64 linux/arm/7"}
CMDS=${CMDS:-"gateway bridge firmware-sim"}
STRICT=${STRICT:-0}
DEBS=${DEBS:-1}
# TESTBUILD=1 (deploy/deb's test only, never a release): build with the
# default flags so the test reuses the build cache of `go build ./...`
# instead of compiling the whole tree again for CGO_ENABLED=0 -trimpath
# (minutes on a loaded CI box); the binaries then need libc6.
TESTBUILD=${TESTBUILD:-0}
NFPM_VERSION=v2.48.0   # name the version: a later one may need a newer Go
# The pinned nfpm that deploy/ci/install-deps.sh installs, else go run it.
if [[ -z ${NFPM:-} ]]; then
  NFPM="go run github.com/goreleaser/nfpm/v2/cmd/nfpm@$NFPM_VERSION"
  gobin=$(go env GOPATH)/bin
  if go version -m "$gobin/nfpm" 2>/dev/null | grep -q "github.com/goreleaser/nfpm/v2[[:space:]]*$NFPM_VERSION"; then
    NFPM=$gobin/nfpm
  fi
fi

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
    if [[ $TESTBUILD == 1 ]]; then
      # The flags of `go build ./...` (its cache is reused: only the link
      # runs), so dynamically linked against libc; for the package test.
      GOOS=$goos GOARCH=$goarch GOARM=${goarm:-} go build -ldflags "$ldflags" -o "$out" "./$cmd"
    else
      CGO_ENABLED=0 GOOS=$goos GOARCH=$goarch GOARM=${goarm:-} \
        go build -trimpath -ldflags "$ldflags" -o "$out" "./$cmd"
    fi
    built+=("$(basename "$out")")
  done
done

if [[ ${#built[@]} -gt 0 ]]; then
  (cd "$DIST" && sha256sum "${built[@]}" > SHA256SUMS)
  echo "wrote $DIST/SHA256SUMS (${#built[@]} binaries, version $ver)"
fi
# Debian packages: one per target, from the binaries just built.
deb_arch() {
  case $1 in
    amd64) echo amd64 ;; arm64) echo arm64 ;; arm/7) echo armhf ;; *) echo "" ;;
  esac
}
if [[ $DEBS == 1 && $skipped -eq 0 ]]; then
  # Debian versions start with a digit: a tag v1.2.3 gives 1.2.3, anything
  # else 0.0~gitYYYYMMDD.COMMIT (sorts before the first release).
  if [[ $ver =~ ^v([0-9][0-9A-Za-z.+~]*)$ ]]; then
    debver=${BASH_REMATCH[1]}
  else
    debver="0.0~git$(echo "$date" | cut -c1-10 | tr -d -).${commit:0:12}"
    [[ -n $commit ]] || debver="0.0~dev"
    [[ $ver == *-dirty ]] && debver="$debver+dirty"
  fi
  stage=$(mktemp -d)
  trap 'rm -rf "$stage"' EXIT
  for u in fleetgate-gateway.service fleetgate-bridge.service; do
    sed 's#/usr/local/bin/fleetgate-#/usr/bin/fleetgate-#g' "deploy/systemd/$u" >"$stage/$u"
  done
  cp deploy/README.md "$stage/README.md"
  cp deploy/deb/copyright "$stage/copyright"
  printf 'fleetgate (%s) unstable; urgency=medium\n\n  * Build %s of commit %s.\n\n -- fleetgate maintainers <fleetgate@example.net>  %s\n' \
    "$debver" "$ver" "${commit:-unknown}" "$(date -u -R -d "$date" 2>/dev/null || date -u -R)" | gzip -9n >"$stage/changelog.gz"
  for t in $TARGETS; do
    IFS=/ read -r goos goarch goarm <<<"$t"
    arch=$(deb_arch "$goarch${goarm:+/$goarm}")
    [[ $goos == linux && -n $arch ]] || { echo "SKIP deb for $t: no Debian architecture" >&2; continue; }
    bin="$stage/bin-$arch"
    mkdir -p "$bin"
    for cmd in $CMDS; do cp "$DIST/$cmd-$goos-$goarch${goarm:+v$goarm}" "$bin/$cmd"; done
    echo "package $DIST/fleetgate_${debver}_$arch.deb"
    libc=""
    [[ $TESTBUILD == 1 ]] && libc='s#^  - iproute2$#  - iproute2\n  - libc6#'
    sed -e "${libc:-s#^##}" -e "s#\${DEB_ARCH}#$arch#g" -e "s#\${DEB_VERSION}#$debver#g" -e "s#\${BIN}#$bin#g" -e "s#\${STAGE}#$stage#g" \
      deploy/deb/nfpm.yaml >"$stage/nfpm-$arch.yaml"
    $NFPM package --config "$stage/nfpm-$arch.yaml" --packager deb --target "$DIST/fleetgate_${debver}_$arch.deb" >/dev/null
  done
fi
if [[ $skipped -gt 0 && $STRICT == 1 ]]; then
  echo "FAIL: $skipped command(s) skipped (STRICT=1)" >&2
  exit 1
fi
