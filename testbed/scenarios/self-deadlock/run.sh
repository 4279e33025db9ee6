#!/bin/sh
# Registration fails: probe's error path puts the device while it holds mdevs_lock, and
# .release (vfio_ap_mdev_release_dev) blocks on that lock for ever. The probe runs in a
# kernel thread ("vfio_ap_probe"), so this script returns; the thread stays hung.
. /lib.sh
U=dead0000-0000-4000-8000-000000000001
ctl fault register-fail
ctl create $U
cat $C
pid=$(sed -n 's/.*kthread pid=\([0-9]*\).*/\1/p' $C)
i=0
while [ $i -lt 100 ]; do
    ctl lockinfo
    if grep -q 'state=other-task' $C && grep -q '^State:.*D' /proc/$pid/status 2>/dev/null; then
        echo "hung: pid=$pid $(grep State: /proc/$pid/status) $(cat $C)"
        exit 0
    fi
    sleep 0.1; i=$((i+1))
done
echo "not hung?"; cat $C; exit 1
