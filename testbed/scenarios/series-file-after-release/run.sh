#!/bin/sh
# The STOP_COPY file does not pin the device (fault file-no-pin, the v4 bug): close and
# remove succeed while the fd is open, the mdev's life ends (release_dev), and the fd is
# then read (vfio_ap_stop_copy_read on the released mdev: -ENODEV here, a use after free
# in the real driver, whose matrix_mdev is freed) and closed (its release on it too).
. /lib.sh
set -e
U=5e1c0000-0000-4000-8000-000000000041
ctl create $U
ctl open $U
ctl fault file-no-pin
migfd $U STOP_COPY
FD=$MIGFD
ctl close $U
ctl remove $U
if cat <&$FD > /dev/null 2>&1; then echo "read on the released mdev succeeded"; exit 1; fi
fdclose $FD
