#!/bin/sh
# A live migration's two hosts, on one: two shells stand for the source's and the
# destination's QEMU, each with `-name guest=vm1` in its command line (both QEMUs of a
# migration carry the guest's name) and each opening its own mdev through the model's ctl
# (`open` takes the writer as the guest). Two more agents record them, each limited to one
# side with `--guest PID`. The source reads its STOP_COPY stream (72 bytes) and closes; the
# destination writes it into RESUMING in partial writes and runs again. Each agent's report
# must hold its side's session only, and `aptrace report SRC DST` must pair the source's
# save with the destination's restore by the guest's name, the bytes agreeing. The runner's
# agent sees both: no finding.
. /lib.sh
set -e
[ -x "${AGENT:-}" ] || { echo "no agent: nothing to check"; exit 0; }
S=2b050000-0000-4000-8000-000000000001
D=2b050000-0000-4000-8000-000000000002
G=/tmp/two-hosts
O=/out/series-two-hosts
rm -rf $G
mkdir -p $G
ctl create $S
ctl create $D
# Each stand-in waits for its go file, then acts; one after the other (ctl's result line is
# one for all writers). The source hands the stream over in $G/state. set -x: their logs.
# exec: the background job's pid ($!) is the stand-in's own, the one that opens the device.
standin() {
    exec sh -c '. /lib.sh; set -ex; G=$1; i=0
        while [ ! -e $G/go.$2 ]; do i=$((i+1)); [ $i -lt 1200 ]; sleep 0.1; done
        eval "$3"' "$@"
}
standin qemu-system-s390x $G src "ctl open $S; migfd $S STOP_COPY; F=\$MIGFD; cat <&\$F > $G/state; fdclose \$F; migrate $S STOP; ctl close $S" \
    -name guest=vm1 > $O.standin-src.log 2>&1 &
SP=$!
standin qemu-system-s390x $G dst "ctl open $D; migfd $D RESUMING; F=\$MIGFD; dd bs=32 < $G/state >&\$F 2>/dev/null; fdclose \$F; migrate $D STOP RUNNING; ctl close $D" \
    -name guest=vm1 > $O.standin-dst.log 2>&1 &
DP=$!
echo "QEMU stand-ins: source pid $SP, destination pid $DP (each with -name guest=vm1)"
# shellcheck disable=SC2086
"$AGENT" live --guest $SP --record $O.src.aptr --json $O.src.json ${AGENT_ARGS:-} > $O.src.log 2>&1 &
A1=$!
# shellcheck disable=SC2086
"$AGENT" live --guest $DP --record $O.dst.aptr --json $O.dst.json ${AGENT_ARGS:-} > $O.dst.log 2>&1 &
A2=$!
wait_line $A1 $O.src.log "^aptrace: attached" || { cat $O.src.log; exit 1; }
wait_line $A2 $O.dst.log "^aptrace: attached" || { cat $O.dst.log; exit 1; }
touch $G/go.src
rc=0
wait $SP || rc=$?
[ $rc = 0 ] || { echo "the source stand-in failed:"; cat $O.standin-src.log; kill $DP; kill -INT $A1 $A2; exit 1; }
touch $G/go.dst
wait $DP || rc=$?
[ $rc = 0 ] || { echo "the destination stand-in failed:"; cat $O.standin-dst.log; kill -INT $A1 $A2; exit 1; }
n=$(wc -c < $G/state)
[ "$n" -eq 72 ] || { echo "stop-copy stream is $n bytes, not 72"; exit 1; }
sleep 1
kill -INT $A1 $A2
r1=0; r2=0
wait $A1 || r1=$?
wait $A2 || r2=$?
echo "agents: source rc=$r1, destination rc=$r2"
[ $r1 = 0 ] && [ $r2 = 0 ] || { tail -5 $O.src.log $O.dst.log; exit 1; }
count() { grep -c "$2" "$1" || true; }
# Each limited agent's report: its own side's session, not the other's.
echo "source report: $(count $O.src.json '"direction": "save"') save, $(count $O.src.json '"direction": "restore"') restore"
echo "destination report: $(count $O.dst.json '"direction": "save"') save, $(count $O.dst.json '"direction": "restore"') restore"
[ "$(count $O.src.json '"direction": "save"')" = 1 ] && [ "$(count $O.src.json '"direction": "restore"')" = 0 ]
[ "$(count $O.dst.json '"direction": "restore"')" = 1 ] && [ "$(count $O.dst.json '"direction": "save"')" = 0 ]
grep -q "\"guest\": \"$SP\"" $O.src.json
# The two recordings paired end to end.
"$AGENT" report $O.src.aptr $O.dst.aptr > $O.pair.txt || { cat $O.pair.txt; exit 1; }
"$AGENT" report --format json $O.src.aptr $O.dst.aptr > $O.pair.json
sed -n '/^Migrations, end to end/,/^$/p' $O.pair.txt
[ "$(count $O.pair.json '"matched_by": "guest-name"')" = 1 ]
grep -q '"bytes_agree": true' $O.pair.json
grep -q '"guest": "vm1"' $O.pair.json
echo "paired: $(grep -c 'guest vm1 (paired by guest name)' $O.pair.txt) migration of guest vm1 across the two recordings"
