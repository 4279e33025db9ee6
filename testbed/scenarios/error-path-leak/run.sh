#!/bin/sh
# set_kvm fails after vfio_ap_init_migration_data and open_device returns without releasing
# mig_data. One error-path-leak (release_dev frees it later, so no leak on top).
set -e
C=/sys/kernel/debug/vfio_ap_model/ctl
U=e4470000-0000-4000-8000-000000000001
echo "create $U" > $C
echo "fault open-fail-noclean" > $C
if echo "open $U" > $C; then echo "open unexpectedly succeeded"; exit 1; fi
echo "remove $U" > $C
