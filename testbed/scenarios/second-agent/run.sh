#!/bin/sh
# A second agent on the same host while the runner's agent records (issue 8 item 4): it must
# either work (attach, see the same leak, stop cleanly on SIGINT with its own recording and
# report) or refuse with a clear message and exit 2. The runner's agent must see the leak
# too (expected: leak 1). Both agents' kprobes are listed while both run.
. /lib.sh
M=$MOD
O=/out/second-agent.second
nk() { kprobes_on_module; }
[ -x "${AGENT:-}" ] || { echo "no agent: nothing to check"; exit 0; }
k1=$(nk)
: > $O.log
# shellcheck disable=SC2086
"$AGENT" live --record $O.aptr --json $O.json ${AGENT_ARGS:-} > $O.log 2>&1 &
P=$!
wait_line $P $O.log "^aptrace: attached"
if ! kill -0 $P 2>/dev/null; then
    wait $P; rc=$?
    echo "second agent exited rc=$rc: $(cat $O.log)"
    [ $rc = 2 ] && grep -q "^aptrace: .*\(another\|already\|in use\)" $O.log && { echo "refused clearly"; exit 0; }
    exit 1
fi
k2=$(nk)
echo "kprobes on $M: first agent $k1, both $k2"
U=1eac0000-0000-4000-8000-000000000b01
leaky_life $U
sleep 1
kill -INT $P; wait $P; rc=$?
n=$(grep -c '"kind": "leak"' $O.json)
echo "second agent rc=$rc leaks=$n kprobes after=$(nk)"
[ "$k2" -gt "$k1" ] && [ $rc = 1 ] && [ "$n" = 1 ] && [ -s $O.aptr ] && [ "$(nk)" = "$k1" ]
