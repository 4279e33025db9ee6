#!/bin/sh
# close_device and release_dev both skip vfio_ap_release_migration_data: mig_data is still
# outstanding when the mdev's life ends (release_dev returns). One leak.
set -e
C=/sys/kernel/debug/vfio_ap_model/ctl
U=1eac0000-0000-4000-8000-000000000001
echo "create $U" > $C
echo "open $U" > $C
echo "migrate $U STOP" > $C
echo "migrate $U RUNNING" > $C
echo "fault skip-release" > $C
echo "close $U" > $C
echo "remove $U" > $C
