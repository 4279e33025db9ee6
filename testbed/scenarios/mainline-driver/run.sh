#!/bin/sh
# vfio_ap without the live-migration series (mainline, as enterprise distributions ship it):
# the runner loaded /model-mainline.ko (file mainline-module) before the agent started. The
# agent, with the built-in profile, must trace it with what it has: the lifecycle rows
# attached with lock checks on (the host also wants "(0 missing, lock checks on)"), and the
# series' functions absent: counted apart on the attached line and named in one notice, not
# reported one by one as missing functions. Then the mdev lifecycle through this kernel's
# VFIO core (the model core on s390x 6.1): create, open, a migration the core refuses (no
# mig_ops), VFIO_DEVICE_RESET, close, remove; and a second device's life through ctl (the
# model core's slots). The report read from the recording so far must hold both devices;
# `expected` is empty: no finding.
. /lib.sh
L=${AGENT_LOG:-}
fail() { echo "FAIL: $*"; exit 1; }
in_module() { awk -v f="$1" -v m="[$MOD]" '$3 == f && $4 == m { n++ } END { exit n ? 0 : 1 }' /proc/kallsyms; }
in_module vfio_ap_mdev_open_device || fail "vfio_ap_mdev_open_device not in module $MOD"
in_module vfio_ap_init_migration_data && fail "the loaded $MOD has the series: not the mainline build"
echo "module $MOD without the series: vfio_ap_init_migration_data not in /proc/kallsyms"
if [ -n "$L" ]; then
    att=$(grep -m1 '^aptrace: attached' "$L")
    echo "agent said: $att"
    n=$(echo "$att" | sed -n 's/.*(0 missing, lock checks on); \([0-9]*\) absent of the live-migration series.*/\1/p')
    [ -n "$n" ] && [ "$n" -gt 0 ] || fail "the attached line does not count the series' functions apart"
    notice=$(grep -m1 "^aptrace: notice: module $MOD has no live-migration series" "$L") ||
        fail "no notice naming the series' absent functions"
    echo "agent said: $notice"
    echo "$notice" | grep -q "its $n optional functions are absent" || fail "the notice does not count $n functions"
    for f in vfio_ap_init_migration_data vfio_ap_release_migration_data vfio_ap_set_state \
        vfio_ap_get_state vfio_ap_open_file_stream vfio_ap_stop_copy_read vfio_ap_release_mig_files \
        vfio_ap_get_config allocate_ap_config vfio_ap_reset_migration_state; do
        echo "$notice," | grep -q "[:,] $f," || fail "the notice does not name $f"
    done
    # absent functions of a driver without the series are not errors, nor one line each
    grep -E '^aptrace: [a-z_]+ (missing|failed): ' "$L" | grep -v -e 'module vfio is not loaded' -e 'not in module vfio' &&
        fail "a function reported on its own line as missing or failed"
fi
U=a1a10000-0000-4000-8000-000000000001
vc "create $U" "open $U" "! state $U STOP_COPY" "! getstate $U" "reset $U" "close $U" "remove $U" \
    > /tmp/vc.out || { cat /tmp/vc.out; fail "the lifecycle through the VFIO client"; }
cat /tmp/vc.out
V=a1a10000-0000-4000-8000-000000000002
ctl create $V || fail "create $V"
ctl open $V || fail "open $V"
ctl migrate $V STOP_COPY && fail "the mainline build took a migration state"
ctl close $V || fail "close $V"
ctl remove $V || fail "remove $V"
echo "lifecycles done"
if [ -x "${AGENT:-}" ] && [ -n "$L" ]; then
    # the recording's chunks are flushed each second: what the agent saw so far
    sleep 2
    "$AGENT" report "/out/mainline-driver.default.aptr" --format json > /tmp/mainline.json 2>/tmp/mainline.err
    echo "report rc $? (3: the recording is still being written)"
    for u in $U $V; do
        grep -q "$u" /tmp/mainline.json || { cat /tmp/mainline.err; fail "the report does not hold mdev $u"; }
    done
    echo "the report holds both lives"
fi
