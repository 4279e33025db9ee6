#!/bin/sh
# vfio_ap migrates with VFIO_MIGRATION_STOP_COPY only. A request for RUNNING_P2P (5) is
# refused with -EINVAL (right: no finding); then the accept-bad-state fault makes the driver
# take PRE_COPY (6) in one step and report success: one invalid-migration-arc.
. /lib.sh
U=a4c00000-0000-4000-8000-000000000001
set -e
ctl create $U
ctl open $U
migrate $U STOP RUNNING
if migrate $U 5; then echo "RUNNING_P2P accepted without the fault"; exit 1; fi
ctl fault accept-bad-state
migrate $U 6
ctl getstate $U; cat $C
ctl close $U
ctl remove $U
