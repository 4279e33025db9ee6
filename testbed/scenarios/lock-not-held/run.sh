#!/bin/sh
# open_device calls vfio_ap_init_migration_data without mdevs_lock (its lockdep_assert_held
# is silent on a production kernel). One lock-not-held.
. /lib.sh
set -e
U=10c40000-0000-4000-8000-000000000001
ctl create $U
ctl fault init-unlocked
ctl open $U
ctl close $U
ctl remove $U
