#!/bin/sh
# The device is closed while its STOP_COPY fd is open and the configuration buffer is
# filled (fault buffer-leak-on-close: the earlier revision dropped the files but kept the
# buffers); mig_data is freed with the buffer's pointer in it: one leak, found with
# --all-allocations (the kmalloc from vfio_ap_get_config's text, still outstanding when the
# mdev's life ends). Without it, the buffer is not tracked yet (the pointer path
# mig_data -> stop_copy_mig_file.ap_config is to come), so the default mode is not run.
. /lib.sh
set -e
U=5e1c0000-0000-4000-8000-000000000061
vc "create $U" "open $U" "state $U STOP_COPY" "read $U /dev/null 8" \
    "fault buffer-leak-on-close" "close $U" "fdclose $U" "remove $U"
