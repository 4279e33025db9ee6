#!/bin/sh
# The STOP_COPY file does not pin the device (fault file-no-pin, the v4 bug): close and
# remove succeed while the fd is open, the mdev's life ends (release_dev), and the fd is
# then read (vfio_ap_stop_copy_read on the released mdev: -ENODEV here, a use after free
# in the real driver, whose matrix_mdev is freed) and closed (its release on it too).
# Model core only (file `core`).
. /lib.sh
set -e
U=5e1c0000-0000-4000-8000-000000000041
vc "create $U" "open $U" "fault file-no-pin" "state $U STOP_COPY" "close $U" "remove $U" \
    "! read $U /dev/null" "fdclose $U"
