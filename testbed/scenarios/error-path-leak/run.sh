#!/bin/sh
# set_kvm fails after vfio_ap_init_migration_data and open_device returns without releasing
# mig_data. One error-path-leak (release_dev frees it later, so no leak on top).
. /lib.sh
set -e
U=e4470000-0000-4000-8000-000000000001
ctl create $U
ctl fault open-fail-noclean
if ctl open $U; then echo "open unexpectedly succeeded"; exit 1; fi
ctl remove $U
