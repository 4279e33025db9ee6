#!/bin/sh
# lock-order-abba with the fixed probe (mdevs_lock only around its list, after
# registration): the same create, open, close and remove through this kernel's VFIO core
# show the order dev_set_lock before mdevs_lock only. No finding.
. /lib.sh
set -e
U=ab0c0000-0000-4000-8000-000000000001
vc "create $U" "open $U" "close $U" "remove $U" > /tmp/vc.out ||
    { cat /tmp/vc.out; exit 1; }
cat /tmp/vc.out
