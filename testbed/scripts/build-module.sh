#!/bin/bash
# Build the model module for one unpacked kernel: build-module.sh <amd64|s390x> <6.1|6.12> [SRC]
# Output: $CACHE/build/<arch>-<series>/vfio_ap.ko (+ the build tree, with debug info)
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
CACHE=${CACHE:-$ROOT/.cache/testbed}
A=$1 S=$2 SRC=${3:-$ROOT/testbed/kmod}
K=$CACHE/kernels/$A-$S
KVER=$(cat "$K/KVER")
KDIR=$K/usr/src/linux-headers-$KVER
OUT=$CACHE/build/$A-$S
rm -rf "$OUT"; mkdir -p "$OUT"
cp -a "$SRC"/. "$OUT"/
EXTRA=()
[ "$A" = s390x ] && EXTRA=(ARCH=s390 CROSS_COMPILE=s390x-linux-gnu-)
nice make -s -C "$KDIR" M="$OUT" "${EXTRA[@]}" modules
ls -la "$OUT"/*.ko
