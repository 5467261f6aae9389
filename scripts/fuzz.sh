#!/usr/bin/env bash
# Fuzzes everything the server and nodes decode (and manifests) for a bounded time on
# stable Rust: `scripts/fuzz.sh SECONDS` (default 60). Crashing inputs are saved under
# fuzz/crashes/ and make the script fail. See docs/fuzzing.md.
set -euo pipefail
cd "$(dirname "$0")/.."
seconds="${1:-60}"
cargo build --release -p voiyd-fuzz
exec target/release/voiyd-fuzz "$seconds" --crashes fuzz/crashes
