#!/usr/bin/env bash
# Scheduler benchmark: 20,000 tasks on 1,000 simulated nodes (one voiyd-node process),
# release builds, a fresh nats-server. Prints placements/s (create to Running reported),
# API latency percentiles, RSS of every process and a bare NATS request/reply baseline.
# Extra flags go to the benchmark: --nodes N --tasks N --concurrency N --servers N
# --heartbeat SECS --node-timeout SECS --count-messages 0|1 --idle SECS --unplaceable N
# --resync SECS (how often each sim node re-reads its work; default 30) --sync-secs SECS
# (0, the default: nats-server fsyncs before every acknowledgement; N: every N seconds).
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release -p voiyd-server -p voiyd-node -p voiyd-tests --bins
echo "machine: $(nproc) cores, $(awk '/MemTotal/ {printf "%.1f GiB", $2/1048576}' /proc/meminfo), $(uname -sr)"
exec env VOIYD_BIN_DIR="$PWD/target/release" target/release/voiyd-bench-scheduler "$@"
