#!/bin/sh
# Missed returns (issue 3: "the kretprobe miss counts, surfaced as lost events"). While a
# helper thread holds mdevs_lock, 48 threads call vfio_ap_get_state and all sleep inside it:
# more calls in flight than the kretprobe has instances (maxactive: max(10, 2 * CPUs)), so
# the kernel drops some returns. The agent must report them as events-lost: from the
# kernel's own `missed` in bpf link info on 6.7+, from the probes' count (each thread calls
# twice: the second entry finds the first still pending) before. One clean mdev life after
# shows the agent still audits.
. /lib.sh
set -e
X=1eac0000-0000-4000-8000-000000002000
ctl create $X
ctl open $X
migrate $X STOP
ctl hold
ctl crowd $X 48
cat $C
sleep 2
ctl unhold
i=0
while :; do
    ctl crowdleft
    left=$(sed -n 's/^crowdleft \([0-9-]*\).*/\1/p' $C)
    [ "$left" = 0 ] && break
    i=$((i+1)); [ $i -gt 600 ] && { echo "FAIL: crowd still running ($left)"; exit 1; }
    sleep 0.1
done
echo "crowd done"
# The agent reads the loss counters once a second; its finding must name the cause.
L=$(ls /out/kretprobe-miss.*.agent.log 2>/dev/null | head -1)
if [ -n "$L" ]; then
    i=0
    until grep -q "kretprobes missed returns" "$L"; do
        i=$((i+1)); [ $i -gt 100 ] && { echo "FAIL: no 'kretprobes missed returns' finding"; exit 1; }
        sleep 0.1
    done
    echo "agent said: $(grep -m1 'kretprobes missed returns' "$L")"
fi
migrate $X RUNNING
ctl close $X
ctl remove $X
