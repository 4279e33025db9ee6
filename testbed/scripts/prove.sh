#!/bin/bash
# prove.sh [arch-series ...]: the phase-1 proof (testbed/guest/proof.sh) on each kernel.
# Results: $CACHE/work/<arch>-<series>/{console.log,share/}
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
CACHE=${CACHE:-$ROOT/.cache/testbed}
for k in ${*:-amd64-6.1 amd64-6.12 s390x-6.1 s390x-6.12}; do
    A=${k%-*} S=${k#*-}
    W=$CACHE/work/$k
    rm -rf "$W"; mkdir -p "$W/job" "$W/share"
    [ -f "$CACHE/build/$k/vfio_ap.ko" ] || "$ROOT/testbed/scripts/build-module.sh" "$A" "$S" >/dev/null
    cp "$ROOT/testbed/guest/proof.sh" "$W/job/job.sh"
    OFF=$(pahole -C ap_matrix_dev "$CACHE/build/$k/vfio_ap.ko" | awk '/ mdevs_lock;/{print $(NF-2)}')
    echo "MDEVS_LOCK_OFF=$OFF" > "$W/job/job.env"
    "$ROOT/testbed/scripts/mkinitramfs.sh" "$A" "$S" "$W/job" "$W/initrd.cpio"
    start=$(date +%s)
    "$ROOT/testbed/scripts/boot.sh" "$A" "$S" "$W/initrd.cpio" "$W/share" "$W/console.log" 300 || echo "qemu rc=$?"
    echo "== $k ($(( $(date +%s) - start ))s) hello: $(cat "$W/share/guest-hello.txt" 2>/dev/null)"
    grep -a 'APTRACE-TESTBED' "$W/console.log" | grep -avE 'owner-(free|self|other)' > "$W/markers.txt" || true
done
