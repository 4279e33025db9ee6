#!/bin/sh
# A second agent on the same host while the runner's agent records (issue 8 item 4): it must
# either work (attach, see the same leak, stop cleanly on SIGINT with its own recording and
# report) or refuse with a clear message and exit 2. The runner's agent must see the leak
# too (expected: leak 1). Both agents' kprobes are listed while both run.
. /job.env
C=/sys/kernel/debug/vfio_ap_model/ctl
M=${MODULE:-vfio_ap}
O=/out/second-agent.second
nk() { awk -v m="$M" '$4 == m { n++ } END { print n + 0 }' /sys/kernel/debug/kprobes/list; }
[ -x "${AGENT:-}" ] || { echo "no agent: nothing to check"; exit 0; }
k1=$(nk)
: > $O.log
# shellcheck disable=SC2086
"$AGENT" live --record $O.aptr --json $O.json ${AGENT_ARGS:-} > $O.log 2>&1 &
P=$!
i=0
while ! grep -q "^aptrace: attached" $O.log && kill -0 $P 2>/dev/null && [ $i -lt 1200 ]; do
    sleep 0.1; i=$((i+1))
done
if ! kill -0 $P 2>/dev/null; then
    wait $P; rc=$?
    echo "second agent exited rc=$rc: $(cat $O.log)"
    [ $rc = 2 ] && grep -q "^aptrace: .*\(another\|already\|in use\)" $O.log && { echo "refused clearly"; exit 0; }
    exit 1
fi
k2=$(nk)
echo "kprobes on $M: first agent $k1, both $k2"
U=1eac0000-0000-4000-8000-000000000b01
echo "create $U" > $C
echo "open $U" > $C
echo "migrate $U STOP" > $C
echo "fault skip-release" > $C
echo "close $U" > $C
echo "remove $U" > $C
sleep 1
kill -INT $P; wait $P; rc=$?
n=$(grep -c '"kind": "leak"' $O.json)
echo "second agent rc=$rc leaks=$n kprobes after=$(nk)"
[ "$k2" -gt "$k1" ] && [ $rc = 1 ] && [ "$n" = 1 ] && [ -s $O.aptr ] && [ "$(nk)" = "$k1" ]
