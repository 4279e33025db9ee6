#!/bin/sh
# The device is closed while its STOP_COPY fd is open and the configuration buffer is
# filled (fault buffer-leak-on-close: the earlier revision dropped the files but kept the
# buffers); mig_data is freed with the buffer's pointer in it: one buffer-held-at-close
# when close returns, in both modes: with --all-allocations from the kmalloc in
# vfio_ap_get_config's text, in the default mode from vfio_ap_get_config's read of the
# stop-copy slot at its return (the release helpers, which the fault skips, would end it).
. /lib.sh
set -e
U=5e1c0000-0000-4000-8000-000000000061
vc "create $U" "open $U" "state $U STOP_COPY" "read $U /dev/null 8" \
    "fault buffer-leak-on-close" "close $U" "fdclose $U" "remove $U"
