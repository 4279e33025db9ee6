#!/bin/sh
# The device is closed while its STOP_COPY fd is still open (the driver frees mig_data and
# the configuration buffer and drops its own file reference at close); the fd pins the
# registration, so remove is refused until the fd is closed; the file's release then
# finds no mig_data and only drops the pin. No finding.
. /lib.sh
set -e
U=5e1c0000-0000-4000-8000-000000000021
ctl create $U
ctl open $U
migfd $U STOP_COPY
FD=$MIGFD
head -c 8 <&$FD > /dev/null
ctl close $U
if ctl remove $U 2>/dev/null; then echo "remove succeeded while the fd pins the device"; exit 1; fi
fdclose $FD
ctl remove $U
