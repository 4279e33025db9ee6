#!/bin/bash
# mkinitramfs.sh <amd64|s390x> <6.1|6.12> <job-dir> <out.cpio>
# The base (busybox, the 9p modules, init, the model module) is rebuilt each time (cheap);
# <job-dir> is copied to / (it must hold job.sh; it may hold scenarios/, aptrace, ...).
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
CACHE=${CACHE:-$ROOT/.cache/testbed}
A=$1 S=$2 JOB=$3 OUT=$4
K=$CACHE/kernels/$A-$S
KVER=$(cat "$K/KVER")
ST=$(mktemp -d)
trap 'rm -rf "$ST"' EXIT
mkdir -p "$ST"/{bin,sbin,dev,proc,sys,tmp,lib/modules,out}
BB=$(ls "$CACHE"/debs/busybox-$A/*.deb 2>/dev/null | head -1 || true)
if [ -z "$BB" ]; then
    mkdir -p "$CACHE/debs/busybox-$A"
    (cd "$CACHE/debs/busybox-$A" && apt-get -o Dir::Etc::SourceList="$CACHE/apt/$A/sources.list" -o Dir::Etc::SourceParts=- \
        -o Dir::State::Lists="$CACHE/apt/$A/lists" -o Dir::Cache="$CACHE/apt/$A/cache" \
        -o APT::Architecture=$A -o APT::Architectures=$A download busybox-static >/dev/null 2>&1)
    BB=$(ls "$CACHE"/debs/busybox-$A/*.deb | head -1)
fi
dpkg --fsys-tarfile "$BB" | tar -x -O ./bin/busybox > "$ST/bin/busybox"
chmod 755 "$ST/bin/busybox"
mknod -m 600 "$ST/dev/console" c 5 1
mknod -m 666 "$ST/dev/null" c 1 3
# 9p stack and its dependencies, in load order
MODDIR=$K/lib/modules/$KVER/kernel
declare -A SEEN=()
ORDER=()
add_mod() {
    local name=$1 f dep
    [ -n "${SEEN[$name]:-}" ] && return
    SEEN[$name]=1
    f=$(find "$MODDIR" -name "$name.ko" -o -name "$name.ko.xz" | head -1)
    [ -n "$f" ] || return 0     # built in
    for dep in $(modinfo -F depends "$f" | tr ',' ' '); do add_mod "$dep"; done
    case "$f" in
        *.xz) xz -dc "$f" > "$ST/lib/modules/$name.ko" ;;
        *) cp "$f" "$ST/lib/modules/$name.ko" ;;
    esac
    ORDER+=("$name.ko")
}
for m in virtio_pci 9pnet_virtio 9p; do add_mod "$m"; done
printf '%s\n' "${ORDER[@]}" > "$ST/lib/modules/load.order"
cp "$ROOT/testbed/guest/init" "$ST/init"; chmod 755 "$ST/init"
cp "$CACHE/build/$A-$S/vfio_ap.ko" "$ST/model.ko"
cp -a "$JOB"/. "$ST"/
(cd "$ST" && find . | cpio -o -H newc --quiet) > "$OUT"
