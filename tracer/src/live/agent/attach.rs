//! Attaching the probes to one load of the module. The links are owned: dropping an
//! [`Attachment`] detaches every probe.
//!
//! Where the kernel has attach cookies (5.15+) and a BPF JIT, every function is attached to
//! the same two programs (`enter_any`, `leave_any`), the cookie naming its slot: the kernel
//! verifies two programs instead of two per function. Elsewhere each slot has its own pair
//! (`enter_NN`, `leave_NN`): without a JIT the cookie's lookup would cost every call.

use std::os::fd::{AsFd, OwnedFd};
use std::sync::Arc;

use aya::maps::{Array, MapData};
use aya::programs::kprobe::KProbeLink;
use aya::programs::raw_trace_point::RawTracePointLink;
use aya::programs::{KProbe, RawTracePoint};
use aya::Ebpf;
use tracer_common as abi;

use super::error::{error_chain, LiveError, Result};
use super::loader::prepare;
use crate::live::follow::{function_status, missing_statuses, slotted};
use crate::live::host::Host;
use crate::live::losses::{ENTRY_PROGRAM, EXIT_PROGRAM};
use crate::live::perflink::{self, CookieLink, KprobePmu};
use crate::live::resolve::Resolution;
use crate::recording::ProbeStatus;

/// The allocator tracepoints of `--all-allocations`, by program.
pub const RAW_TRACEPOINTS: &[(&str, &[&str])] = &[
    ("kmalloc", &["kmalloc", "kmalloc_node"]),
    (
        "kmem_cache_alloc",
        &["kmem_cache_alloc", "kmem_cache_alloc_node"],
    ),
    ("kfree", &["kfree"]),
    ("kmem_cache_free", &["kmem_cache_free"]),
];

/// The probes attached for one load of the module.
pub struct Attachment {
    kprobes: Vec<KProbeLink>,
    cookie_links: Vec<CookieLink>,
    tracepoints: Vec<RawTracePointLink>,
    /// The module's identity: its .text address.
    pub identity: String,
    pub resolution: Arc<Resolution>,
    pub statuses: Vec<ProbeStatus>,
}

fn attach_kprobe(
    ebpf: &mut Ebpf,
    prog: &str,
    target: &str,
    timing: &mut AttachTiming,
) -> Result<Result<KProbeLink, String>> {
    let t0 = std::time::Instant::now();
    let prepared = prepare(ebpf, prog);
    timing.load += t0.elapsed();
    let kp: &mut KProbe = prepared?.try_into().map_err(|source| LiveError::Program {
        name: prog.to_string(),
        source,
    })?;
    let t1 = std::time::Instant::now();
    let r = match kp.attach(target, 0) {
        Ok(id) => kp.take_link(id).map_err(|e| e.to_string()),
        Err(e) => Err(format!("{e}: {}", error_chain(&e))),
    };
    timing.attach += t1.elapsed();
    timing.kprobes += 1;
    Ok(r)
}

/// The shared entry and return programs, loaded, with the kprobe PMU to attach them by.
struct CookiePrograms {
    pmu: KprobePmu,
    enter: OwnedFd,
    leave: OwnedFd,
}

/// The names of [`CookiePrograms`]' programs.
const ENTRY_ANY: &str = "enter_any";
const EXIT_ANY: &str = "leave_any";

/// Loads the shared programs; None (and why, in the debug log) where this kernel
/// interprets BPF ([`Host::jits_bpf`]) or cannot run them: no kprobe PMU in
/// sysfs, or a verifier that does not know `bpf_get_attach_cookie` (before 5.15).
fn cookie_programs(ebpf: &mut Ebpf, timing: &mut AttachTiming) -> Option<CookiePrograms> {
    if !Host::live().jits_bpf() {
        log::debug!(
            "attach cookies unused: this kernel interprets BPF; one program pair per function"
        );
        return None;
    }
    let pmu = match KprobePmu::read() {
        Ok(p) => p,
        Err(e) => {
            log::debug!("attach cookies: {e}; one program pair per function");
            return None;
        }
    };
    let mut fd = |name: &str| -> std::result::Result<OwnedFd, String> {
        let t0 = std::time::Instant::now();
        let prepared = prepare(ebpf, name);
        timing.load += t0.elapsed();
        let kp: &mut KProbe = prepared
            .map_err(|e| e.to_string())?
            .try_into()
            .map_err(|e: aya::programs::ProgramError| e.to_string())?;
        let fd = kp.fd().map_err(|e| e.to_string())?;
        fd.as_fd().try_clone_to_owned().map_err(|e| e.to_string())
    };
    match (fd(ENTRY_ANY), fd(EXIT_ANY)) {
        (Ok(enter), Ok(leave)) => Some(CookiePrograms { pmu, enter, leave }),
        (Err(e), _) | (_, Err(e)) => {
            log::debug!("attach cookies: {e}; one program pair per function");
            None
        }
    }
}

fn attach_cookie(
    c: &CookiePrograms,
    ret: bool,
    target: &str,
    slot: usize,
    timing: &mut AttachTiming,
) -> std::result::Result<CookieLink, String> {
    let t0 = std::time::Instant::now();
    let prog = if ret { &c.leave } else { &c.enter };
    let r = perflink::attach(c.pmu, prog.as_fd(), target, ret, slot as u64)
        .map_err(|e| format!("{}probe on {target}: {e}", if ret { "kret" } else { "k" }));
    timing.attach += t0.elapsed();
    timing.kprobes += 1;
    r
}

/// Where attach time goes: the kernel's verifier (program load) or kprobe registration.
#[derive(Default)]
struct AttachTiming {
    load: std::time::Duration,
    attach: std::time::Duration,
    kprobes: usize,
}

/// Writes the configuration and attaches every probe `res` found; what could not attach
/// is in the statuses.
pub fn attach(
    ebpf: &mut Ebpf,
    res: Arc<Resolution>,
    all_allocations: bool,
    identity: String,
) -> Result<Attachment> {
    let mut kprobes = Vec::new();
    let mut tracepoints = Vec::new();
    let mut timing = AttachTiming::default();
    let (targets, mut statuses) = slotted(&res.targets);
    let mut config = abi::ProbeConfig {
        global: res.global_config(all_allocations),
        ..abi::ProbeConfig::OFF
    };
    for (slot, t) in targets.iter().enumerate() {
        config.slots[slot] = abi::SlotConfig {
            addr: t.addr,
            func: t.config,
            path: t.path,
            locks: t.locks,
        };
    }
    // Written before any probe attaches: a probe never sees its slot half set up.
    write_config(ebpf, config)?;
    let mut cookie = if targets.is_empty() {
        None
    } else {
        cookie_programs(ebpf, &mut timing)
    };
    let mut cookie_links = Vec::new();
    for (slot, t) in targets.iter().enumerate() {
        let mut failed = None;
        for (prefix, ret) in [(ENTRY_PROGRAM, false), (EXIT_PROGRAM, true)] {
            if let Some(c) = &cookie {
                match attach_cookie(c, ret, &t.attach_name, slot, &mut timing) {
                    Ok(link) => {
                        cookie_links.push(link);
                        continue;
                    }
                    // The slot's own program decides: if it attaches, the kernel refused
                    // the cookie link, not the function (a kernel without perf links).
                    Err(e) => log::debug!("{e}; trying {prefix}{slot:02}"),
                }
            }
            match attach_kprobe(
                ebpf,
                &format!("{prefix}{slot:02}"),
                &t.attach_name,
                &mut timing,
            )? {
                Ok(link) => {
                    kprobes.push(link);
                    if cookie.take().is_some() {
                        log::debug!("attach cookies refused: one program pair per function");
                    }
                }
                Err(e) => failed = Some(e),
            }
        }
        statuses.push(function_status(t, failed));
    }
    statuses.extend(missing_statuses(&res));
    if all_allocations {
        for (prog, tps) in RAW_TRACEPOINTS {
            let rt: &mut RawTracePoint =
                prepare(ebpf, prog)?
                    .try_into()
                    .map_err(|source| LiveError::Program {
                        name: prog.to_string(),
                        source,
                    })?;
            for tp in *tps {
                match rt.attach(tp).and_then(|id| rt.take_link(id)) {
                    Ok(link) => tracepoints.push(link),
                    Err(e) => log::debug!("raw tracepoint {tp}: {e}"),
                }
            }
        }
        // The return probe first: the kernel runs the probes of one address newest first,
        // and the kretprobe's own entry handler replaces the return address (on the stack,
        // or r14 on s390x) by its trampoline; kvmalloc_enter reads the caller from there,
        // so it must run before that handler (else a kvzalloc from the driver is not seen
        // as the driver's, and its kvfree is an unknown free).
        let kvm: [(&str, Option<&String>); 4] = [
            ("kvmalloc_leave", res.kvmalloc.as_ref()),
            ("kvmalloc_enter", res.kvmalloc.as_ref()),
            ("vfree_enter", res.vfree.as_ref()),
            ("kvfree_enter", res.kvfree.as_ref()),
        ];
        for (prog, target) in kvm {
            let Some(target) = target else {
                log::warn!("--all-allocations: no kernel function for {prog}");
                continue;
            };
            match attach_kprobe(ebpf, prog, target, &mut timing)? {
                Ok(link) => kprobes.push(link),
                Err(e) => log::warn!("--all-allocations: {prog} on {target}: {e}"),
            }
        }
    }
    log::debug!(
        "attach: {} kprobes, program loads {:?}, kprobe attaches {:?}",
        timing.kprobes,
        timing.load,
        timing.attach
    );
    Ok(Attachment {
        kprobes,
        cookie_links,
        tracepoints,
        identity,
        resolution: res,
        statuses,
    })
}

impl Attachment {
    /// Detaches every probe (dropping the links) and switches every slot off; the
    /// configuration is written whole again on the next attach.
    pub fn detach(self, ebpf: &mut Ebpf) {
        drop(self.kprobes);
        drop(self.cookie_links);
        drop(self.tracepoints);
        if let Err(e) = write_config(ebpf, abi::ProbeConfig::OFF) {
            log::warn!("switching the probes' slots off: {e}");
        }
    }
}

/// The eBPF object's global variable `APTRACE_CONFIG`, which is its `.bss` map's one value.
const CONFIG_MAP: &str = ".bss";

/// Writes `config` whole, but for the part the probes write (the tracked hint): that is
/// kept as it is. TRACKED outlives an attachment (a re-attach when another module of the
/// profile loads keeps the traced module and its allocations), so its hint must too, or
/// the free of a pointer tracked before, from outside the module's text, would be
/// skipped. Called with no allocator probe attached, so no probe's mark is lost between
/// the read and the write.
fn write_config(ebpf: &mut Ebpf, mut config: abi::ProbeConfig) -> Result<()> {
    let mut bss: Array<&mut MapData, abi::ProbeConfig> = Array::try_from(
        ebpf.map_mut(CONFIG_MAP)
            .ok_or(LiveError::NoMap(CONFIG_MAP))?,
    )
    .map_err(LiveError::map(CONFIG_MAP))?;
    let now = bss.get(&0, 0).map_err(LiveError::map(CONFIG_MAP))?;
    keep_probes_part(&mut config, &now);
    bss.set(0, config, 0).map_err(LiveError::map(CONFIG_MAP))
}

/// Carries what the probes wrote in `now` over into `config`.
fn keep_probes_part(config: &mut abi::ProbeConfig, now: &abi::ProbeConfig) {
    config.tracked_hint = now.tracked_hint;
    config.tracked_any = now.tracked_any;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_new_configuration_keeps_the_tracked_hint() {
        let mut now = abi::ProbeConfig::OFF;
        now.tracked_hint[abi::tracked_bucket(0xffff_8880_0123_4540)] = 1;
        now.tracked_any = 1;
        let mut config = abi::ProbeConfig::OFF;
        config.global.text_start = 0x1000;
        keep_probes_part(&mut config, &now);
        assert_eq!(config.tracked_any, 1);
        assert_eq!(config.tracked_hint, now.tracked_hint);
        assert_eq!(config.global.text_start, 0x1000);
    }
}
