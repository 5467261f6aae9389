#!/usr/bin/env bash
# Brings up a working local voiyd cluster on this machine (Debian 12, as root) and runs a
# task in it:
#   - installs what is missing (scripts/install-deps.sh) and builds voiyd (release),
#   - starts containerd (state under $VOIYD_HOME/containerd),
#   - starts a local OCI registry on 127.0.0.1:5000 holding test images built offline
#     from busybox-static (no internet registry is needed),
#   - starts voiyd-server with its embedded NATS on 127.0.0.1:4222,
#   - starts voiyd-node, waits until it is Ready, and runs the task `hello`.
# Idempotent: what already runs is kept. Stop everything with scripts/down.sh.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$(pwd)
VOIYD_HOME=${VOIYD_HOME:-/var/lib/voiyd}
RUN="$VOIYD_HOME/run"
mkdir -p "$RUN"

scripts/install-deps.sh
echo "== building voiyd (release)"
cargo build --release --bins
for b in voiyd-server voiyd-node voiydctl; do
  ln -sf "$ROOT/target/release/$b" "/usr/local/bin/$b"
done

alive() { [ -f "$RUN/$1.pid" ] && kill -0 "$(cat "$RUN/$1.pid")" 2>/dev/null; }

echo "== containerd"
CD_DIR="$VOIYD_HOME/containerd"
scripts/start-containerd.sh "$CD_DIR" >"$RUN/containerd.pid"

echo "== local registry on 127.0.0.1:5000"
scripts/start-registry.sh 5000 "$VOIYD_HOME/registry" >"$RUN/registry.pid"
python3 scripts/build-test-images.py "$VOIYD_HOME/images" >/dev/null
scripts/push-test-images.sh 5000 "$VOIYD_HOME/images"

echo "== voiyd-server (embedded NATS on 127.0.0.1:4222)"
if ! alive server; then
  setsid voiyd-server --data-dir "$VOIYD_HOME/server" --nats-listen 127.0.0.1:4222 \
    >"$VOIYD_HOME/server.log" 2>&1 </dev/null &
  echo $! >"$RUN/server.pid"
fi
deadline=$((SECONDS + 30))
until voiydctl --server nats://127.0.0.1:4222 get nodes >/dev/null 2>&1; do
  alive server || { echo "voiyd-server exited; see $VOIYD_HOME/server.log" >&2; tail -5 "$VOIYD_HOME/server.log" >&2; exit 1; }
  [ $SECONDS -lt $deadline ] || { echo "voiyd-server did not answer in 30s" >&2; exit 1; }
  sleep 0.2
done

echo "== voiyd-node"
NODE=$(hostname)
if ! alive node; then
  setsid voiyd-node --server nats://127.0.0.1:4222 --name "$NODE" \
    --containerd-socket "$CD_DIR/containerd.sock" --data-dir "$VOIYD_HOME/node" \
    >"$VOIYD_HOME/node.log" 2>&1 </dev/null &
  echo $! >"$RUN/node.pid"
fi
deadline=$((SECONDS + 30))
until voiydctl get nodes 2>/dev/null | grep -q " Ready"; do
  alive node || { echo "voiyd-node exited; see $VOIYD_HOME/node.log" >&2; tail -5 "$VOIYD_HOME/node.log" >&2; exit 1; }
  [ $SECONDS -lt $deadline ] || { echo "voiyd-node did not become Ready in 30s" >&2; exit 1; }
  sleep 0.2
done
voiydctl get nodes

echo "== running the task hello"
voiydctl delete task hello >/dev/null 2>&1 || true
voiydctl run hello --image 127.0.0.1:5000/voiyd/busybox:test -- \
  sh -c 'echo hello from voiyd; while true; do sleep 3600; done'
voiydctl get tasks -o wide
echo
echo "The cluster is up. Try: voiydctl get tasks; voiydctl events; voiydctl stop task hello"
echo "Task output is kept under $VOIYD_HOME/node/logs/hello/. Stop everything: scripts/down.sh"
