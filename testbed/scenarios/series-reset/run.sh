#!/bin/sh
# VFIO_DEVICE_RESET in the middle of STOP_COPY: the reset drops the driver's reference on
# the migration file and frees the configuration buffer (vfio_ap_reset_migration_state),
# the device is RUNNING again and the old fd reads nothing more (-EINVAL). Closing the fd
# afterwards releases the file and its registration pin; a second session follows. No
# finding, in both modes (the default mode tracks the buffer from vfio_ap_get_config's
# return to vfio_ap_release_stop_copy_file, which vfio_ap_release_mig_files calls).
. /lib.sh
set -e
U=5e1c0000-0000-4000-8000-000000000011
vc "create $U" "open $U" "state $U STOP_COPY" "read $U /tmp/series-part 16" "reset $U" \
    "getstate $U" "! read $U /dev/null" "fdclose $U" "state $U STOP" "state $U STOP_COPY" \
    "fdclose $U" "state $U STOP RUNNING" "close $U" "remove $U" > /tmp/vc.out ||
    { cat /tmp/vc.out; exit 1; }
cat /tmp/vc.out
grep -q "^read $U 16 bytes$" /tmp/vc.out
case "$(grep "^state $U " /tmp/vc.out)" in *" 2 RUNNING "*) ;; *) echo "not RUNNING after reset"; exit 1;; esac
