#!/usr/bin/env bash
# Stops what scripts/up.sh started (by the PIDs it recorded). Containers of running tasks
# are stopped first through voiyd, so nothing is left running.
set -uo pipefail
VOIYD_HOME=${VOIYD_HOME:-/var/lib/voiyd}
RUN="$VOIYD_HOME/run"
if command -v voiydctl >/dev/null; then
  # `stop` returns once the node reports the container stopped (within the task's grace
  # period); `delete` alone returns when the spec is gone, before the node has stopped it,
  # and the node is stopped next: its containers would be left running.
  tasks=$(voiydctl get tasks -o name 2>/dev/null | sed 's#.*/##')
  for t in $tasks; do
    voiydctl stop task "$t" >/dev/null 2>&1 &
  done
  wait
  for t in $tasks; do
    voiydctl delete task "$t" >/dev/null 2>&1 || true
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
