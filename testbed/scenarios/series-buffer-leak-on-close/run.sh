#!/bin/sh
# The device is closed while its STOP_COPY fd is open and the configuration buffer is
# filled (fault buffer-leak-on-close: the earlier revision dropped the files but kept the
# buffers); mig_data is freed with the buffer's pointer in it: one leak.
. /lib.sh
set -e
U=5e1c0000-0000-4000-8000-000000000061
ctl create $U
ctl open $U
migfd $U STOP_COPY
FD=$MIGFD
head -c 8 <&$FD > /dev/null
ctl fault buffer-leak-on-close
ctl close $U
fdclose $FD
ctl remove $U
