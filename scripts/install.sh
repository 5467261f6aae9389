#!/usr/bin/env bash
# Installs voiyd as systemd services on this host (Debian 12 or any systemd distribution,
# as root): the binaries, a unit and a settings file, then enables and starts the unit.
#
#   scripts/install.sh --server [-- SERVER FLAGS...]
#   scripts/install.sh --node --server nats://HOST:4222 [--join-token TOKEN] [--name NAME] [-- NODE FLAGS...]
#
# Options:
#   --bin-dir DIR     where the built binaries are [target/release, built if missing]
#   --prefix DIR      binaries go to DIR/bin [/usr/local]
#   --unit-dir DIR    [/etc/systemd/system]
#   --config-dir DIR  settings files server.env / node.env [/etc/voiyd]
#   --data-dir DIR    state: DIR/server, DIR/node [/var/lib/voiyd]
#   --no-start        write the files only (no systemctl)
#   --force           overwrite an existing settings file (it is kept otherwise)
# Flags after `--` go into the settings file (VOIYD_SERVER_ARGS / VOIYD_NODE_ARGS).
# See docs/install.md for a multi-host install.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$(pwd)

die() { echo "install.sh: $*" >&2; exit 2; }

role="" server_url="" join_token="" name="" bin_dir="" prefix=/usr/local
unit_dir=/etc/systemd/system config_dir=/etc/voiyd data_dir=/var/lib/voiyd
start=1 force=0 extra=()
while (($#)); do
  case "$1" in
    --server)
      # `--server` alone installs the control plane; `--server URL` names the cluster
      # a node (`--node`) joins.
      if (($# >= 2)) && [[ "$2" != -* ]]; then server_url=$2; shift
      else [[ "$role" != node ]] || die "--node needs --server nats://HOST:4222"; role=server; fi ;;
    --node)
      [[ "$role" != server ]] || die "give one of --server or --node (a host can run both: run install.sh twice)"
      role=node ;;
    --join-token) (($# >= 2)) || die "--join-token needs a value"; join_token=$2; shift ;;
    --name) (($# >= 2)) || die "--name needs a value"; name=$2; shift ;;
    --bin-dir) (($# >= 2)) || die "--bin-dir needs a directory"; bin_dir=$2; shift ;;
    --prefix) (($# >= 2)) || die "--prefix needs a directory"; prefix=$2; shift ;;
    --unit-dir) (($# >= 2)) || die "--unit-dir needs a directory"; unit_dir=$2; shift ;;
    --config-dir) (($# >= 2)) || die "--config-dir needs a directory"; config_dir=$2; shift ;;
    --data-dir) (($# >= 2)) || die "--data-dir needs a directory"; data_dir=$2; shift ;;
    --no-start) start=0 ;;
    --force) force=1 ;;
    --) shift; extra=("$@"); break ;;
    *) die "unknown option $1: see the top of scripts/install.sh" ;;
  esac
  shift
done
[[ "$role" == node || -z "$server_url" ]] || die "--server $server_url names a cluster to join: add --node"
[[ -n "$role" ]] || die "give --server (control plane) or --node --server URL (agent)"
if [[ "$role" == node ]]; then
  [[ -n "$server_url" ]] || die "--node needs --server nats://HOST:4222, the NATS URL(s) of the cluster"
  [[ "$server_url" == nats://* || "$server_url" == tls://* ]] \
    || die "--server $server_url: give a NATS URL, e.g. nats://10.0.0.1:4222"
fi
for d in "$prefix" "$unit_dir" "$config_dir" "$data_dir"; do
  [[ "$d" == /* ]] || die "$d: give absolute paths (systemd needs them)"
done
# systemd splits $VAR in ExecStart on spaces: flags with spaces or quotes cannot pass.
for a in "${extra[@]+"${extra[@]}"}"; do
  [[ "$a" != *[[:space:]\"\'\\]* ]] || die "flag '$a' has spaces or quotes: write it into $config_dir/$role.env by hand"
done
joined="${extra[*]+"${extra[*]}"}"
if ((start)) && [[ ! -d /run/systemd/system ]]; then
  die "systemd is not running on this host: use --no-start to only write the files, or scripts/up.sh for a local cluster"
fi

bin=voiyd-$role
if [[ -z "$bin_dir" ]]; then
  bin_dir=$ROOT/target/release
  if [[ ! -x "$bin_dir/$bin" ]]; then
    echo "== building voiyd (release)"
    cargo build --release --bins
  fi
fi
[[ -x "$bin_dir/$bin" ]] || die "$bin_dir/$bin not found: build it (cargo build --release --bins) or pass --bin-dir"

echo "== binaries into $prefix/bin"
install -d -m 0755 "$prefix/bin"
for b in "$bin" voiydctl; do
  [[ -x "$bin_dir/$b" ]] || continue
  # Beside, then renamed over: a running binary is replaced, never written into.
  install -m 0755 "$bin_dir/$b" "$prefix/bin/.$b.new"
  mv -f "$prefix/bin/.$b.new" "$prefix/bin/$b"
done

echo "== unit $unit_dir/$bin.service"
install -d -m 0755 "$unit_dir"
sed -e "s|@PREFIX@|$prefix|g" -e "s|@CONFIG_DIR@|$config_dir|g" -e "s|@DATA_DIR@|$data_dir|g" \
  "$ROOT/scripts/systemd/$bin.service" >"$unit_dir/.$bin.service.new"
mv -f "$unit_dir/.$bin.service.new" "$unit_dir/$bin.service"

# Settings: kept when present (an operator's edits survive a reinstall) unless --force.
# Mode 0600: they may hold a join token or secrets.
env_file=$config_dir/$role.env
install -d -m 0755 "$config_dir"
install -d -m 0700 "$data_dir"
if [[ ! -e "$env_file" || $force == 1 ]]; then
  echo "== settings $env_file"
  umask 077
  {
    echo "# voiyd-$role settings, read by $bin.service (systemctl restart $bin after a change)."
    if [[ "$role" == server ]]; then
      echo "# Flags of voiyd-server (voiyd-server --help), split on spaces. For more than one"
      echo "# server see docs/install.md (--nats-peers, --nats-cluster-secret, --auth)."
      if ((${#extra[@]})); then
        echo "VOIYD_SERVER_ARGS=\"$joined\""
      else
        echo "VOIYD_SERVER_ARGS=\"--nats-listen 0.0.0.0:4222\""
      fi
      echo "#VOIYD_LOG=info"
    else
      echo "# The cluster's NATS URL(s), comma-separated."
      echo "VOIYD_SERVER=$server_url"
      if [[ -n "$join_token" ]]; then
        echo "# Used once: the node keeps its identity in $data_dir/node afterwards."
        echo "VOIYD_JOIN_TOKEN=$join_token"
      fi
      [[ -z "$name" ]] || echo "VOIYD_NODE_NAME=$name"
      echo "# More flags of voiyd-node (voiyd-node --help), split on spaces."
      echo "VOIYD_NODE_ARGS=\"$joined\""
      echo "#VOIYD_LOG=info"
    fi
  } >"$env_file.new"
  chmod 0600 "$env_file.new"
  mv -f "$env_file.new" "$env_file"
else
  echo "== settings $env_file kept (--force to rewrite)"
fi

if ((start)); then
  echo "== systemctl enable --now $bin"
  systemctl daemon-reload
  systemctl enable --now "$bin.service"
  deadline=$((SECONDS + 30))
  until systemctl is-active --quiet "$bin.service"; do
    [ $SECONDS -lt $deadline ] || { systemctl status --no-pager "$bin.service" >&2 || true; die "$bin did not start: journalctl -u $bin"; }
    sleep 0.5
  done
  echo "$bin is running: journalctl -u $bin -f"
else
  echo "files written; start with: systemctl daemon-reload && systemctl enable --now $bin"
fi
