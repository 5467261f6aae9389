#!/usr/bin/env bash
# The run-path benchmark with a Docker engine beside it, for its `docker run -d` column.
#
# Machines without a Docker engine get Debian's docker.io unpacked into a scratch directory
# (nothing is installed), run with a containerd of its own, its own data and exec roots and
# socket, and no iptables changes (its default bridge works without them for `run -d`).
# Everything it started is stopped by PID at the end, and its bridge removed.
#
# Usage (root, after `cargo build --release --bins`): scripts/bench-docker.sh [RUNS]
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
RUNS="${1:-20}"
D="$(mktemp -d /tmp/vdb.XXXXXX)"
PIDS=()

cleanup() {
    for pid in "${PIDS[@]}"; do kill "$pid" 2>/dev/null || true; done
    for pid in "${PIDS[@]}"; do
        for _ in $(seq 1 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    done
    ip link del vdb0 2>/dev/null || true
    # Layers a stopped engine left mounted, then the scratch directory.
    grep -o "$D[^ ]*" /proc/mounts | sort -r | xargs -r -n1 umount -l 2>/dev/null || true
    rm -rf "$D"
}
trap cleanup EXIT

DOCKERD="$(command -v dockerd || true)"
if [ -z "$DOCKERD" ]; then
    (cd "$D" && apt-get download -q docker.io >/dev/null 2>&1)
    dpkg -x "$D"/docker.io_*.deb "$D/pkg"
    DOCKERD="$D/pkg/usr/sbin/dockerd"
    export PATH="$D/pkg/usr/bin:$D/pkg/usr/sbin:$PATH"
fi

cat >"$D/containerd.toml" <<EOF
version = 2
root = "$D/containerd"
state = "$D/containerd-state"
[grpc]
  address = "$D/containerd.sock"
EOF
containerd --config "$D/containerd.toml" >"$D/containerd.log" 2>&1 &
PIDS+=($!)
for _ in $(seq 1 100); do [ -S "$D/containerd.sock" ] && break; sleep 0.1; done

ip link add vdb0 type bridge
ip addr add 172.31.254.1/24 dev vdb0
ip link set vdb0 up
"$DOCKERD" --containerd "$D/containerd.sock" --data-root "$D/data" --exec-root "$D/exec" \
    --pidfile "$D/dockerd.pid" -H "unix://$D/docker.sock" --bridge vdb0 \
    --iptables=false --ip-masq=false --userland-proxy=false >"$D/dockerd.log" 2>&1 &
PIDS=("$!" "${PIDS[@]}")
export DOCKER_HOST="unix://$D/docker.sock"
for _ in $(seq 1 300); do docker info >/dev/null 2>&1 && break; sleep 0.1; done
docker info --format 'Docker engine {{.ServerVersion}}, storage {{.Driver}}'

VOIYD_BIN_DIR="${VOIYD_BIN_DIR:-$ROOT/target/release}" "$ROOT/target/release/bench_run" "$RUNS"
