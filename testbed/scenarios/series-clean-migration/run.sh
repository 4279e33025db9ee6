#!/bin/sh
# The series' whole migration, through this kernel's VFIO core (lib.sh's vc: the kernel's
# own where it has one): the source mdev's STOP_COPY file read to its end (the guest's AP
# configuration: 40 bytes of header and 2 queues of 16), the bytes written in three
# partial writes into a second mdev's RESUMING file, both fds closed, both devices back
# to RUNNING, closed and removed. The destination takes the source's adapter. No finding.
. /lib.sh
set -e
S=5e1c0000-0000-4000-8000-000000000001
D=5e1c0000-0000-4000-8000-000000000002
vc "create $S" "create $D" "open $S" "open $D" "getstate $S" \
    "state $S STOP_COPY" "read $S /tmp/series-state" "fdclose $S" "state $S STOP" \
    "state $D RESUMING" "write $D /tmp/series-state 32" "fdclose $D" "state $D STOP RUNNING" \
    "getstate $D" "close $S" "close $D" "remove $S" "remove $D" > /tmp/vc.out ||
    { cat /tmp/vc.out; exit 1; }
cat /tmp/vc.out
grep -q "^read $S 72 bytes$" /tmp/vc.out || { echo "stop-copy stream is not 72 bytes"; exit 1; }
grep -q "^wrote $D 72 bytes in 3 writes$" /tmp/vc.out || { echo "not 3 partial writes"; exit 1; }
SRC=$(grep "^state $S " /tmp/vc.out); DST=$(grep "^state $D " /tmp/vc.out)
[ "${SRC#* adapter=}" = "${DST#* adapter=}" ] || { echo "configuration not restored"; exit 1; }
case "$DST" in *" 2 RUNNING "*) ;; *) echo "destination not RUNNING"; exit 1;; esac
