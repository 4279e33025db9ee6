#!/bin/sh
# Partial writes into the RESUMING file (dd: one write() each, and a failed write is its
# exit status), two reviews' bugs in two sessions:
# 1. fault partial-resume-double-free: a first write of 32 bytes stores the buffer, a
#    second write past the configuration's end fails (-EIO) and frees the stored buffer,
#    left in its slot; VFIO_DEVICE_RESET's vfio_ap_release_mig_files frees it again (the
#    model stops short of the second kvfree itself: the hardened allocator would oops).
# 2. fault partial-resume-leak: the first, partial write's kvzalloc'd buffer is never
#    stored; the next write finds none (-EFAULT); the buffer is leaked.
. /lib.sh
set -e
S=5e1c0000-0000-4000-8000-000000000051
D=5e1c0000-0000-4000-8000-000000000052
ctl create $S
ctl create $D
ctl open $S
ctl open $D
migfd $S STOP_COPY
SFD=$MIGFD
cat <&$SFD > /tmp/series-state
fdclose $SFD
migrate $S STOP RUNNING
migfd $D RESUMING
FD=$MIGFD
dd bs=32 count=1 < /tmp/series-state >&$FD 2>/dev/null
ctl fault partial-resume-double-free
if dd bs=48 count=1 < /tmp/series-state >&$FD 2>/dev/null; then echo "write past the end succeeded"; exit 1; fi
fdclose $FD
ctl reset $D
migrate $D STOP
migfd $D RESUMING
FD=$MIGFD
ctl fault partial-resume-leak
dd bs=32 count=1 < /tmp/series-state >&$FD 2>/dev/null
if dd bs=40 count=1 < /tmp/series-state >&$FD 2>/dev/null; then echo "write after the lost buffer succeeded"; exit 1; fi
fdclose $FD
migrate $D STOP RUNNING
ctl close $S
ctl close $D
ctl remove $S
ctl remove $D
