#!/bin/sh
# In-guest benchmark job (cargo xtask bench --kernel; issue 7 b-e). /job.env sets AGENT,
# AGENT_ARGS, R (runs per figure), NCALL, NALLOC, RATES ("K ..." calls per ms), RATE_MS.
# Markers (the host takes medians):
#   bench call <none|ftrace|ftrace-args|aptrace> ps=    (b) vfio_ap_get_data_size N times
#   bench jit <0|1|2|none>                               net.core.bpf_jit_enable (none: no JIT built)
#   bench alloc <none|aptrace-default|aptrace-all|noop> ps=  (c) kmalloc(64)+kfree from aptrace_bench
#                                                        (noop: a do-nothing BPF program on the same tracepoints)
#   bench attach <default|all-allocations> s=<seconds> kprobes=<n>  (e) start to the "attached" line
#   bench call bpftrace ps=                              (b) with the peer's one-liner fetching the same data
#   bench call <aptrace-lock-reads-off|aptrace-lock-reads-on> ps=  (b) the same build with `--lock-reads off`,
#                                                        then on again (the pair, run back to back: issue 15's cost)
#   bench attach bpftrace s= kprobes=                    (e) the peer's start to its BEGIN probe, with the
#                                                        functions aptrace attached, entry and return
# BPFTRACE=1 in /job.env: Debian's bpftrace tree is on the 9p share `bpft` (xtask/src/testbed/bpftrace.rs).
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
    RUST_LOG=tracer::live=debug "$AGENT" live $3 ${AGENT_ARGS:-} > "$2" 2>&1 &
    P=$!
    i=0
    while ! grep -q "^aptrace: attached" "$2" && kill -0 $P 2>/dev/null && [ $i -lt 2400 ]; do
        sleep 0.05; i=$((i+1))
    done
    marker "bench attach $1 s=$(awk "BEGIN{print $(up)-$t0}") kprobes=$(kprobes_on_module) $(grep -m1 '^aptrace: attached' "$2")"
    # where the start went (the agent's debug timings), for BENCHMARKS.md's (e)
    marker "bench phases $1: $(grep -o 'resolve: .*\|object loaded in .*\|attach: .*' "$2" | head -4 | tr '\n' ';')"
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
    # the functions it attached, for the peer to attach the same
    awk -v m="$MOD" '$4 == m { sub(/[+].*/, "", $3); print $3 }' /sys/kernel/debug/kprobes/list | sort -u > /tmp/aptrace.funcs
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
    # (b) the other declared locks' reads off, then on again: the same build, back to back
    start_agent lock-reads-off /out/bench.lroff.log "--lock-reads off"
    calls aptrace-lock-reads-off 1
    stop_agent
    start_agent lock-reads-on /out/bench.lron.log "--lock-reads on"
    calls aptrace-lock-reads-on 1
    stop_agent
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
# bpftrace, the peer a user would pick: Debian's own, run through its tree's loader
if [ -n "${BPFTRACE:-}" ]; then
    mkdir -p /bpft
    if mount -t 9p -o trans=virtio,version=9p2000.L,msize=262144,ro bpft /bpft; then
        bt() { /bpft/lib/x86_64-linux-gnu/ld-linux-x86-64.so.2 --library-path /bpft/lib/x86_64-linux-gnu:/bpft/usr/lib/x86_64-linux-gnu /bpft/usr/bin/bpftrace "$@"; }
        marker "bench bpftrace version $(bt --version 2>&1 | head -n 1)"
        start_bt() { # label script log: starts bpftrace, times its start to the BEGIN line
            rm -f "$3"; : > "$3"
            t0=$(up)
            bt -e "$2" > "$3" 2>&1 &
            P=$!
            i=0
            while ! grep -q "^bpftrace: ready" "$3" && kill -0 $P 2>/dev/null && [ $i -lt 12000 ]; do
                sleep 0.05; i=$((i+1))
            done
            marker "bench attach $1 s=$(awk "BEGIN{print $(up)-$t0}") kprobes=$(kprobes_on_module) $(grep -m1 '^bpftrace: ready' "$3")"
            grep -q "^bpftrace: ready" "$3" || { marker "bench bpftrace $1 failed: $(head -c 600 "$3" | tr '\n' ' ')"; }
        }
        stop_bt() { # SIGINT as a user's Ctrl-C; a background job of this shell may ignore
            # it, so SIGTERM, then SIGKILL after 30 s
            kill -INT $P 2>/dev/null; kill -TERM $P 2>/dev/null
            i=0; while kill -0 $P 2>/dev/null && [ $i -lt 300 ]; do sleep 0.1; i=$((i+1)); done
            kill -0 $P 2>/dev/null && { marker "bench bpftrace did not stop: killed"; kill -KILL $P; }
            wait $P
        }
        # what aptrace's records carry: four arguments and the comm at entry, the return
        # value and the comm at return (with the task and a timestamp, as its header has)
        ENTRY='{ printf("%llu %d %s %lx %lx %lx %lx\n", nsecs, tid, comm, arg0, arg1, arg2, arg3); }'
        RET='{ printf("%llu %d %s %ld\n", nsecs, tid, comm, retval); }'
        READY='BEGIN { printf("bpftrace: ready\n"); }'
        start_bt bpftrace-one "kprobe:vfio_ap_get_data_size $ENTRY kretprobe:vfio_ap_get_data_size $RET $READY" /out/bench.bt-one.log
        if grep -q "^bpftrace: ready" /out/bench.bt-one.log; then calls bpftrace 1; fi
        stop_bt
        E=""; R=""
        for f in $(cat /tmp/aptrace.funcs 2>/dev/null); do
            E="$E${E:+,}kprobe:$f"; R="$R${R:+,}kretprobe:$f"
        done
        if [ -n "$E" ]; then
            start_bt bpftrace "$E $ENTRY $R $RET $READY" /out/bench.bt.log
            stop_bt
        fi
        umount /bpft
    else
        marker "bench bpftrace: the 9p share bpft did not mount"
    fi
fi
marker "bench done"
