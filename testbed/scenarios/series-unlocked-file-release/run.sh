#!/bin/sh
# The STOP_COPY file is opened as an earlier revision did (fault unlocked-file-release: no
# reference of the driver's own, so closing the fd releases it at once) and its release
# looks at mig_data and calls vfio_ap_release_stop_copy_file without mdevs_lock. The
# helper asserts nothing; the profile declares the contract its callers keep: one
# lock-not-held.
. /lib.sh
set -e
U=5e1c0000-0000-4000-8000-000000000031
vc "create $U" "open $U" "fault unlocked-file-release" "state $U STOP_COPY" \
    "read $U /dev/null" "fdclose $U" "state $U STOP RUNNING" "close $U" "remove $U"
