#!/bin/sh
# vfio_ap migrates with VFIO_MIGRATION_STOP_COPY only. A request for RUNNING_P2P (5) is
# refused with -EINVAL (right: no finding); then the accept-bad-state fault makes the driver
# take PRE_COPY (6) in one step and report success: one invalid-migration-arc.
C=/sys/kernel/debug/vfio_ap_model/ctl
U=a4c00000-0000-4000-8000-000000000001
set -e
echo "create $U" > $C
echo "open $U" > $C
echo "migrate $U STOP" > $C
echo "migrate $U RUNNING" > $C
if echo "migrate $U 5" > $C; then echo "RUNNING_P2P accepted without the fault"; exit 1; fi
echo "fault accept-bad-state" > $C
echo "migrate $U 6" > $C
echo "getstate $U" > $C; cat $C
echo "close $U" > $C
echo "remove $U" > $C
