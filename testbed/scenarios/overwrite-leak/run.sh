#!/bin/sh
# open_device runs vfio_ap_init_migration_data twice under the lock: the second allocation
# overwrites matrix_mdev->mig_data while the first is outstanding. One overwrite-leak.
. /lib.sh
set -e
U=0ae10000-0000-4000-8000-000000000001
ctl create $U
ctl fault double-init
ctl open $U
ctl close $U
ctl remove $U
