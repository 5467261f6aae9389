#!/usr/bin/env bash
# Start Debian's docker-registry on 127.0.0.1:PORT with storage under DIR.
# Usage: scripts/start-registry.sh PORT DIR [USER PASSWORD]
#        scripts/start-registry.sh PORT DIR --token REALM SERVICE ISSUER ROOTCERT
# With USER and PASSWORD the registry requires HTTP basic auth (htpasswd, bcrypt). With --token
# it requires bearer tokens from REALM (e.g. http://127.0.0.1:TPORT/token of
# scripts/start-token-server.sh), for audience SERVICE, from ISSUER, signed by ROOTCERT's key.
# Prints the registry PID on stdout (progress goes to stderr).
set -euo pipefail

token=()
user=""
password=""
if [[ $# -eq 7 && $3 == --token ]]; then
    token=("${@:4}")
elif [[ $# -eq 4 && $3 != --token ]]; then
    user=$3
    password=$4
elif [[ $# -ne 2 ]]; then
    echo "usage: $0 PORT DIR [USER PASSWORD | --token REALM SERVICE ISSUER ROOTCERT]" >&2
    exit 2
fi
port=$1
dir=$(mkdir -p "$2" && cd "$2" && pwd)
config="$dir/config.yml"
log="$dir/registry.log"
pidfile="$dir/registry.pid"

command -v docker-registry >/dev/null || { echo "docker-registry not found; apt-get install docker-registry" >&2; exit 1; }

# /v2/ answers 200 without auth and 401 with it: either means the registry is serving.
registry_up() {
    python3 - "$port" <<'PY'
import sys, urllib.request, urllib.error
try:
    urllib.request.urlopen(f"http://127.0.0.1:{sys.argv[1]}/v2/", timeout=1)
except urllib.error.HTTPError as e:
    sys.exit(0 if e.code == 401 else 1)
except Exception:
    sys.exit(1)
PY
}

if [[ -f "$pidfile" ]] && kill -0 "$(cat "$pidfile")" 2>/dev/null && registry_up; then
    echo "registry already running on 127.0.0.1:$port (pid $(cat "$pidfile"))" >&2
    cat "$pidfile"
    exit 0
fi

auth=""
if ((${#token[@]})); then
    [[ -f "${token[3]}" ]] || { echo "root certificate ${token[3]} not found" >&2; exit 1; }
    rootcert=$(cd "$(dirname "${token[3]}")" && pwd)/$(basename "${token[3]}")
    auth="auth:
  token:
    realm: ${token[0]}
    service: ${token[1]}
    issuer: ${token[2]}
    rootcertbundle: $rootcert"
elif [[ -n "$user" ]]; then
    htpasswd_file="$dir/htpasswd"
    echo "writing $htpasswd_file for user $user (bcrypt)" >&2
    if command -v htpasswd >/dev/null; then
        htpasswd -nbB "$user" "$password" >"$htpasswd_file"
    else
        # Debian 12's libxcrypt implements bcrypt ($2b$), reachable through Python's crypt module
        # (Python <= 3.12). Otherwise: apt-get install apache2-utils for htpasswd.
        python3 -W ignore - "$user" "$password" >"$htpasswd_file" <<'PY'
import crypt, sys
user, password = sys.argv[1], sys.argv[2]
h = crypt.crypt(password, crypt.mksalt(crypt.METHOD_BLOWFISH))
if not h or not h.startswith("$2"):
    sys.exit("bcrypt unavailable: apt-get install apache2-utils")
print(f"{user}:{h}")
PY
    fi
    auth="auth:
  htpasswd:
    realm: voiyd-test
    path: $htpasswd_file"
fi

echo "writing $config" >&2
mkdir -p "$dir/storage"
cat >"$config" <<CONF
version: 0.1
log:
  level: warn
storage:
  filesystem:
    rootdirectory: $dir/storage
  delete:
    enabled: true
http:
  addr: 127.0.0.1:$port
$auth
CONF

echo "starting docker-registry on 127.0.0.1:$port (log: $log)" >&2
setsid docker-registry serve "$config" >>"$log" 2>&1 </dev/null &
pid=$!
echo "$pid" >"$pidfile"

deadline=$((SECONDS + 20))
until registry_up
do
    if ! kill -0 "$pid" 2>/dev/null; then
        echo "docker-registry exited during startup; log:" >&2
        tail -n 20 "$log" >&2
        exit 1
    fi
    if ((SECONDS >= deadline)); then
        echo "docker-registry did not answer on 127.0.0.1:$port within 20s; see $log" >&2
        kill "$pid" 2>/dev/null || true
        exit 1
    fi
    sleep 0.05
done
echo "registry ready on 127.0.0.1:$port" >&2
echo "$pid"
