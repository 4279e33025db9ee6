#!/bin/sh
# open_device runs vfio_ap_init_migration_data twice under the lock: the second allocation
# overwrites matrix_mdev->mig_data while the first is outstanding. One overwrite-leak.
set -e
C=/sys/kernel/debug/vfio_ap_model/ctl
U=0ae10000-0000-4000-8000-000000000001
echo "create $U" > $C
echo "fault double-init" > $C
echo "open $U" > $C
echo "close $U" > $C
echo "remove $U" > $C
