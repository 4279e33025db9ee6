#!/bin/sh
# open_device calls vfio_ap_init_migration_data without mdevs_lock (its lockdep_assert_held
# is silent on a production kernel). One lock-not-held.
set -e
C=/sys/kernel/debug/vfio_ap_model/ctl
U=10c40000-0000-4000-8000-000000000001
echo "create $U" > $C
echo "fault init-unlocked" > $C
echo "open $U" > $C
echo "close $U" > $C
echo "remove $U" > $C
