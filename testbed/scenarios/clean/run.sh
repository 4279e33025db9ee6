#!/bin/sh
# A whole, correct life: create, open, a migration RUNNING->STOP->STOP_COPY->STOP->RUNNING,
# a resume through RESUMING, close, remove; then a second incarnation in the same slot and
# an open that fails with the proper cleanup. No finding.
. /lib.sh
set -e
U=c1ea0000-0000-4000-8000-000000000001
ctl create $U
ctl open $U
migrate $U STOP STOP_COPY STOP RUNNING RESUMING RUNNING
ctl getstate $U; cat $C
ctl close $U
ctl remove $U
U2=c1ea0000-0000-4000-8000-000000000002
ctl create $U2
ctl open $U2
migrate $U2 STOP_COPY RUNNING
ctl close $U2
ctl fault open-fail
if ctl open $U2; then echo "open unexpectedly succeeded"; exit 1; fi
ctl remove $U2
