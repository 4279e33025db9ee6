#!/bin/sh
# The series' AB-BA (issue 15), through this kernel's VFIO core: the probe holds mdevs_lock
# across its registration (fault probe-holds-lock), which takes the core's dev_set->lock
# (mdevs_lock before dev_set_lock); then the client opens and closes the device, and the
# core calls open_device and close_device under dev_set->lock, which take mdevs_lock
# (dev_set_lock before mdevs_lock). The two never overlap: no deadlock, one lock-order.
. /lib.sh
set -e
U=ab0a0000-0000-4000-8000-000000000001
vc "fault probe-holds-lock" "create $U" "open $U" "close $U" "remove $U" > /tmp/vc.out ||
    { cat /tmp/vc.out; exit 1; }
cat /tmp/vc.out
