#!/bin/sh
# The device is closed while its STOP_COPY fd is still open (the driver frees mig_data and
# the configuration buffer and drops its own file reference at close); the fd pins the
# registration, so remove cannot end while it is open (the real core waits in
# vfio_unregister_group_dev, the model core refuses with EBUSY); the fd is closed, its
# release finds no mig_data and only drops the pin, and the remove ends. No finding, in
# both modes (the buffer freed at close by the release helper, seen by its slot read).
. /lib.sh
set -e
U=5e1c0000-0000-4000-8000-000000000021
vc "create $U" "open $U" "state $U STOP_COPY" "read $U /dev/null 8" "close $U" \
    "remove-blocked $U" "fdclose $U" "remove $U"
