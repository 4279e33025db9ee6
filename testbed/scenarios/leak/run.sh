#!/bin/sh
# close_device and release_dev both skip vfio_ap_release_migration_data: mig_data is still
# outstanding when the mdev's life ends (release_dev returns). One leak.
. /lib.sh
set -e
U=1eac0000-0000-4000-8000-000000000001
ctl create $U
ctl open $U
migrate $U STOP RUNNING
ctl fault skip-release
ctl close $U
ctl remove $U
