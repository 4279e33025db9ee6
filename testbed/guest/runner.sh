#!/bin/sh
# In-guest scenario runner (the boot's /job.sh). /job.env sets:
#   RUNS="name:mode name:mode ..."   scenarios (in /scenarios/<name>/) and modes, in order
#   AGENT=/aptrace                   optional: the static aptrace binary
#   AGENT_ARGS="..."                 extra args (e.g. the mdevs_lock override on 6.1)
#   MODULE=vfio_ap                   the module's name (for the attached-probe checks)
#   CORE=real|model                  the VFIO core the scenarios' client drives (a scenario's
#                                    `core` file overrides it: lib.sh's vc)
#   ISOLATED=1                       the boot's last scenario leaves the kernel hung: print
#                                    the evidence-out marker and wait for the host to end QEMU
# Per run, in /out: <name>.<mode>.{run.log,agent.log,aptr,json}. Console markers:
#   APTRACE-TESTBED: run <name> <mode> start|end rc=<n> t=<seconds> agent=<rc|none>
# A scenario with a `module-unloaded` file starts with the module unloaded: the agent must
# say it waits for it (instead of attaching), and run.sh loads it. run.sh gets AGENT_LOG (the
# agent's output file) when an agent runs. A scenario with a `mainline-module` file runs on
# the module built without the series (/model-mainline.ko): the runner unloads the series
# build, puts the mainline one at /model.ko (the agent's --module-file) and loads it before
# the agent starts, and puts the series build back after the run. /lib.sh (testbed/guest/lib.sh) sources /job.env.
. /lib.sh
M() { marker "$@"; }
up() { cut -d' ' -f1 /proc/uptime; }
attached() { kprobes_on_module; }
wait_attached() { # pid log: the agent's "attached" line (all probes in place), then the
    # kprobes it made must be listed
    wait_line "$1" "$2" "^aptrace: attached" && [ "$(attached)" != 0 ]
}
stop_agent() { # pid: SIGINT, then up to 60 s for the recording to close
    kill -INT "$1" 2>/dev/null
    i=0
    while kill -0 "$1" 2>/dev/null && [ $i -lt 600 ]; do sleep 0.1; i=$((i+1)); done
    kill -0 "$1" 2>/dev/null && { kill -9 "$1"; M "agent did not stop on SIGINT"; }
    wait "$1"; return $?
}
for r in $RUNS; do
    n=${r%%:*}; mode=${r#*:}
    o=/out/$n.$mode
    flag=""; [ "$mode" = all-allocations ] && flag=--all-allocations
    # a scenario's own agent arguments (e.g. --ring-buffer-size 4096)
    [ -f "/scenarios/$n/agent-args" ] && flag="$flag $(cat "/scenarios/$n/agent-args")"
    late=""; [ -f "/scenarios/$n/module-unloaded" ] && late=1
    mainline=""; [ -f "/scenarios/$n/mainline-module" ] && mainline=1
    if [ -n "$mainline" ]; then
        [ -f /tmp/model-series.ko ] || cp /model.ko /tmp/model-series.ko
        if rmmod "$MOD" && cp /model-mainline.ko /model.ko && insmod /model.ko; then
            M "mainline module loaded ($n $mode)"
        else
            M "loading the mainline module for $n $mode failed"
        fi
    fi
    if [ -n "$late" ]; then
        if rmmod "$MOD"; then M "module unloaded before the agent ($n $mode)"
        else M "rmmod before $n $mode failed"; fi
    fi
    M "run $n $mode start"
    t0=$(up)
    apid=""
    if [ -n "${AGENT:-}" ] && [ -x "$AGENT" ]; then
        # shellcheck disable=SC2086
        "$AGENT" live --record "$o.aptr" --json "$o.json" $flag ${AGENT_ARGS:-} > "$o.agent.log" 2>&1 &
        apid=$!
        if [ -n "$late" ]; then
            # nothing to attach to yet: the agent must say it waits (run.sh checks the rest)
            if wait_line $apid "$o.agent.log" "^aptrace: waiting for module" && [ "$(attached)" = 0 ]; then
                M "agent waiting $n $mode after $(awk "BEGIN{print $(up)-$t0}")s $(grep -m1 '^aptrace: waiting' "$o.agent.log")"
            else
                M "agent not waiting ($n $mode)"
            fi
        elif wait_attached $apid "$o.agent.log"; then
            M "agent attached $n $mode after $(awk "BEGIN{print $(up)-$t0}")s kprobes=$(attached) $(grep -m1 '^aptrace: attached' "$o.agent.log")"
            [ -e /out/kprobes.list ] || cat /sys/kernel/debug/kprobes/list > /out/kprobes.list 2>&1
        else
            cat /sys/kernel/debug/kprobes/list > /out/kprobes.list 2>&1
            M "agent not attached ($n $mode)"
        fi
    fi
    core=${CORE:-model}; [ -f "/scenarios/$n/core" ] && core=$(head -n1 "/scenarios/$n/core")
    CORE=$core AGENT_LOG=${apid:+$o.agent.log} sh "/scenarios/$n/run.sh" > "$o.run.log" 2>&1
    rc=$?
    # the scenarios after this one need the module (run.sh should have left it loaded)
    if [ -z "$mainline" ] && ! module_loaded; then
        M "run $n $mode left the module unloaded; loading /model.ko"
        insmod /model.ko
    fi
    arc=none
    if [ -n "$apid" ]; then
        sleep 0.5   # let the ring buffer drain
        if [ -n "${ISOLATED:-}" ]; then
            # the hung task never returns: the finding must come while it hangs (up to 30 s)
            i=0
            while ! grep -q '^\[error\] self-deadlock' "$o.agent.log" && [ $i -lt 300 ]; do sleep 0.1; i=$((i+1)); done
        fi
        # findings printed live, before the agent is told to stop
        M "run $n $mode live $(grep -o '^\[[a-z]*\] [a-z-]*' "$o.agent.log" | cut -d' ' -f2 | sort | uniq -c | tr -s ' \n' ' ')"
        stop_agent $apid; arc=$?
    fi
    if [ -n "$mainline" ]; then
        # the series build back for the scenarios after this one (the agent has stopped:
        # its recording holds the mainline load only)
        module_loaded && { rmmod "$MOD" || M "rmmod of the mainline module after $n $mode failed"; }
        cp /tmp/model-series.ko /model.ko
        insmod /model.ko || M "reloading the series module after $n $mode failed"
    fi
    t1=$(up)
    [ -n "$apid" ] && M "run $n $mode agent stopped after $(awk "BEGIN{print $t1-$t0}")s"
    M "run $n $mode end rc=$rc t=$(awk "BEGIN{print $t1-$t0}") agent=$arc core=$core"
done
if [ -n "${AGENT:-}" ] && [ -x "$AGENT" ] && [ -z "${ISOLATED:-}" ]; then
    # after a SIGKILL of the agent no probe may stay attached
    # shellcheck disable=SC2086
    "$AGENT" live --all-allocations --record /out/sigkill.aptr ${AGENT_ARGS:-} > /out/sigkill.agent.log 2>&1 &
    apid=$!
    if wait_attached $apid /out/sigkill.agent.log; then
        before=$(attached)
        kill -9 $apid; wait $apid 2>/dev/null; sleep 1
        left=$(attached); ev=$(grep -c . /sys/kernel/tracing/kprobe_events)
        cp /sys/kernel/debug/kprobes/list /out/sigkill.kprobes-after 2>/dev/null
        if [ "$before" != 0 ] && [ "$left" = 0 ] && [ "$ev" = 0 ]; then
            M "sigkill-check ok kprobes-before=$before after=0"
        else
            M "sigkill-check FAIL kprobes-before=$before after=$left kprobe_events=$ev"
        fi
    else
        kill -9 $apid 2>/dev/null
        M "sigkill-check FAIL agent never attached"
    fi
fi
if [ -n "${ISOLATED:-}" ]; then
    sync
    M "evidence-out"
    while :; do sleep 60; done
fi
