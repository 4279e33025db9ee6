#!/bin/sh
# Phase-1 proof run in the guest: 9p, kallsyms, filter functions, kprobe events on every
# profiled function, the mdevs_lock owner word read by a kprobe fetcharg in three states,
# kmem tracepoints. Everything lands in /out; markers on the console.
. /lib.sh   # /job.env (MDEVS_LOCK_OFF, from pahole on the host), C, marker
T=/sys/kernel/tracing
echo "hello from $(uname -r) $(uname -m)" > /out/guest-hello.txt && marker "9p write ok"
FUNCS="vfio_ap_mdev_probe vfio_ap_mdev_init_dev vfio_ap_mdev_release_dev vfio_ap_mdev_open_device vfio_ap_mdev_close_device vfio_ap_mdev_remove vfio_ap_init_migration_capabilities vfio_ap_init_migration_data vfio_ap_release_migration_data vfio_ap_set_state vfio_ap_get_state vfio_ap_get_data_size vfio_ap_transition_to_state vfio_ap_model_ping"
grep '\[vfio_ap\]' /proc/kallsyms > /out/kallsyms.txt
grep '\[vfio_ap\]' $T/available_filter_functions > /out/filter_functions.txt
for f in $FUNCS; do
    k=$(grep -c " $f\s*\[vfio_ap\]" /out/kallsyms.txt)
    a=$(grep -c "^$f \[vfio_ap\]" /out/filter_functions.txt)
    marker "sym $f kallsyms=$k filter=$a"
done
grep -E ' matrix_dev\s' /out/kallsyms.txt | head -1 | sed 's/^/APTRACE-TESTBED: kallsyms-var /'
ls $T/events/kmem/ > /out/kmem-events.txt; marker "kmem events: $(tr '\n' ' ' < /out/kmem-events.txt)"
grep -E 'kmalloc|kfree|kmem_cache' /proc/kallsyms | grep -E '__(bpf_trace|probe)_' | head -20 > /out/raw-tp-syms.txt
marker "raw tracepoint bpf_trace syms: $(grep -c bpf_trace /out/raw-tp-syms.txt)"
ls /sys/kernel/btf/ > /out/btf.txt 2>&1; marker "btf: $(tr '\n' ' ' < /out/btf.txt)"
echo lockinfo > $C; cat $C > /out/lockinfo.txt; marker "lockinfo $(cat $C)"
VAR=$(sed -n 's/.*matrix_dev_var=\([0-9a-fx]*\).*/\1/p' /out/lockinfo.txt)
OFF=${MDEVS_LOCK_OFF:-$(sed -n 's/.*mdevs_lock_off=\([0-9]*\).*/\1/p' /out/lockinfo.txt)}
# module data symbol by name where kallsyms has it, else the absolute address
if echo "p:aptr/sym_probe vfio_ap_model_ping o=+$OFF(@matrix_dev):x64" >> $T/kprobe_events 2>/dev/null; then
    marker "fetcharg @matrix_dev by name: ok"; SYM=@matrix_dev
else
    marker "fetcharg @matrix_dev by name: refused, using @0x$VAR"; SYM=@0x$VAR
fi
echo > $T/kprobe_events
n=0
for f in $FUNCS; do
    n=$((n+1))
    echo "p:aptr/p$n $f owner=+$OFF($SYM):x64 mdp=$SYM:x64" >> $T/kprobe_events || marker "kprobe $f refused"
done
echo "r:aptr/set_state_ret vfio_ap_set_state ret=\$retval:x64" >> $T/kprobe_events
cat $T/kprobe_events > /out/kprobe_events.txt
cat /sys/kernel/debug/kprobes/list > /out/kprobes_list.txt 2>/dev/null
echo 1 > $T/events/aptr/enable
echo > $T/trace
echo 1 > $T/tracing_on
U=00000000-0000-4000-8000-000000000001
echo "create $U" > $C
echo "open $U" > $C
# each step in a subshell: a migration file it returns is an fd of that subshell, closed
# when it exits (an open one would pin the device and the remove below would be refused)
for s in STOP STOP_COPY STOP RUNNING RESUMING RUNNING; do (echo "migrate $U $s" > $C); cat $C >> /out/migrate.txt; done
echo "getstate $U" > $C; marker "$(cat $C)"
echo "migrate $U 5" > $C 2>/dev/null && marker "BAD: state 5 accepted" || marker "state 5 refused"
echo "close $U" > $C
echo "remove $U" > $C
# the owner word in three states, read by the kprobe on vfio_ap_model_ping
echo ping > $C; cat $C > /out/owner-free.txt
echo lock > $C; echo ping > $C; cat $C > /out/owner-self.txt; echo unlock > $C
echo hold > $C; echo ping > $C; cat $C > /out/owner-other.txt; echo unhold > $C
echo 0 > $T/tracing_on
cat $T/trace > /out/trace.txt
n=0
for f in $FUNCS; do
    n=$((n+1))
    marker "kprobe $f hits=$(grep -c "p$n: " /out/trace.txt)"
done
marker "kprobe set_state_ret hits=$(grep -c 'set_state_ret: ' /out/trace.txt)"
marker "self-task=$(sed -n 's/.*current=\([0-9a-fx]*\).*/\1/p' /out/owner-self.txt)"
grep -E 'p14: ' /out/trace.txt | sed 's/^ */APTRACE-TESTBED: ping /'
for s in free self other; do marker "owner-$s $(cat /out/owner-$s.txt)"; done
echo > $T/kprobe_events 2>/dev/null || { echo 0 > $T/events/aptr/enable; echo > $T/kprobe_events; }
marker "proof done"
