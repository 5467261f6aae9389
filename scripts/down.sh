#!/usr/bin/env bash
# Stops what scripts/up.sh started (by the PIDs it recorded). Containers of running tasks
# are stopped first through voiyd, so nothing is left running.
set -uo pipefail
VOIYD_HOME=${VOIYD_HOME:-/var/lib/voiyd}
RUN="$VOIYD_HOME/run"
if command -v voiydctl >/dev/null; then
  for t in $(voiydctl get tasks -o name 2>/dev/null | sed 's#.*/##'); do
    voiydctl delete task "$t" --timeout 30s >/dev/null 2>&1 || true
  done
fi
for p in node server registry containerd; do
  f="$RUN/$p.pid"
  [ -f "$f" ] || continue
  pid=$(cat "$f")
  if kill -0 "$pid" 2>/dev/null; then
    kill "$pid"
    for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    kill -9 "$pid" 2>/dev/null || true
    echo "stopped $p ($pid)"
  fi
  rm -f "$f"
done
