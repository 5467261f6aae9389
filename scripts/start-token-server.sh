#!/usr/bin/env bash
# Start scripts/token-server.py (a Docker registry token server) on 127.0.0.1:PORT, files in DIR.
# Usage: scripts/start-token-server.sh PORT DIR USER PASSWORD SERVICE ISSUER
# Creates once DIR/token-key.pem (RSA 2048) and DIR/token-ca.pem (its self-signed certificate,
# the registry's rootcertbundle); logs to DIR/token-server.log. Point the registry at it with
#   scripts/start-registry.sh RPORT RDIR --token http://127.0.0.1:PORT/token SERVICE ISSUER DIR/token-ca.pem
# GET /stats answers {"tokens_issued": N, "refused": M}.
# Prints the server PID on stdout (progress goes to stderr).
set -euo pipefail

if [[ $# -ne 6 ]]; then
    echo "usage: $0 PORT DIR USER PASSWORD SERVICE ISSUER" >&2
    exit 2
fi
port=$1
dir=$(mkdir -p "$2" && cd "$2" && pwd)
log="$dir/token-server.log"
pidfile="$dir/token-server.pid"
server="$(cd "$(dirname "$0")" && pwd)/token-server.py"

command -v openssl >/dev/null || { echo "openssl not found; apt-get install openssl" >&2; exit 1; }

server_up() {
    python3 - "$port" <<'PY'
import sys, urllib.request
try:
    urllib.request.urlopen(f"http://127.0.0.1:{sys.argv[1]}/stats", timeout=1)
except Exception:
    sys.exit(1)
PY
}

if [[ -f "$pidfile" ]] && kill -0 "$(cat "$pidfile")" 2>/dev/null && server_up; then
    echo "token server already running on 127.0.0.1:$port (pid $(cat "$pidfile"))" >&2
    cat "$pidfile"
    exit 0
fi

# Reuse an existing key: a running registry already trusts its certificate.
if [[ ! -f "$dir/token-key.pem" || ! -f "$dir/token-ca.pem" ]]; then
    echo "creating $dir/token-key.pem and $dir/token-ca.pem" >&2
    openssl req -x509 -newkey rsa:2048 -nodes -sha256 -days 3650 -subj "/CN=voiyd test token issuer" \
        -keyout "$dir/token-key.pem" -out "$dir/token-ca.pem" 2>/dev/null
fi

echo "starting token server on 127.0.0.1:$port (log: $log)" >&2
setsid python3 "$server" "$port" "$dir" "$3" "$4" "$5" "$6" >>"$log" 2>&1 </dev/null &
pid=$!
echo "$pid" >"$pidfile"

deadline=$((SECONDS + 20))
until server_up
do
    if ! kill -0 "$pid" 2>/dev/null; then
        echo "token server exited during startup; log:" >&2
        tail -n 20 "$log" >&2
        exit 1
    fi
    if ((SECONDS >= deadline)); then
        echo "token server did not answer on 127.0.0.1:$port within 20s; see $log" >&2
        kill "$pid" 2>/dev/null || true
        exit 1
    fi
    sleep 0.05
done
echo "token server ready on 127.0.0.1:$port" >&2
echo "$pid"
