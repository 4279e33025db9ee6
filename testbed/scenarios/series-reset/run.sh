#!/bin/sh
# VFIO_DEVICE_RESET in the middle of STOP_COPY: the reset drops the driver's reference on
# the migration file and frees the configuration buffer (vfio_ap_reset_migration_state),
# the device is RUNNING again and the old fd reads nothing more (-EINVAL). Closing the fd
# afterwards releases the file and its registration pin. No finding.
. /lib.sh
set -e
U=5e1c0000-0000-4000-8000-000000000011
ctl create $U
ctl open $U
migfd $U STOP_COPY
FD=$MIGFD
head -c 16 <&$FD > /tmp/series-part
[ "$(wc -c < /tmp/series-part)" -eq 16 ]
ctl reset $U
ctl getstate $U; st=$(cat $C); echo "$st"
case "$st" in *" 2 RUNNING "*) ;; *) echo "not RUNNING after reset"; exit 1;; esac
if cat <&$FD > /dev/null 2>&1; then echo "read after reset succeeded"; exit 1; fi
fdclose $FD
migrate $U STOP
migfd $U STOP_COPY
fdclose $MIGFD
migrate $U STOP RUNNING
ctl close $U
ctl remove $U
