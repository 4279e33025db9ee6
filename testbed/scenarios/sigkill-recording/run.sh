#!/bin/sh
# An agent SIGKILLed while recording (issue 8 item 4): its recording must read up to its
# last flush (chunks are flushed at least once a second): `aptrace report` on it finds the
# leak made before the kill and says complete:false, naming the missing end marker (a
# killed writer never writes it, even when the kill falls between two chunks); none of its
# kprobes stays (the runner's own agent keeps its probes). Expected for the runner's
# agent: leak 1.
. /lib.sh
M=$MOD
O=/out/sigkill-recording.killed
nk() { kprobes_on_module; }
[ -x "${AGENT:-}" ] || { echo "no agent: nothing to check"; exit 0; }
k1=$(nk)
: > $O.log
# shellcheck disable=SC2086
"$AGENT" live --all-allocations --record $O.aptr ${AGENT_ARGS:-} > $O.log 2>&1 &
P=$!
wait_line $P $O.log "^aptrace: attached" || { echo "FAIL: never attached: $(cat $O.log)"; exit 1; }
k2=$(nk)
U=1eac0000-0000-4000-8000-000000000c01
leaky_life $U
sleep 2.5 # past one flush
kill -9 $P; wait $P 2>/dev/null
sleep 1
k3=$(nk)
"$AGENT" report --format json $O.aptr > $O.report.json 2> $O.report.err
rc=$?
n=$(grep -c '"kind": "leak"' $O.report.json)
complete=$(grep -m1 -o '"complete": [a-z]*' $O.report.json)
echo "kprobes on $M: before $k1, with the killed agent $k2, after the kill $k3"
echo "report rc=$rc leaks=$n $complete size=$(wc -c < $O.aptr) $(head -c 300 $O.report.err)"
unfinished=$(grep -c "no end marker" $O.report.json)
echo "no-end-marker notes in the report: $unfinished"
[ "$k2" -gt "$k1" ] && [ "$k3" = "$k1" ] && [ $rc = 1 ] && [ "$n" = 1 ] &&
    [ "$complete" = '"complete": false' ] && [ "$unfinished" -ge 1 ]
