#!/usr/bin/env bash
# Start a private containerd for tests/CI: root, state and socket under DIR, CRI disabled.
# Usage: scripts/start-containerd.sh DIR
# Prints the containerd PID on stdout (progress goes to stderr). Idempotent: if a containerd
# from an earlier run still answers on DIR/containerd.sock, its PID is printed again.
set -euo pipefail

if [[ $# -ne 1 ]]; then
    echo "usage: $0 DIR" >&2
    exit 2
fi
dir=$(mkdir -p "$1" && cd "$1" && pwd)
sock="$dir/containerd.sock"
log="$dir/containerd.log"
pidfile="$dir/containerd.pid"
config="$dir/config.toml"

for bin in containerd ctr runc; do
    command -v "$bin" >/dev/null || { echo "$bin not found; apt-get install containerd runc" >&2; exit 1; }
done

if [[ -f "$pidfile" ]] && kill -0 "$(cat "$pidfile")" 2>/dev/null \
    && ctr --address "$sock" version >/dev/null 2>&1; then
    echo "containerd already running in $dir (pid $(cat "$pidfile"))" >&2
    cat "$pidfile"
    exit 0
fi

echo "writing $config" >&2
mkdir -p "$dir/root" "$dir/state"
cat >"$config" <<CONF
version = 2
root = "$dir/root"
state = "$dir/state"
disabled_plugins = ["io.containerd.grpc.v1.cri"]

[grpc]
  address = "$sock"

[ttrpc]
  address = "$sock.ttrpc"

[debug]
  address = "$dir/debug.sock"
  level = "info"
CONF

echo "starting containerd (log: $log)" >&2
rm -f "$sock"
# setsid: the daemon must not die with the caller's terminal or process group.
setsid containerd --config "$config" >>"$log" 2>&1 </dev/null &
pid=$!
echo "$pid" >"$pidfile"

deadline=$((SECONDS + 20))
until ctr --address "$sock" version >/dev/null 2>&1; do
    if ! kill -0 "$pid" 2>/dev/null; then
        echo "containerd exited during startup; last log lines:" >&2
        tail -n 20 "$log" >&2
        exit 1
    fi
    if ((SECONDS >= deadline)); then
        echo "containerd did not answer on $sock within 20s; see $log" >&2
        kill "$pid" 2>/dev/null || true
        exit 1
    fi
    sleep 0.05
done
echo "containerd ready on $sock" >&2
echo "$pid"
