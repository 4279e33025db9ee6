//! Loading the embedded eBPF object, and the feature probes `check` and the gate need.

use std::collections::HashSet;
use std::sync::Arc;

use super::error::{error_chain, LiveError, Result};
use aya::programs::{KProbe, RawTracePoint};
use aya::{Ebpf, EbpfLoader};

use crate::live::check::Probed;
use crate::live::follow::load_identity;
use crate::live::host::Host;
use crate::live::options::{ring_buffer_bytes, LiveOptions, Preflight};
use crate::live::output::{say, Output};

/// The eBPF object built by build.rs (bpfel or bpfeb with the target's bpf_target_arch).
static EBPF_OBJECT: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/tracer"));

pub fn object_present() -> Result<(), String> {
    if EBPF_OBJECT.is_empty() {
        Err("this aptrace was built with AYA_BUILD_SKIP: it carries no eBPF object".into())
    } else {
        Ok(())
    }
}

fn bump_memlock() {
    let rlim = libc::rlimit {
        rlim_cur: libc::RLIM_INFINITY,
        rlim_max: libc::RLIM_INFINITY,
    };
    // SAFETY: a valid rlimit pointer. Kernels before 5.11 charge BPF maps to memlock.
    if unsafe { libc::setrlimit(libc::RLIMIT_MEMLOCK, &rlim) } != 0 {
        log::debug!("setrlimit(RLIMIT_MEMLOCK) failed; kernels >= 5.11 do not need it");
    }
}

/// Loads the object with the ring buffer sized; programs are loaded (verified) when first
/// attached (`prepare`), except those named in `eager`: the kernel verifies each one, and
/// under an emulated s390x without a JIT loading all 64 function slots took seconds. The
/// entries' reads of the other declared locks are compiled in when `lock_reads`
/// (the object's `LOCK_READS`; off, the verifier drops their code). Where this kernel's
/// verifier refuses the entry programs with them (6.1's gives up on their paths: "BPF program
/// is too large"), loads without them and says why in the second value.
pub fn load_with_lock_reads(
    ring_buffer_size: u32,
    eager: &[&str],
    lock_reads: bool,
) -> Result<(Ebpf, Option<String>)> {
    object_present().map_err(LiveError::Refused)?;
    bump_memlock();
    let ring = ring_buffer_bytes(ring_buffer_size);
    // A record forces a wakeup once an eighth of the ring waits (the probes' `WAKE_AT`).
    let wake_at = u64::from(ring / 8);
    let open = |reads: u8| {
        EbpfLoader::new()
            .map_max_entries("EVENTS", ring)
            .override_global("LOCK_READS", &reads, true)
            .override_global("WAKE_AT", &wake_at, true)
            .load(EBPF_OBJECT)
            .map_err(|e| LiveError::Load(Box::new(e)).with_permission_hint())
    };
    let mut refused = None;
    if lock_reads {
        let mut ebpf = open(1)?;
        // Every function slot runs the same entry code: one verified is all verified. The
        // shared program first where attach will use it (a JIT; one verification fewer);
        // a kernel that refuses it (before 5.15) is asked about a slot's own.
        let shared = Host::live().jits_bpf() && prepare(&mut ebpf, "enter_any").is_ok();
        let verdict = if shared {
            Ok(())
        } else {
            prepare(&mut ebpf, "enter_00").map(|_| ())
        };
        match verdict {
            Ok(()) => {
                for name in eager {
                    prepare(&mut ebpf, name).map_err(LiveError::with_permission_hint)?;
                }
                return Ok((ebpf, None));
            }
            Err(e) => refused = Some(verifier_reason(&crate::error_text(&e))),
        }
    }
    let mut ebpf = open(0)?;
    for name in eager {
        prepare(&mut ebpf, name).map_err(LiveError::with_permission_hint)?;
    }
    if refused.is_some() {
        // Refused for another reason than the reads (privileges, say): that error, not a
        // fallback.
        prepare(&mut ebpf, "enter_00").map_err(LiveError::with_permission_hint)?;
    }
    Ok((ebpf, refused))
}

/// A verifier's refusal in one line: its error without the log, and the log's verdict when it
/// gave up on the program's size.
fn verifier_reason(s: &str) -> String {
    let first = s.lines().next().unwrap_or(s);
    let first = first.split(". Verifier output").next().unwrap_or(first);
    match s.lines().find(|l| l.contains("BPF program is too large")) {
        Some(v) => format!("{first}: {}", v.trim()),
        None => first.to_string(),
    }
}

/// Loads one program unless it is loaded already.
pub fn prepare<'a>(ebpf: &'a mut Ebpf, name: &str) -> Result<&'a mut aya::programs::Program> {
    let prog = ebpf
        .program_mut(name)
        .ok_or_else(|| LiveError::NoProgram(name.to_string()))?;
    let r = match prog {
        aya::programs::Program::KProbe(p) => p.load(),
        aya::programs::Program::RawTracePoint(p) => p.load(),
        _ => Ok(()),
    };
    match r {
        Ok(()) | Err(aya::programs::ProgramError::AlreadyLoaded) => {}
        Err(source) => {
            return Err(LiveError::Program {
                name: name.to_string(),
                source,
            })
        }
    }
    Ok(prog)
}

fn ringbuf_supported() -> Result<bool, String> {
    aya::sys::is_map_supported(aya::maps::MapType::RingBuf).map_err(|e| e.to_string())
}

/// Before `aptrace live` loads anything: the preflight table's lines about this host. Its
/// warnings are said (tracefs, BTF, ...); a failing line (no privileges, no kprobes, no
/// ring buffer) stops it with an error naming the fix. Returns what it resolved, for the
/// agent's first attach to the same module load.
pub fn gate(opts: &LiveOptions, out: &Output) -> Result<Option<Preflight>> {
    let host = Host::live();
    let identity = load_identity(&host, &opts.profile, &opts.module, &opts.overrides);
    let mut probed = Probed {
        live_support: object_present(),
        ..Default::default()
    };
    if probed.live_support.is_ok() {
        probed.ringbuf = Some(ringbuf_supported());
    }
    let config = crate::live::kernel_config(&host);
    let (rows, resolution) = crate::live::check::preflight(
        &host,
        &opts.profile,
        &opts.module,
        &opts.overrides,
        &probed,
        config.as_deref(),
        &crate::live::machine(),
        false,
    );
    let warnings =
        crate::live::check::live_gate(&rows, opts.self_test()).map_err(LiveError::Refused)?;
    for w in warnings {
        say!(out, "aptrace: warning: {w}");
    }
    Ok(identity.map(|identity| Preflight {
        identity,
        resolution: Arc::new(resolution),
    }))
}

/// `check`'s probes that need the bpf syscall: load, ring buffer, a kprobe and a raw
/// tracepoint actually attached and detached.
/// `lock_reads`: whether the agent would load the reads on this kernel (as it loads them).
pub fn probe_features(lock_reads: bool) -> Probed {
    let mut p = Probed {
        live_support: object_present(),
        ..Default::default()
    };
    if p.live_support.is_err() {
        return p;
    }
    p.ringbuf = Some(ringbuf_supported());
    let mut ebpf = match load_with_lock_reads(4096, &["enter_00", "kfree"], lock_reads) {
        Ok((e, _)) => {
            p.load = Some(Ok(()));
            e
        }
        Err(e) => {
            p.load = Some(Err(crate::error_text(&e)));
            return p;
        }
    };
    let kp: Result<&mut KProbe, _> = ebpf.program_mut("enter_00").expect("enter_00").try_into();
    let mut kernel_miss_count = None;
    p.kprobe_attach = Some(match kp {
        Ok(kp) => kp
            .attach("vfs_read", 0)
            .and_then(|id| {
                // While attached: does its link report the kernel's miss count (6.7+)?
                if let Ok(info) = kp.info() {
                    let ids = HashSet::from([info.id()]);
                    if let Ok(found) = crate::live::linkinfo::kprobe_missed(&ids) {
                        kernel_miss_count = Some(found.is_some());
                    }
                }
                kp.detach(id)
            })
            .map_err(|e| format!("{e}: {}", error_chain(&e))),
        Err(e) => Err(e.to_string()),
    });
    p.kernel_miss_count = kernel_miss_count;
    let rt: Result<&mut RawTracePoint, _> = ebpf.program_mut("kfree").expect("kfree").try_into();
    p.raw_tracepoint = Some(match rt {
        Ok(rt) => rt
            .attach("kfree")
            .and_then(|id| rt.detach(id))
            .map_err(|e| e.to_string()),
        Err(e) => Err(e.to_string()),
    });
    p
}

#[cfg(test)]
mod tests {
    use super::verifier_reason;

    /// What 6.1's verifier printed for the entry program with the four lock reads: one line
    /// with the error and the verdict, not the thousand lines of its log.
    #[test]
    fn a_refusal_is_one_line_with_the_verdict() {
        let text = "loading eBPF program enter_00: the BPF_PROG_LOAD syscall returned Argument list too long (os error 7). Verifier output: reg type unsupported for arg#0 function enter_00#15\n0: R1=ctx(off=0,imm=0) R10=fp0\n; pub fn $enter(ctx: ProbeContext) -> u32 {\nBPF program is too large. Processed 1000001 insn\nverification time 47914121 usec\n";
        assert_eq!(
            verifier_reason(text),
            "loading eBPF program enter_00: the BPF_PROG_LOAD syscall returned Argument list too long (os error 7): BPF program is too large. Processed 1000001 insn"
        );
        assert_eq!(verifier_reason("permission denied"), "permission denied");
    }
}
