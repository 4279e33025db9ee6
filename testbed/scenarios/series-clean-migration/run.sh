#!/bin/sh
# The series' whole migration: the source mdev's STOP_COPY file read to its end (the
# guest's AP configuration: 40 bytes of header and 2 queues of 16), the bytes written in
# three partial writes into a second mdev's RESUMING file, both fds closed, both devices
# back to RUNNING, closed and removed. The destination takes the source's adapter.
# No finding.
. /lib.sh
set -e
S=5e1c0000-0000-4000-8000-000000000001
D=5e1c0000-0000-4000-8000-000000000002
ctl create $S
ctl create $D
ctl open $S
ctl open $D
ctl getstate $S; SRC=$(cat $C)
migfd $S STOP_COPY
SFD=$MIGFD
cat <&$SFD > /tmp/series-state
fdclose $SFD
migrate $S STOP
n=$(wc -c < /tmp/series-state)
[ "$n" -eq 72 ] || { echo "stop-copy stream is $n bytes, not 72"; exit 1; }
migfd $D RESUMING
DFD=$MIGFD
dd bs=32 < /tmp/series-state >&$DFD 2>/dev/null
fdclose $DFD
migrate $D STOP RUNNING
ctl getstate $D; DST=$(cat $C)
echo "source: $SRC"; echo "destination: $DST"
[ "${SRC#* adapter=}" = "${DST#* adapter=}" ] || { echo "configuration not restored"; exit 1; }
case "$DST" in *" 2 RUNNING "*) ;; *) echo "destination not RUNNING"; exit 1;; esac
ctl close $S
ctl close $D
ctl remove $S
ctl remove $D
