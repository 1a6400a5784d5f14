#!/usr/bin/env bash
# Installs, idempotently and quietly, what the test suite needs on a fresh
# Debian 12 machine: the real peers the interop tests run against, and the
# pinned staticcheck. Only missing packages are installed; nothing is
# upgraded. Without root it only reports what is missing.
set -euo pipefail

PKGS=(
  strongswan strongswan-charon strongswan-swanctl strongswan-pki
  libstrongswan-standard-plugins   # openssl plugin: charon loads it (MODP/ECP, AES-GCM, SHA1 via openssl)
  xl2tpd
  softether-vpnserver softether-vpncmd
  libcoap3-bin
  mosquitto mosquitto-clients
  freeradius freeradius-utils
  bird2         # central BGP router of the gateway fleet tests (gateway/bgp)
  tshark
  nftables iproute2
  ethtool       # captures judged by tshark turn segmentation offload off on the captured veths
  systemd       # systemd-analyze verify/security for deploy/systemd units (not booted)
  prometheus    # promtool checks deploy/monitoring rules (the server is not started)
  ike-scan      # a stock IKE initiator: gateway/engine checks the stateless responder cookie against it
  chromium      # headless browser: internal/statuspage's browser test (chromedp) renders both daemons' status pages
  lintian       # deploy/deb's package test checks the built .deb with it
)
STATICCHECK_VERSION=v0.8.2   # honnef.co/go/tools
NFPM_VERSION=v2.48.0         # github.com/goreleaser/nfpm: the .deb packager of deploy/dist.sh (same pin there)

missing=()
for p in "${PKGS[@]}"; do
  if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed'; then
    missing+=("$p")
  fi
done

if ((${#missing[@]})); then
  if [[ $(id -u) -ne 0 ]]; then
    echo "install-deps: not root, cannot install: ${missing[*]} (interop tests will skip)" >&2
  else
    echo "install-deps: installing ${missing[*]}"
    export DEBIAN_FRONTEND=noninteractive
    # tshark asks whether non-root users may capture; answer no.
    echo "wireshark-common wireshark-common/install-setuid boolean false" | debconf-set-selections
    apt-get update -qq >/dev/null
    apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
    # Debian starts some of these as services when systemd runs; the tests
    # start their own private instances, so stop any system copies.
    for s in mosquitto freeradius xl2tpd strongswan-starter softether-vpnserver ipsec bird prometheus prometheus-node-exporter; do
      if command -v systemctl >/dev/null && systemctl is-active --quiet "$s" 2>/dev/null; then
        systemctl stop "$s" || true
        systemctl disable --quiet "$s" 2>/dev/null || true
      fi
    done
  fi
fi

gobin=$(go env GOPATH)/bin
if ! "$gobin/staticcheck" -version 2>/dev/null | grep -q "${STATICCHECK_VERSION#v}"; then
  echo "install-deps: installing staticcheck ${STATICCHECK_VERSION}"
  go install "honnef.co/go/tools/cmd/staticcheck@${STATICCHECK_VERSION}"
fi
if ! go version -m "$gobin/nfpm" 2>/dev/null | grep -q "github.com/goreleaser/nfpm/v2[[:space:]]*${NFPM_VERSION}"; then
  echo "install-deps: installing nfpm ${NFPM_VERSION}"
  go install "github.com/goreleaser/nfpm/v2/cmd/nfpm@${NFPM_VERSION}"
fi
