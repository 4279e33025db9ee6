#!/bin/sh
# A whole, correct life: create, open, a migration RUNNING->STOP->STOP_COPY->STOP->RUNNING,
# a resume through RESUMING, close, remove; then a second incarnation in the same slot and
# an open that fails with the proper cleanup. No finding.
set -e
C=/sys/kernel/debug/vfio_ap_model/ctl
U=c1ea0000-0000-4000-8000-000000000001
echo "create $U" > $C
echo "open $U" > $C
for s in STOP STOP_COPY STOP RUNNING RESUMING RUNNING; do echo "migrate $U $s" > $C; done
echo "getstate $U" > $C; cat $C
echo "close $U" > $C
echo "remove $U" > $C
U2=c1ea0000-0000-4000-8000-000000000002
echo "create $U2" > $C
echo "open $U2" > $C
echo "migrate $U2 STOP_COPY" > $C
echo "migrate $U2 RUNNING" > $C
echo "close $U2" > $C
echo "fault open-fail" > $C
if echo "open $U2" > $C; then echo "open unexpectedly succeeded"; exit 1; fi
echo "remove $U2" > $C
