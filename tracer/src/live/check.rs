//! `aptrace check`: can live tracing run here, and how degraded? Features are probed
//! (files the kernel exposes, and with live support an actual load and attach), never read
//! from the version number. Every failing line says what to do.

use std::fmt::Write as _;

use serde::Serialize;

use super::host::Host;

mod kernel;
use super::resolve::{resolve_for, Overrides, Resolution};
use crate::profile::Profile;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    Ok,
    /// Tracing runs, with less.
    Warn,
    /// Tracing cannot run.
    Fail,
    Info,
}

impl Status {
    fn label(self) -> &'static str {
        match self {
            Status::Ok => "ok",
            Status::Warn => "WARN",
            Status::Fail => "FAIL",
            Status::Info => "info",
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Row {
    pub item: String,
    pub status: Status,
    pub detail: String,
    /// What to do about it (empty when nothing needs doing).
    pub fix: String,
}

fn row(
    item: impl Into<String>,
    status: Status,
    detail: impl Into<String>,
    fix: impl Into<String>,
) -> Row {
    Row {
        item: item.into(),
        status,
        detail: detail.into(),
        fix: fix.into(),
    }
}

/// Results of probes that need the bpf syscall (filled by the live module; `None` when the
/// binary has no live support or the probe was not run).
#[derive(Clone, Debug)]
pub struct Probed {
    /// The binary was built with the `live` feature and carries an eBPF object.
    pub live_support: Result<(), String>,
    /// The eBPF object loaded (programs passed the verifier).
    pub load: Option<Result<(), String>>,
    /// BPF_MAP_TYPE_RINGBUF is supported.
    pub ringbuf: Option<Result<bool, String>>,
    /// A kprobe actually attached to a kernel function (then was detached).
    pub kprobe_attach: Option<Result<(), String>>,
    /// A raw tracepoint attached (kmem:kfree).
    pub raw_tracepoint: Option<Result<(), String>>,
    /// Whether the attached kprobe's link reported the kernel's miss count (6.7+).
    pub kernel_miss_count: Option<bool>,
}

impl Default for Probed {
    fn default() -> Probed {
        Probed {
            live_support: super::live_support(),
            load: None,
            ringbuf: None,
            kprobe_attach: None,
            raw_tracepoint: None,
            kernel_miss_count: None,
        }
    }
}

/// Kernel build options, from /boot/config-RELEASE or /proc/config.gz (decompressed by the
/// caller). `None` when neither is readable.
pub fn config_option(config: Option<&str>, option: &str) -> Option<bool> {
    let config = config?;
    for line in config.lines() {
        if line == format!("# {option} is not set") {
            return Some(false);
        }
        if let Some(v) = line.strip_prefix(&format!("{option}=")) {
            return Some(v == "y" || v == "m");
        }
    }
    Some(false)
}

/// What to do when the process may not use BPF or read kernel addresses.
pub const PRIVILEGE_FIX: &str = "run as root (sudo aptrace ...), or give the binary CAP_BPF and CAP_PERFMON (and CAP_SYSLOG for kernel addresses): setcap cap_bpf,cap_perfmon,cap_syslog+ep aptrace";

/// Whether an error from the bpf syscall is a permission refusal.
pub fn is_permission_error(e: &str) -> bool {
    e.contains("Operation not permitted") || e.contains("Permission denied")
}

/// Whether the process may use BPF: root, or CAP_BPF + CAP_PERFMON, or CAP_SYS_ADMIN.
fn privileges(host: &Host) -> Row {
    let status = host.read_string("/proc/self/status").unwrap_or_default();
    let cap_eff = status
        .lines()
        .find_map(|l| l.strip_prefix("CapEff:"))
        .and_then(|v| u64::from_str_radix(v.trim(), 16).ok());
    let uid0 = status
        .lines()
        .find_map(|l| l.strip_prefix("Uid:"))
        .is_some_and(|v| v.split_whitespace().nth(1) == Some("0"));
    const SYS_ADMIN: u64 = 1 << 21;
    const PERFMON: u64 = 1 << 38;
    const BPF: u64 = 1 << 39;
    match cap_eff {
        Some(c) if c & SYS_ADMIN != 0 => row(
            "privileges",
            Status::Ok,
            format!("{}CAP_SYS_ADMIN", if uid0 { "root, " } else { "" }),
            "",
        ),
        Some(c) if c & BPF != 0 && c & PERFMON != 0 => {
            row("privileges", Status::Ok, "CAP_BPF and CAP_PERFMON", "")
        }
        Some(_) => row(
            "privileges",
            Status::Fail,
            "no CAP_BPF+CAP_PERFMON or CAP_SYS_ADMIN",
            PRIVILEGE_FIX,
        ),
        None => row(
            "privileges",
            Status::Warn,
            "cannot read /proc/self/status",
            "run as root",
        ),
    }
}

/// The whole table. `config` is the kernel configuration text if readable.
/// `traceability`: read tracefs's function list for every function, as `check` shows it;
/// `live` leaves it out (it shows no function's traceability, and reading it cost a fifth
/// of its start): see [`resolve_for`].
#[allow(clippy::too_many_arguments)]
pub fn preflight(
    host: &Host,
    profile: &Profile,
    module: &str,
    ov: &Overrides,
    probed: &Probed,
    config: Option<&str>,
    arch: &str,
    traceability: bool,
) -> (Vec<Row>, Resolution) {
    let mut rows = Vec::new();
    rows.push(row(
        "kernel",
        Status::Info,
        format!("{} {arch}", host.kernel_release()),
        "",
    ));
    if !arch.starts_with("s390") && module == "vfio_ap" {
        // The real driver needs the AP bus of IBM Z; elsewhere only a model can load.
        rows.push(row(
            "platform",
            Status::Info,
            format!(
                "vfio_ap exists only on s390 (IBM Z); on {arch} what loads as vfio_ap is the \
                 testbed's model of the driver"
            ),
            "trace the model in the testbed's QEMU guests (`cargo xtask testbed`, \
             testbed/README.md), or audit a recording from an s390x host with `aptrace report`",
        ));
    }
    rows.push(match &probed.live_support {
        Ok(()) => row(
            "live support",
            Status::Ok,
            "built with live tracing (eBPF object embedded)",
            "",
        ),
        Err(e) => row(
            "live support",
            Status::Fail,
            e.clone(),
            "build with `cargo xtask build` (static binary with --features live)",
        ),
    });
    rows.push(privileges(host));

    let tracefs = host.tracefs();
    rows.extend(kernel::kernel_rows(
        host,
        probed,
        config,
        tracefs.as_deref(),
    ));

    let res = resolve_for(host, profile, module, ov, traceability);
    rows.push(if res.vmlinux_btf {
        row("BTF vmlinux", Status::Ok, "/sys/kernel/btf/vmlinux", "")
    } else {
        row(
            "BTF vmlinux",
            Status::Warn,
            "/sys/kernel/btf/vmlinux absent: the probes need no CO-RE and still load; the mutex owner layout is assumed (owner word at +0, mask ~0x7)",
            "on PREEMPT_RT, or if struct mutex differs, pass --offset mutex.owner=N --owner-mask 0xfffffffffffffffe (pahole -C mutex vmlinux)",
        )
    });
    rows.push(if res.module_btf {
        row("BTF module", Status::Ok, format!("/sys/kernel/btf/{module}"), "")
    } else if !res.loaded {
        // A module's BTF appears with the module: nothing to conclude before it loads.
        row(
            "BTF module",
            Status::Info,
            format!("{module} not loaded: its BTF (/sys/kernel/btf/{module}) is checked when it loads"),
            "",
        )
    } else {
        row(
            "BTF module",
            Status::Warn,
            format!("/sys/kernel/btf/{module} absent: struct offsets need overrides"),
            format!("pass --offset ap_matrix_dev.mdevs_lock=N --offset ap_matrix_mdev.mig_data=N (from `pahole -C ap_matrix_dev {module}.ko` on the module's debug info)"),
        )
    });
    rows.push(if res.kallsyms_readable {
        row(
            "kallsyms",
            Status::Ok,
            "/proc/kallsyms readable with addresses",
            "",
        )
    } else {
        row(
            "kallsyms",
            Status::Fail,
            "/proc/kallsyms unreadable or addresses hidden",
            "run as root, or with CAP_SYSLOG (kptr_restrict hides addresses from others)",
        )
    });
    rows.push(if res.loaded {
        row(format!("module {module}"), Status::Ok, "loaded", "")
    } else {
        row(
            format!("module {module}"),
            Status::Warn,
            "not loaded: `aptrace live` waits for it and attaches when it appears",
            format!("modprobe {module} (or insmod the model module)"),
        )
    });

    for t in &res.targets {
        let (status, mut detail) = if t.clone {
            (
                Status::Warn,
                format!(
                    "found as {} (compiler clone: timed, arguments untrusted)",
                    t.attach_name
                ),
            )
        } else {
            (Status::Ok, format!("found at {:#x}", t.addr))
        };
        let mut status = status;
        match t.traceable {
            Some(true) => detail.push_str(", traceable"),
            Some(false) => {
                detail.push_str(", not in available_filter_functions (kprobe may still attach)");
                status = Status::Warn;
            }
            None => {}
        }
        let mut fix = String::new();
        if let Some(why) = &t.degraded {
            // Attaches, but some findings cannot be detected: a warning, never "ok".
            status = Status::Warn;
            detail.push_str(&format!("; degraded: {why}"));
            if t.field_problem.is_some() {
                fix = "pass the offset with --offset STRUCT.MEMBER=N (pahole -C STRUCT on the module's debug info)".to_string();
            } else {
                fix = "make the lock checks work (see the lock mdevs_lock row)".to_string();
            }
        }
        rows.push(row(format!("function {}", t.name), status, detail, fix));
    }
    if !res.loaded {
        rows.push(row(
            "functions",
            Status::Warn,
            format!(
                "{} profile functions: checked when module {module} loads",
                profile.functions.len()
            ),
            "",
        ));
    }
    for (name, optional, msg) in res.missing.iter().filter(|_| res.loaded) {
        let mut st = Status::Warn;
        let elsewhere = res.missing_elsewhere.iter().find(|(n, _)| n == name);
        let detail = if res.series_absent.contains(name) {
            // a driver without the series is traced with what it has: not a warning
            st = Status::Info;
            format!("{msg}; optional: a function of the live-migration series")
        } else if let Some((_, m)) = elsewhere {
            format!("absent ({msg}); optional: a function of module {m} (the VFIO core), traced where it is")
        } else if *optional {
            format!("missing ({msg}); optional: added by later patches")
        } else {
            format!("missing: {msg}")
        };
        let fix = if !*optional {
            "other probes still attach; check the kernel/module version".to_string()
        } else {
            String::new()
        };
        rows.push(row(format!("function {name}"), st, detail, fix));
    }

    let lock_item = "lock mdevs_lock";
    rows.push(match (&res.matrix_dev_addr, &res.mdevs_lock_offset, &res.mutex) {
        (Ok(a), Ok(o), Ok((m, src))) => row(
            lock_item,
            Status::Ok,
            format!("matrix_dev at {a:#x}, mdevs_lock at +{o:#x}, owner at +{:#x} mask {:#x} ({src})", m.owner_offset, m.owner_mask),
            "",
        ),
        // matrix_dev and the module's BTF appear with the module; the mutex layout (vmlinux)
        // is known now.
        (_, _, Ok(_)) if !res.loaded => row(
            lock_item,
            Status::Info,
            format!("matrix_dev and the mdevs_lock offset are resolved when module {module} loads"),
            "",
        ),
        (a, o, m) => {
            let mut why = Vec::new();
            let mut fix = Vec::new();
            if let Err(e) = a {
                why.push(format!("matrix_dev: {e}"));
                fix.push("--matrix-dev-addr ADDR or --module-file PATH".to_string());
            }
            if let Err(e) = o {
                why.push(e.clone());
                fix.push("--offset ap_matrix_dev.mdevs_lock=N (pahole -C ap_matrix_dev)".to_string());
            }
            if let Err(e) = m {
                why.push(e.clone());
                fix.push("--offset mutex.owner=N".to_string());
            }
            row(lock_item, Status::Warn, format!("lock checks off: {}", why.join("; ")), fix.join("; "))
        }
    });
    rows.extend(lock_read_rows(&res));
    let misses = probed.kernel_miss_count.map(|kernel| {
        row(
            "lost returns",
            Status::Info,
            if kernel {
                "kretprobe misses counted by the kernel (bpf link info)"
            } else {
                "kretprobe misses counted by the probes: a missed return shows when the same thread calls the function again (the kernel's own count needs Linux 6.7)"
            },
            "",
        )
    });
    let raw_tp = match &probed.raw_tracepoint {
        Some(Ok(())) => row(
            "--all-allocations",
            Status::Ok,
            format!(
                "raw tracepoints attach; kvmalloc: {}",
                res.kvmalloc.as_deref().unwrap_or("not found")
            ),
            "",
        ),
        Some(Err(e)) => row(
            "--all-allocations",
            Status::Warn,
            format!("raw tracepoint kfree failed: {e}"),
            "only the profile's field tracking is available",
        ),
        None => {
            let ev = tracefs
                .as_ref()
                .is_some_and(|t| host.exists(&format!("{t}/events/kmem/kfree")));
            row(
                "--all-allocations",
                if ev { Status::Ok } else { Status::Warn },
                format!(
                    "kmem tracepoints {}; kvmalloc: {}",
                    if ev { "present" } else { "not seen" },
                    res.kvmalloc.as_deref().unwrap_or("not found")
                ),
                "",
            )
        }
    };
    rows.push(raw_tp);
    rows.extend(misses);
    // Said once: the other lines that privileges would fix point at it.
    if rows
        .iter()
        .any(|r| r.item == "privileges" && r.status == Status::Fail)
    {
        for r in rows
            .iter_mut()
            .filter(|r| r.item != "privileges" && r.fix == PRIVILEGE_FIX)
        {
            r.fix = "run as root (see privileges)".into();
        }
    }
    (rows, res)
}

/// Rows about the host rather than the module: `aptrace live` prints their warnings before
/// it loads anything.
const ENVIRONMENT: &[&str] = &[
    "live support",
    "privileges",
    "kprobes",
    "tracefs",
    "eBPF programs",
    "ring buffer",
    "BTF vmlinux",
    "kallsyms",
];

/// What `aptrace live` makes of the preflight table before it loads anything: the warnings
/// it prints about the host (each with its fix), or, when a line fails, the error that stops
/// it (exit 2) naming every failing line and its fix. `self_test` (the hidden
/// `--text-range`, allocator tracepoints only) runs without kprobes.
pub fn live_gate(rows: &[Row], self_test: bool) -> Result<Vec<String>, String> {
    let line = |r: &Row| {
        if r.fix.is_empty() {
            format!("{}: {}", r.item, r.detail)
        } else {
            format!("{}: {}\n  → {}", r.item, r.detail, r.fix)
        }
    };
    let fatal = |r: &&Row| r.status == Status::Fail && !(self_test && r.item == "kprobes");
    let failed: Vec<String> = rows.iter().filter(fatal).map(line).collect();
    let warnings: Vec<String> = rows
        .iter()
        .filter(|r| r.status != Status::Ok && r.status != Status::Info && !fatal(r))
        .filter(|r| ENVIRONMENT.contains(&r.item.as_str()))
        .map(line)
        .collect();
    if failed.is_empty() {
        return Ok(warnings);
    }
    let mut e = format!(
        "live tracing cannot run here (`aptrace check` shows every line):\n{}",
        failed.join("\n")
    );
    if !warnings.is_empty() {
        e.push_str(&format!("\nand, once it can:\n{}", warnings.join("\n")));
    }
    Err(e)
}

/// `aptrace check` on this host: the preflight table as text or JSON, and its exit status
/// (0 can trace, possibly degraded; 2 cannot).
pub fn check_host(
    target: &super::resolve::TargetOptions,
    json: bool,
) -> Result<(String, u8), super::resolve::TargetError> {
    let (profile, module) = target.resolve()?;
    let host = Host::live();
    #[cfg(all(feature = "live", target_os = "linux"))]
    let probed =
        crate::live::agent::probe_features(target.overrides.lock_reads_on(&host.kernel_release()));
    #[cfg(not(all(feature = "live", target_os = "linux")))]
    let probed = Probed::default();
    let config = crate::live::kernel_config(&host);
    let (rows, _) = preflight(
        &host,
        &profile,
        &module,
        &target.overrides,
        &probed,
        config.as_deref(),
        &crate::live::machine(),
        true,
    );
    let text = if json { to_json(&rows) } else { to_text(&rows) };
    Ok((text, exit_code(&rows)))
}

/// 0 when live tracing can run (possibly degraded), 2 when it cannot.
pub fn exit_code(rows: &[Row]) -> u8 {
    if rows.iter().any(|r| r.status == Status::Fail) {
        2
    } else {
        0
    }
}

pub fn to_text(rows: &[Row]) -> String {
    let w = rows
        .iter()
        .map(|r| r.item.chars().count())
        .max()
        .unwrap_or(0);
    let mut out = String::new();
    for r in rows {
        let _ = writeln!(out, "{:<4}  {:<w$}  {}", r.status.label(), r.item, r.detail);
        if !r.fix.is_empty() {
            let _ = writeln!(out, "{:<4}  {:<w$}  → {}", "", "", r.fix);
        }
    }
    let verdict = match exit_code(rows) {
        0 if rows.iter().any(|r| r.status == Status::Warn) => {
            "live tracing can run, degraded (see WARN lines)"
        }
        0 => "live tracing can run",
        _ => "live tracing cannot run here (see FAIL lines)",
    };
    let _ = writeln!(out, "\n{verdict}");
    out
}

pub fn to_json(rows: &[Row]) -> String {
    #[derive(Serialize)]
    struct J<'a> {
        schema: &'static str,
        can_trace: bool,
        rows: &'a [Row],
    }
    serde_json::to_string_pretty(&J {
        schema: "aptrace-check/1",
        can_trace: exit_code(rows) == 0,
        rows,
    })
    .expect("serializable")
}

/// One row per declared lock besides the probed one: how many entries read its owner word,
/// or why none can (its order edges then come from the profile's `holds` only).
fn lock_read_rows(res: &Resolution) -> Vec<Row> {
    res.locks
        .iter()
        .map(|l| {
            let item = format!("lock {}", l.name);
            match &l.read {
                Ok(r) => {
                    let n = res
                        .targets
                        .iter()
                        .filter(|t| {
                            t.locks[..usize::from(t.config.lock_reads).min(t.locks.len())]
                                .iter()
                                .any(|x| x.id == r.id)
                        })
                        .count();
                    let detail = if n > 0 {
                        format!("owner word read at the entry of {n} functions (lock-order edges)")
                    } else if !res.lock_reads_on {
                        "owner word placed, not read: --lock-reads off, or auto on a kernel before 6.1 (its verifier is untried with the reads)".to_string()
                    } else {
                        "owner word placed, read at no entry: no function that takes a lock can reach it, or no profiled function takes it and it ranks before what they take (an edge from it could close no cycle and break no documented order)".to_string()
                    };
                    row(
                        item,
                        if n > 0 { Status::Ok } else { Status::Info },
                        detail,
                        "",
                    )
                }
                Err(_) if !res.loaded => row(
                    item,
                    Status::Info,
                    format!("resolved when module {} loads", res.module),
                    "",
                ),
                Err(e) => row(
                    item,
                    Status::Info,
                    format!("owner word not read ({e}): its lock-order edges come from the profile's holds only"),
                    "--offset STRUCT.MEMBER=N for its path's members, where BTF lacks them",
                ),
            }
        })
        .collect()
}
