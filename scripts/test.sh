#!/usr/bin/env bash
# Installs everything the tests need, builds, and runs every test: unit, property and
# end-to-end tests on real nats-server, containerd, runc, CNI plugins and a local OCI
# registry (the tests start those processes themselves, on loopback and temp dirs).
# Also checks formatting and clippy. Run as root on Debian 12.
set -euo pipefail
cd "$(dirname "$0")/.."

scripts/install-deps.sh

echo "== cargo fmt --check"
cargo fmt --all -- --check
echo "== cargo clippy"
cargo clippy --workspace --all-targets -- -D warnings
echo "== cargo build"
cargo build --workspace --bins --tests
echo "== cargo test"
cargo test --workspace -- --test-threads "${VOIYD_TEST_THREADS:-4}"
