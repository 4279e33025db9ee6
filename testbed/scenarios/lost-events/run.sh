#!/bin/sh
# Lost events (issue 8 item 3). The agent runs with --ring-buffer-size 4096 (agent-args).
# It is stopped (SIGSTOP) during a burst of 40 clean mdev lives, so the 4 KiB ring fills
# whatever the speed of the emulated CPU, then continued: it must read the kernel-side loss
# counter, raise events-lost, and keep running (the runner then stops it with SIGINT and
# judges its recording and report). An mdev opened before the burst (its events are early in
# the ring) leaks after it: that leak's evidence straddles the loss, so it must be marked
# uncertain (the scenario's `uncertain` file). Without an agent the burst just runs.
. /lib.sh
set -e
A=$(pidof aptrace || true)
[ -n "$A" ] && kill -STOP $A
X=1eac0000-0000-4000-8000-000000001000
ctl create $X
ctl open $X
migrate $X STOP
i=10
while [ $i -lt 50 ]; do
    U=1eac0000-0000-4000-8000-0000000010$i
    ctl create $U
    ctl open $U
    migrate $U STOP RUNNING
    ctl close $U
    ctl remove $U
    i=$((i+1))
done
if [ -n "$A" ]; then
    kill -CONT $A
    sleep 3 # the agent reads the loss counters once a second
    kill -0 $A && echo "agent still running after the burst"
fi
ctl fault skip-release
ctl close $X
ctl remove $X
# and it still audits: one clean life after the loss
U=1eac0000-0000-4000-8000-000000001099
ctl create $U
ctl open $U
ctl close $U
ctl remove $U
