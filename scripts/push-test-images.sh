#!/usr/bin/env bash
# Push the test image archives built by build-test-images.py to a local registry.
# Usage: scripts/push-test-images.sh PORT OUTDIR [USER PASSWORD]
# Pushes OUTDIR/<name>.tar as 127.0.0.1:PORT/voiyd/<name>:test (an index with all its
# platforms), and busybox also as busybox-schema2:test and busybox-zstd:test. Re-pushing is
# harmless.
set -euo pipefail

if [[ $# -ne 2 && $# -ne 4 ]]; then
    echo "usage: $0 PORT OUTDIR [USER PASSWORD]" >&2
    exit 2
fi
port=$1
outdir=$2
creds=()
if [[ $# -eq 4 ]]; then
    creds=(--dest-creds "$3:$4")
fi
command -v skopeo >/dev/null || { echo "skopeo not found; apt-get install skopeo" >&2; exit 1; }

shopt -s nullglob
archives=("$outdir"/*.tar)
if [[ ${#archives[@]} -eq 0 ]]; then
    echo "no image archives in $outdir; run scripts/build-test-images.py $outdir first" >&2
    exit 1
fi
for archive in "${archives[@]}"; do
    name=$(basename "$archive" .tar)
    dest="docker://127.0.0.1:$port/voiyd/$name:test"
    echo "pushing $archive to $dest" >&2
    # --all: an index goes with every platform's manifest.
    skopeo --insecure-policy copy --all --quiet --dest-tls-verify=false "${creds[@]}" \
        "oci-archive:$archive" "$dest" >&2
done
# busybox again as registries also serve it: a Docker schema-2 manifest (gzip layers), and
# OCI with zstd-compressed layers.
if [[ -f "$outdir/busybox.tar" ]]; then
    skopeo --insecure-policy copy --quiet --dest-tls-verify=false "${creds[@]}" --format v2s2 \
        "oci-archive:$outdir/busybox.tar" "docker://127.0.0.1:$port/voiyd/busybox-schema2:test" >&2
    skopeo --insecure-policy copy --quiet --dest-tls-verify=false "${creds[@]}" --format oci \
        --dest-compress-format zstd \
        "oci-archive:$outdir/busybox.tar" "docker://127.0.0.1:$port/voiyd/busybox-zstd:test" >&2
fi
