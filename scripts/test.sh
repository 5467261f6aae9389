#!/usr/bin/env bash
# Installs everything the tests need, builds, and runs every test: unit, property and
# end-to-end tests on real nats-server, containerd, runc, CNI plugins and a local OCI
# registry (the tests start those processes themselves, on loopback and temp dirs).
# Also checks formatting and clippy. Run as root on Debian 12.
set -euo pipefail
cd "$(dirname "$0")/.."

scripts/install-deps.sh --test

echo "== cargo fmt --check"
cargo fmt --all -- --check
echo "== cargo clippy"
cargo clippy --workspace --all-targets -- -D warnings
echo "== cargo build"
cargo build --workspace --bins --tests
echo "== cargo test"
log=$(mktemp)
trap 'rm -f "$log"' EXIT
# --no-fail-fast: one failing test binary must not hide the failures of the others.
set +e
# --include-ignored: the tests marked as needing root and containerd run here (this script
# installs both); a plain `cargo test` as a normal user runs the others.
cargo test --workspace --no-fail-fast -- --include-ignored --test-threads "${VOIYD_TEST_THREADS:-4}" 2>&1 | tee "$log"
test_rc=${PIPESTATUS[0]}
set -e
counts=$(awk '/^test result:/ { for (i = 1; i < NF; i++) { if ($(i+1) == "passed;") p += $i; if ($(i+1) == "failed;") f += $i } }
              END { printf "%d passed, %d failed", p, f }' "$log")
if [ "$test_rc" -ne 0 ]; then
    echo "== failing tests"
    # libtest prints "test NAME ... FAILED" per failing test; cargo then lists the
    # failing test binaries after "error: N targets failed:".
    grep -E '^test .* \.\.\. FAILED$' "$log" | sort -u || true
    awk '/^error: [0-9]+ targets? failed:/ { on = 1 } on && NF { print } on && !NF { on = 0 }' "$log" || true
    echo "voiyd: $counts"
    exit "$test_rc"
fi
echo "== fuzz (bounded)"
scripts/fuzz.sh "${VOIYD_FUZZ_SECONDS:-20}"
echo "== only the ring crypto provider"
if cargo tree --workspace -i aws-lc-rs >/dev/null 2>&1; then
    echo "aws-lc-rs is in the dependency tree: keep one rustls provider (ring)" >&2
    exit 1
fi
# One closing line for the whole run (cargo's last summary is only that of the last crate).
echo "voiyd: $counts"
