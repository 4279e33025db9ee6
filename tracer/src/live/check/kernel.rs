//! `check`'s rows about the kernel's tracing features: kprobes, tracefs, the BPF JIT, and
//! the loads the agent tried (programs, ring buffer).

use super::{config_option, is_permission_error, row, Probed, Row, Status, PRIVILEGE_FIX};
use crate::live::host::Host;

/// What an interpreted kernel's attach does (tracer/src/live/agent/attach.rs).
const PAIR_PER_FUNCTION: &str = "each function gets its own program pair, verified at start, \
     which costs each call less than shared programs would";

/// The rows, in the table's order; `tracefs` is where tracefs is mounted
/// ([`Host::tracefs`]).
pub(super) fn kernel_rows(
    host: &Host,
    probed: &Probed,
    config: Option<&str>,
    tracefs: Option<&str>,
) -> Vec<Row> {
    let mut rows = Vec::new();
    // kprobes: the perf kprobe PMU (what the agent attaches through), tracefs
    // kprobe_events, the build config and an actual attach.
    let pmu = host.exists("/sys/bus/event_source/devices/kprobe/type");
    let events = tracefs.is_some_and(|t| host.exists(&format!("{t}/kprobe_events")));
    let cfg_kprobes = config_option(config, "CONFIG_KPROBES");
    let kprobe_row = match (&probed.kprobe_attach, cfg_kprobes, pmu || events) {
        (Some(Ok(())), _, _) => row("kprobes", Status::Ok, "a kprobe attached and detached", ""),
        (_, Some(false), _) => row(
            "kprobes",
            Status::Fail,
            "kernel built without CONFIG_KPROBES: kprobes cannot attach (no kprobe PMU, no kprobe_events)",
            "boot a kernel with CONFIG_KPROBES=y and CONFIG_KPROBE_EVENTS=y (Debian's and RHEL's have them)",
        ),
        (_, _, false) => row(
            "kprobes",
            Status::Fail,
            "no kprobe support: /sys/bus/event_source/devices/kprobe and tracefs kprobe_events are absent",
            "boot a kernel with CONFIG_KPROBES=y and CONFIG_KPROBE_EVENTS=y; if it has them: mount -t tracefs tracefs /sys/kernel/tracing",
        ),
        (Some(Err(e)), _, true) => row(
            "kprobes",
            Status::Fail,
            format!("kprobe support is present but attaching failed: {e}"),
            "check dmesg; run as root; see `aptrace check` on a kernel with kprobes enabled",
        ),
        (None, _, true) => row("kprobes", Status::Ok, "kprobe PMU / kprobe_events present (not attached: no live support)", ""),
    };
    rows.push(kprobe_row);

    rows.push(match &tracefs {
        Some(t) => row(
            "tracefs",
            Status::Ok,
            format!("{t} (available_filter_functions)"),
            "",
        ),
        None if host.tracefs_unreadable() => row(
            "tracefs",
            Status::Warn,
            "not readable by this user: functions cannot be checked for traceability",
            PRIVILEGE_FIX,
        ),
        None => row(
            "tracefs",
            Status::Warn,
            "not mounted: functions cannot be checked for traceability",
            "mount -t tracefs tracefs /sys/kernel/tracing",
        ),
    });
    // The sysctl exists only where the kernel has a BPF JIT (Debian's s390x kernels have
    // none): interpreted probes cost several times more per call.
    rows.push(
        match host.bpf_jit_enable() {
            Some(v) if v != "0" => row(
                "BPF JIT",
                Status::Ok,
                format!(
                    "on (bpf_jit_enable={v}): one entry and one return program serve every \
                     function where the kernel has attach cookies (5.15+)"
                ),
                "",
            ),
            Some(_) => row(
                "BPF JIT",
                Status::Warn,
                format!("off: the probes run interpreted, several times slower per call; {PAIR_PER_FUNCTION}"),
                "sysctl -w net.core.bpf_jit_enable=1",
            ),
            None => row(
                "BPF JIT",
                Status::Warn,
                format!("not in this kernel (no /proc/sys/net/core/bpf_jit_enable): the probes run interpreted, several times slower per call; {PAIR_PER_FUNCTION}"),
                "a kernel built with CONFIG_BPF_JIT for lower overhead; tracing works without it",
            ),
        },
    );
    if let Some(r) = &probed.load {
        rows.push(match r {
            Ok(()) => row("eBPF programs", Status::Ok, "loaded (verifier accepted every program)", ""),
            Err(e) if is_permission_error(e) => row("eBPF programs", Status::Fail, e.clone(), PRIVILEGE_FIX),
            Err(e) => row("eBPF programs", Status::Fail, e.clone(), "needs a kernel with BPF (CONFIG_BPF_SYSCALL) and BPF_MAP_TYPE_RINGBUF (5.8+ or a backport)"),
        });
    }
    if let Some(r) = &probed.ringbuf {
        rows.push(match r {
            Ok(true) => row(
                "ring buffer",
                Status::Ok,
                "BPF_MAP_TYPE_RINGBUF supported",
                "",
            ),
            Ok(false) => row(
                "ring buffer",
                Status::Fail,
                "BPF_MAP_TYPE_RINGBUF not supported",
                "needs a kernel with BPF ring buffers (5.8+ or a backport)",
            ),
            Err(e) => row(
                "ring buffer",
                Status::Fail,
                format!("cannot probe: {e}"),
                PRIVILEGE_FIX,
            ),
        });
    }
    rows
}
