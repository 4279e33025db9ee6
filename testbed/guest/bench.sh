#!/bin/sh
# In-guest benchmark job (cargo xtask bench --kernel; issue 7 b-e). /job.env sets AGENT,
# AGENT_ARGS, R (runs per figure), NCALL, NALLOC, RATES ("K ..." calls per ms), RATE_MS.
# Markers (the host takes medians):
#   bench call <none|ftrace|ftrace-args|aptrace> ps=    (b) vfio_ap_get_data_size N times
#   bench jit <0|1|2|none>                               net.core.bpf_jit_enable (none: no JIT built)
#   bench alloc <none|aptrace-default|aptrace-all|noop> ps=  (c) kmalloc(64)+kfree from aptrace_bench
#                                                        (noop: a do-nothing BPF program on the same tracepoints)
#   bench attach <default|all-allocations> s=<seconds>  (e) start to the "attached" line
#   bench rate k=<calls/ms> events_per_s=<achieved> lost=<events-lost findings so far>  (d)
. /lib.sh   # /job.env, marker
B=/sys/kernel/debug/aptrace_bench/ctl
T=/sys/kernel/tracing
up() { cut -d' ' -f1 /proc/uptime; }
insmod /bench.ko || marker "bench insmod failed"
F=$(awk '$3 == "vfio_ap_get_data_size" { print $1; exit }' /proc/kallsyms)
marker "bench fn vfio_ap_get_data_size=$F"
ps_of() { echo "$1" > $B && sed -n 's/.*per_call_ps=\([0-9]*\).*/\1/p' $B; }
calls() { # with an agent: a pause after each run, so its ring buffer drains and no event is lost
    i=0; while [ $i -lt "$R" ]; do marker "bench call $1 ps=$(ps_of "call $F $NCALL")"; i=$((i+1)); [ -n "${2:-}" ] && sleep "$2"; done; }
allocs() { i=0; while [ $i -lt "$R" ]; do marker "bench alloc $1 ps=$(ps_of "alloc $NALLOC 64")"; i=$((i+1)); done; }
start_agent() { # mode log [args]: starts, times the attach, sets P
    rm -f "$2"; : > "$2" # no stale "attached" line
    t0=$(up)
    # shellcheck disable=SC2086
    "$AGENT" live $3 ${AGENT_ARGS:-} > "$2" 2>&1 &
    P=$!
    i=0
    while ! grep -q "^aptrace: attached" "$2" && kill -0 $P 2>/dev/null && [ $i -lt 2400 ]; do
        sleep 0.05; i=$((i+1))
    done
    marker "bench attach $1 s=$(awk "BEGIN{print $(up)-$t0}") $(grep -m1 '^aptrace: attached' "$2")"
}
stop_agent() { kill -INT $P; wait $P; }
# warm up (page in, caches)
echo "call $F 1000" > $B; echo "alloc 1000 64" > $B
calls none
allocs none
# the kernel's own kprobe events, entry and return (as aptrace probes both), tracing on
echo "p:aptb/e vfio_ap_get_data_size" >> $T/kprobe_events
echo "r:aptb/r vfio_ap_get_data_size" >> $T/kprobe_events
echo 1 > $T/events/aptb/enable
echo 1 > $T/tracing_on
calls ftrace
echo 0 > $T/events/aptb/enable
echo > $T/kprobe_events
echo > $T/trace
# the same, fetching what aptrace's records carry: four arguments and the comm at entry,
# the return value and the comm at return
echo 'p:aptb/e vfio_ap_get_data_size a1=$arg1 a2=$arg2 a3=$arg3 a4=$arg4 comm=$comm' >> $T/kprobe_events
echo 'r:aptb/r vfio_ap_get_data_size ret=$retval comm=$comm' >> $T/kprobe_events
echo 1 > $T/events/aptb/enable
calls ftrace-args
echo 0 > $T/events/aptb/enable
echo > $T/kprobe_events
echo > $T/trace
marker "bench jit $(cat /proc/sys/net/core/bpf_jit_enable 2>/dev/null || echo none)"
if [ -x "${AGENT:-}" ]; then
    start_agent default /out/bench.default.log
    calls aptrace 1
    allocs aptrace-default
    sleep 2
    marker "bench lost during calls: $(grep -c '^\[[a-z]*\] events-lost' /out/bench.default.log)"
    # (d) sustained rates: K calls every millisecond for RATE_MS ms
    for k in $RATES; do
        lost0=$(grep -c '^\[[a-z]*\] events-lost' /out/bench.default.log)
        t0=$(up)
        echo "rate $F $k $RATE_MS" > $B
        t1=$(up)
        sleep 2
        lost=$(grep -c '^\[[a-z]*\] events-lost' /out/bench.default.log)
        marker "bench rate k=$k events_per_s=$(awk "BEGIN{printf \"%d\", 2*$k*$RATE_MS/($t1-$t0)}") lost=$((lost-lost0)) alive=$(kill -0 $P && echo yes || echo no)"
    done
    stop_agent
    marker "bench agent default stopped rc=$? $(tail -1 /out/bench.default.log)"
    start_agent all-allocations /out/bench.all.log --all-allocations
    allocs aptrace-all
    stop_agent
    marker "bench agent all stopped rc=$?"
    # (c)'s floor: a BPF program that does nothing, on the same allocator tracepoints
    "$AGENT" live --noop-floor > /out/bench.noop.log 2>&1 &
    P=$!
    i=0
    while ! grep -q "^aptrace: noop floor attached" /out/bench.noop.log && kill -0 $P 2>/dev/null && [ $i -lt 2400 ]; do
        sleep 0.05; i=$((i+1))
    done
    marker "bench noop $(grep -m1 '^aptrace: noop floor attached' /out/bench.noop.log)"
    allocs noop
    stop_agent
    marker "bench noop stopped rc=$?"
fi
marker "bench done"
