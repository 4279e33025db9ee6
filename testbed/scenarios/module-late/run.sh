#!/bin/sh
# `aptrace check` and `aptrace live` started before the module is loaded (issue 8 item 5).
# The runner unloaded the module (file module-unloaded) and then started the agent, which had
# to say "aptrace: waiting for module vfio_ap to load". Here, still before the load,
# `aptrace check` must say the module is not loaded (its WARN line) and that live tracing can
# run (exit 0). Then insmod: the agent must attach (its first "aptrace: attached" line), and
# the leak made after it must be printed live with its stack named from this load's kallsyms
# (vfio_ap_init_migration_data called from vfio_ap_mdev_open_device). The runner judges the
# report: leak 1.
. /lib.sh
M=$MOD
L=${AGENT_LOG:-}
fail() { echo "FAIL: $*"; module_loaded || insmod /model.ko; exit 1; }
waitfor() { wait_count "$L" "$1" "$2"; } # pattern count
module_loaded && fail "module $M is loaded: the runner should have unloaded it"
if [ -x "${AGENT:-}" ]; then
    # shellcheck disable=SC2086
    "$AGENT" check ${AGENT_ARGS:-} > /out/module-late.check.txt 2>&1
    crc=$?
    cat /out/module-late.check.txt
    line=$(grep -E "^WARN +module $M +not loaded" /out/module-late.check.txt)
    [ -n "$line" ] || fail "aptrace check did not say that module $M is not loaded"
    [ $crc = 0 ] || fail "aptrace check exited $crc (live tracing should be able to run)"
    echo "check said: $line (rc $crc)"
fi
if [ -n "$L" ]; then
    grep -q "^aptrace: waiting for module $M to load" "$L" || fail "the agent did not say it waits for $M"
    grep -q "^aptrace: attached" "$L" && fail "the agent said attached before $M was loaded"
    echo "agent said: $(grep -m1 '^aptrace: waiting' "$L")"
fi
insmod /model.ko || fail "insmod /model.ko"
echo "insmod done"
waitfor "^aptrace: attached" 1 || fail "no 'attached' line after the load"
echo "agent said: $(grep -m1 '^aptrace: attached' "$L" 2>/dev/null)"
U=1ae70000-0000-4000-8000-000000000001
leaky_life $U
if [ -n "$L" ]; then
    leak_stack_names "$L" "$U" vfio_ap_init_migration_data || fail "the live leak of $U"
fi
