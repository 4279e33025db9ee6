#!/bin/sh
# Partial writes into the RESUMING file (each `write` step writes the state file from its
# start in writes of CHUNK bytes, COUNT of them), two reviews' bugs in two sessions:
# 1. fault partial-resume-double-free: a first write of 32 bytes stores the buffer, a
#    second write past the configuration's end fails (-EIO) and frees the stored buffer,
#    left in its slot; VFIO_DEVICE_RESET's vfio_ap_release_mig_files frees it again through
#    vfio_ap_release_resuming_file (the model stops short of the second kvfree itself: the
#    hardened allocator would oops).
# 2. fault partial-resume-leak: the first, partial write's kvzalloc'd buffer is never
#    stored; the next write finds none (-EFAULT); the buffer is leaked.
# All-allocations mode only: the default mode tracks the buffers through the profile's reads
# (allocate_ap_config's return, the release helpers' entry) and cannot see the write's own
# kvfree, so to it the helper's free is the first: it would find the leak but not the
# double free.
. /lib.sh
set -e
S=5e1c0000-0000-4000-8000-000000000051
D=5e1c0000-0000-4000-8000-000000000052
vc "create $S" "create $D" "open $S" "open $D" \
    "state $S STOP_COPY" "read $S /tmp/series-state" "fdclose $S" "state $S STOP RUNNING" \
    "state $D RESUMING" "write $D /tmp/series-state 32 1" "fault partial-resume-double-free" \
    "! write $D /tmp/series-state 48 1" "fdclose $D" "reset $D" \
    "state $D STOP" "state $D RESUMING" "fault partial-resume-leak" \
    "write $D /tmp/series-state 32 1" "! write $D /tmp/series-state 40 1" "fdclose $D" \
    "state $D STOP RUNNING" "close $S" "close $D" "remove $S" "remove $D"
