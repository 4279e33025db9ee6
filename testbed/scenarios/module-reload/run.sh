#!/bin/sh
# The traced module unloaded and a *rebuilt* one loaded while the agent runs (issue 8 item 4).
# The first load shows a lock-not-held, then rmmod: the agent must print
# "aptrace: module vfio_ap unloaded; probes detached". Then the module file the agent was
# given (--module-file /model.ko) is replaced by the rebuilt module (/model-rebuilt.ko: built
# with -DAPTRACE_MODEL_REBUILD, several KiB of text ahead of the driver functions), as
# reinstalling a rebuilt driver would, and loaded: vfio_ap_init_migration_data must sit at
# another .text offset and address (printed as evidence), the agent must attach to the new
# load (a second "aptrace: attached" line), and the second load's leak must be printed live
# with its stack named from the new load's kallsyms. Expected in the report: lock-not-held 1
# (kept from the first load) and leak 1 (the rebuilt load). At the end the first build is put
# back and loaded (the agent attaches a third time) for the scenarios after this one.
. /lib.sh
M=$MOD
L=${AGENT_LOG:-}
F=vfio_ap_init_migration_data
loaded() { module_loaded; }
restore() { # the first build back in place and loaded
    loaded && ! cmp -s /model.ko /model-rebuilt.ko && return 0
    loaded && rmmod "$M"
    [ -f /tmp/model-first.ko ] && cp /tmp/model-first.ko /model.ko
    insmod /model.ko
}
fail() { echo "FAIL: $*"; restore; exit 1; }
waitfor() { wait_count "$L" "$1" "$2"; } # pattern count
where() { # "ADDRESS OFFSET" of $F in the loaded module (kallsyms, and from the start of .text)
    a=$(awk -v f="$F" -v m="[$M]" '$3 == f && $4 == m { print $1; exit }' /proc/kallsyms)
    t=$(cat "/sys/module/$M/sections/.text")
    [ -n "$a" ] && [ -n "$t" ] && printf '0x%s 0x%x\n' "$a" $((0x$a - t))
}
[ -f /model-rebuilt.ko ] || fail "no /model-rebuilt.ko in the initramfs"
W1=$(where) || fail "$F not in /proc/kallsyms"
U=1eac0000-0000-4000-8000-000000000a01
ctl create $U || fail create
ctl fault init-unlocked
ctl open $U
migrate $U STOP
ctl close $U
ctl remove $U
sleep 1
cp /model.ko /tmp/model-first.ko
rmmod "$M" || fail "rmmod $M"
echo "rmmod done"
waitfor "^aptrace: module $M unloaded; probes detached" 1 || fail "no 'unloaded; probes detached' line"
echo "agent said: $(grep -m1 'unloaded; probes detached' "$L" 2>/dev/null)"
cp /model-rebuilt.ko /model.ko
insmod /model.ko || fail "insmod of the rebuilt module"
echo "insmod (rebuilt) done"
W2=$(where) || fail "$F not in /proc/kallsyms after the reload"
echo "evidence: $F at ${W1% *} (.text+${W1#* }) on the first load, ${W2% *} (.text+${W2#* }) on the rebuilt load"
[ "${W1#* }" != "${W2#* }" ] || fail "$F did not move within .text: is /model-rebuilt.ko really rebuilt?"
[ "${W1% *}" != "${W2% *}" ] || fail "$F has the same address on both loads"
waitfor "^aptrace: attached" 2 || fail "no second 'attached' line"
echo "agent said: $(grep '^aptrace: attached' "$L" 2>/dev/null | tail -1)"
V=1eac0000-0000-4000-8000-000000000a02
leaky_life $V
if [ -n "$L" ]; then
    # symbols of the first load would name other functions (F moved by KiBs)
    leak_stack_names "$L" "$V" "$F" || fail "the live leak of $V after the reload"
fi
# the first build back for the scenarios after this one (the agent follows a third time)
rmmod "$M" || fail "rmmod of the rebuilt module"
waitfor "^aptrace: module $M unloaded; probes detached" 2 || fail "no second 'unloaded' line"
cp /tmp/model-first.ko /model.ko
insmod /model.ko || fail "insmod of the first build again"
waitfor "^aptrace: attached" 3 || fail "no third 'attached' line"
echo "restored: $F at $(where)"
