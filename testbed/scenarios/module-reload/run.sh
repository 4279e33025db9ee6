#!/bin/sh
# The traced module unloaded and loaded again while the agent runs (issue 8 item 4). The
# first load shows a lock-not-held, then rmmod: the agent must print
# "aptrace: module vfio_ap unloaded; probes detached"; then insmod of the module file again:
# the agent must attach to the new load (a second "aptrace: attached" line), and the second
# load's leak must be in the same report. Expected: lock-not-held 1 (kept from the first
# load) and leak 1 (seen on the second). The module is loaded again in any case, for the
# scenarios after this one.
. /job.env
C=/sys/kernel/debug/vfio_ap_model/ctl
M=${MODULE:-vfio_ap}
L=$(ls /out/module-reload.*.agent.log 2>/dev/null | head -1)
fail() { echo "FAIL: $*"; grep -q "^$M " /proc/modules || insmod /model.ko; exit 1; }
waitfor() { # pattern count: up to 120 s in the agent's log
    [ -n "$L" ] || return 0
    i=0
    while [ "$(grep -c "$1" "$L")" -lt "$2" ]; do
        i=$((i+1)); [ $i -gt 1200 ] && return 1; sleep 0.1
    done
}
U=1eac0000-0000-4000-8000-000000000a01
echo "create $U" > $C || fail create
echo "fault init-unlocked" > $C
echo "open $U" > $C
echo "migrate $U STOP" > $C
echo "close $U" > $C
echo "remove $U" > $C
sleep 1
rmmod "$M" || fail "rmmod $M"
echo "rmmod done"
waitfor "^aptrace: module $M unloaded; probes detached" 1 || fail "no 'unloaded; probes detached' line"
echo "agent said: $(grep -m1 'unloaded; probes detached' "$L" 2>/dev/null)"
insmod /model.ko || fail "insmod again"
echo "insmod done"
waitfor "^aptrace: attached" 2 || fail "no second 'attached' line"
echo "agent said: $(grep '^aptrace: attached' "$L" 2>/dev/null | tail -1)"
V=1eac0000-0000-4000-8000-000000000a02
echo "create $V" > $C
echo "open $V" > $C
echo "migrate $V STOP" > $C
echo "fault skip-release" > $C
echo "close $V" > $C
echo "remove $V" > $C
