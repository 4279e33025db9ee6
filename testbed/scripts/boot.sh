#!/bin/bash
# boot.sh <amd64|s390x> <6.1|6.12> <initrd> <share-dir> <console-log> [timeout-s] [kill-marker]
# TCG only (never KVM). Returns QEMU's status; 124 on timeout. With a kill marker, QEMU is
# ended as soon as that line shows on the console.
set -uo pipefail
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
CACHE=${CACHE:-$ROOT/.cache/testbed}
A=$1 S=$2 INITRD=$3 SHARE=$4 LOG=$5 TMO=${6:-300} KILL=${7:-}
K=$CACHE/kernels/$A-$S
KVER=$(cat "$K/KVER")
if [ "$A" = amd64 ]; then
    CMD=(qemu-system-x86_64 -machine accel=tcg -cpu max -m 1G -smp 2 -nographic -no-reboot
         -kernel "$K/boot/vmlinuz-$KVER" -initrd "$INITRD" -append "console=ttyS0 panic=-1 loglevel=4"
         -fsdev "local,id=out,path=$SHARE,security_model=none" -device virtio-9p-pci,fsdev=out,mount_tag=out)
else
    CMD=(qemu-system-s390x -machine s390-ccw-virtio,accel=tcg -cpu max -m 1G -smp 2 -nographic -no-reboot
         -kernel "$K/boot/vmlinuz-$KVER" -initrd "$INITRD" -append "panic=-1 loglevel=4"
         -fsdev "local,id=out,path=$SHARE,security_model=none" -device virtio-9p-ccw,fsdev=out,mount_tag=out)
fi
: > "$LOG"
timeout "$TMO" nice "${CMD[@]}" < /dev/null > "$LOG" 2>&1 &
QPID=$!
if [ -n "$KILL" ]; then
    while kill -0 $QPID 2>/dev/null; do
        if grep -q "$KILL" "$LOG"; then sleep 1; kill $QPID 2>/dev/null; wait $QPID; exit 0; fi
        sleep 0.5
    done
fi
wait $QPID
