//! The live agent: loads the embedded eBPF object with aya, follows the module (waits for it,
//! re-attaches after rmmod + insmod), reads the ring buffer through tokio's AsyncFd, decodes
//! records and feeds the one pipeline; SIGINT/SIGTERM detach, finish the recording and
//! print the summary.

use std::collections::{HashMap, HashSet};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{anyhow, Context, Result};
use aya::maps::{Array, MapData, PerCpuArray, RingBuf, StackTraceMap};
use aya::programs::kprobe::KProbeLinkId;
use aya::programs::raw_trace_point::RawTracePointLinkId;
use aya::programs::{KProbe, RawTracePoint};
use aya::{Ebpf, EbpfLoader};
use tokio::io::unix::AsyncFd;
use tokio::signal::unix::{signal, SignalKind};
use tracer_common as abi;

use super::check::Probed;
use super::host::{guest_name_from_cmdline, Host};
use super::kallsyms::Kallsyms;
use super::resolve::{resolve, Overrides, Resolution};
use super::sink::{GuestFilter, LiveFormat, PrintSink};
use crate::audit::Auditor;
use crate::model::{decode_record, Body, Endian, Event, LossSource, Symbolizer, Task};
use crate::pipeline::Pipeline;
use crate::profile::{Profile, Role};
use crate::recording::{Header, ProbeState, ProbeStatus, Writer};
use crate::report::{FileReport, Report, SourceInfo};

/// The eBPF object built by build.rs (bpfel or bpfeb with the target's bpf_target_arch).
static EBPF_OBJECT: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/tracer"));

pub fn object_present() -> Result<(), String> {
    if EBPF_OBJECT.is_empty() {
        Err("this aptrace was built with AYA_BUILD_SKIP: it carries no eBPF object".into())
    } else {
        Ok(())
    }
}

/// Set while the terminal UI owns the screen: the agent's messages go to the log instead.
pub static QUIET: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

macro_rules! say {
    ($($t:tt)*) => {
        if QUIET.load(std::sync::atomic::Ordering::Relaxed) {
            log::info!($($t)*)
        } else {
            eprintln!($($t)*)
        }
    };
}

/// What `aptrace live` was asked to do.
#[derive(Clone, Debug)]
pub struct LiveOptions {
    pub record: Option<PathBuf>,
    pub json: Option<PathBuf>,
    pub format: LiveFormat,
    pub duration: Option<Duration>,
    pub guest: Option<GuestFilter>,
    pub module: String,
    pub profile: Profile,
    pub all_allocations: bool,
    pub ring_buffer_size: u32,
    pub force: bool,
    pub overrides: Overrides,
    /// `--metrics ADDR`: serve Prometheus metrics there.
    pub metrics: Option<String>,
    /// `--tui`: every event also goes to the terminal UI, and nothing is printed.
    pub forward: Option<std::sync::mpsc::Sender<Event>>,
    /// Set by the terminal UI when the user quits.
    pub stop: Option<Arc<std::sync::atomic::AtomicBool>>,
}

const ENTRY_PROGRAM: &str = "enter_";
/// Records decoded per wake-up of the ring buffer before the loop looks at its timers.
const DRAIN_BATCH: usize = 4096;
const EXIT_PROGRAM: &str = "leave_";
const RAW_TRACEPOINTS: &[(&str, &[&str])] = &[
    ("kmalloc", &["kmalloc", "kmalloc_node"]),
    (
        "kmem_cache_alloc",
        &["kmem_cache_alloc", "kmem_cache_alloc_node"],
    ),
    ("kfree", &["kfree"]),
    ("kmem_cache_free", &["kmem_cache_free"]),
];

fn native_endian() -> Endian {
    if cfg!(target_endian = "big") {
        Endian::Big
    } else {
        Endian::Little
    }
}

fn clock_ns(clock: libc::clockid_t) -> i64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: a valid timespec pointer.
    unsafe { libc::clock_gettime(clock, &mut ts) };
    ts.tv_sec * 1_000_000_000 + ts.tv_nsec
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
/// under an emulated s390x without a JIT loading all 64 function slots took seconds.
pub fn load(ring_buffer_size: u32, eager: &[&str]) -> Result<Ebpf> {
    object_present().map_err(|e| anyhow!(e))?;
    bump_memlock();
    let size = ring_buffer_size.max(4096).next_power_of_two();
    let page = 4096u32;
    let size = size.max(page);
    let mut ebpf = EbpfLoader::new()
        .map_max_entries("EVENTS", size)
        .load(EBPF_OBJECT)
        .map_err(|e| permission_hint(anyhow::Error::new(e).context("loading the eBPF object")))?;
    for name in eager {
        prepare(&mut ebpf, name).map_err(permission_hint)?;
    }
    Ok(ebpf)
}

/// A refusal by the bpf syscall names what to do about it.
fn permission_hint(e: anyhow::Error) -> anyhow::Error {
    if super::check::is_permission_error(&format!("{e:#}")) {
        e.context("not permitted to use BPF (run as root, or with CAP_BPF and CAP_PERFMON)")
    } else {
        e
    }
}

/// Before `aptrace live` loads anything: the preflight table's lines about this host. Its
/// warnings are printed (tracefs, BTF, ...); a failing line (no privileges, no kprobes, no
/// ring buffer) stops it with an error naming the fix.
pub fn gate(opts: &LiveOptions) -> Result<()> {
    let host = Host::live();
    let mut probed = Probed {
        live_support: object_present(),
        ..Default::default()
    };
    if probed.live_support.is_ok() {
        probed.ringbuf = Some(
            aya::sys::is_map_supported(aya::maps::MapType::RingBuf).map_err(|e| e.to_string()),
        );
    }
    let config = super::kernel_config(&host);
    let (rows, _) = super::check::preflight(
        &host,
        &opts.profile,
        &opts.module,
        &opts.overrides,
        &probed,
        config.as_deref(),
        &super::machine(),
    );
    let self_test = opts.overrides.text_range.is_some() && opts.all_allocations;
    match super::check::live_gate(&rows, self_test) {
        Ok(warnings) => {
            for w in warnings {
                say!("aptrace: warning: {w}");
            }
            Ok(())
        }
        Err(e) => Err(anyhow!(e)),
    }
}

/// Loads one program unless it is loaded already.
fn prepare<'a>(ebpf: &'a mut Ebpf, name: &str) -> Result<&'a mut aya::programs::Program> {
    let prog = ebpf
        .program_mut(name)
        .with_context(|| format!("no eBPF program {name}"))?;
    let r = match prog {
        aya::programs::Program::KProbe(p) => p.load(),
        aya::programs::Program::RawTracePoint(p) => p.load(),
        _ => Ok(()),
    };
    match r {
        Ok(()) | Err(aya::programs::ProgramError::AlreadyLoaded) => {}
        Err(e) => return Err(e).with_context(|| format!("loading eBPF program {name}")),
    }
    Ok(prog)
}

/// `check`'s probes that need the bpf syscall: load, ring buffer, a kprobe and a raw
/// tracepoint actually attached and detached.
pub fn probe_features() -> Probed {
    let mut p = Probed {
        live_support: object_present(),
        ..Default::default()
    };
    if p.live_support.is_err() {
        return p;
    }
    p.ringbuf =
        Some(aya::sys::is_map_supported(aya::maps::MapType::RingBuf).map_err(|e| e.to_string()));
    let mut ebpf = match load(4096, &["enter_00", "kfree"]) {
        Ok(e) => {
            p.load = Some(Ok(()));
            e
        }
        Err(e) => {
            p.load = Some(Err(format!("{e:#}")));
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
                    if let Ok(found) = super::linkinfo::kprobe_missed(&ids) {
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

fn error_chain(e: &dyn std::error::Error) -> String {
    let mut parts = Vec::new();
    let mut cur = e.source();
    while let Some(s) = cur {
        parts.push(s.to_string());
        cur = s.source();
    }
    parts.join(": ")
}

enum Link {
    K(String, KProbeLinkId),
    R(String, RawTracePointLinkId),
}

/// The probes attached for one load of the module.
struct Attachment {
    links: Vec<Link>,
    /// The module's identity: its .text address.
    identity: String,
    resolution: Arc<Resolution>,
    statuses: Vec<ProbeStatus>,
}

fn module_identity(host: &Host, module: &str, ov: &Overrides) -> Option<String> {
    if !host.module_live(module) {
        // Self-test without the module: allocator probes over a given text range.
        return ov
            .text_range
            .map(|(a, b)| format!("text-range {a:#x}-{b:#x}"));
    }
    Some(
        host.read_string(&format!("/sys/module/{module}/sections/.text"))
            .map(|s| s.trim().to_string())
            .unwrap_or_else(|| "live".to_string()),
    )
}

fn attach(
    ebpf: &mut Ebpf,
    res: Arc<Resolution>,
    opts: &LiveOptions,
    identity: String,
) -> Result<Attachment> {
    let mut statuses = Vec::new();
    let mut links = Vec::new();
    {
        let mut cfg: Array<&mut MapData, abi::GlobalConfig> =
            Array::try_from(ebpf.map_mut("CONFIG").context("map CONFIG")?)?;
        cfg.set(0, res.global_config(opts.all_allocations), 0)?;
    }
    let targets: Vec<_> = res
        .targets
        .iter()
        .take(abi::FUNC_SLOTS as usize)
        .cloned()
        .collect();
    for t in res.targets.iter().skip(abi::FUNC_SLOTS as usize) {
        statuses.push(ProbeStatus {
            name: t.name.clone(),
            state: ProbeState::Failed,
            detail: format!("more than {} functions in the profile", abi::FUNC_SLOTS),
        });
    }
    for (slot, t) in targets.iter().enumerate() {
        {
            let mut fc: Array<&mut MapData, abi::FuncConfig> =
                Array::try_from(ebpf.map_mut("FUNC_CONFIG").context("map FUNC_CONFIG")?)?;
            fc.set(slot as u32, t.config, 0)?;
            let mut slots: Array<&mut MapData, u64> = Array::try_from(
                ebpf.map_mut("FUNC_SLOTS_MAP")
                    .context("map FUNC_SLOTS_MAP")?,
            )?;
            slots.set(slot as u32, t.addr, 0)?;
        }
        let mut failed = None;
        for prefix in [ENTRY_PROGRAM, EXIT_PROGRAM] {
            let name = format!("{prefix}{slot:02}");
            let kp: &mut KProbe = prepare(ebpf, &name)?.try_into()?;
            match kp.attach(&t.attach_name, 0) {
                Ok(id) => links.push(Link::K(name, id)),
                Err(e) => failed = Some(format!("{e}: {}", error_chain(&e))),
            }
        }
        statuses.push(ProbeStatus {
            name: t.name.clone(),
            state: match (&failed, t.clone) {
                (Some(_), _) => ProbeState::Failed,
                (None, true) => ProbeState::Clone,
                (None, false) => ProbeState::Attached,
            },
            detail: failed.unwrap_or_else(|| {
                let mut d = if t.clone {
                    format!(
                        "attached to {} (compiler clone: arguments untrusted)",
                        t.attach_name
                    )
                } else {
                    String::new()
                };
                if let Some(p) = &t.field_problem {
                    d.push_str(&format!("field read off: {p}"));
                }
                d
            }),
        });
    }
    for (name, _, msg) in &res.missing {
        statuses.push(ProbeStatus {
            name: name.clone(),
            state: ProbeState::Missing,
            detail: msg.clone(),
        });
    }
    if opts.all_allocations {
        for (prog, tps) in RAW_TRACEPOINTS {
            let rt: &mut RawTracePoint = prepare(ebpf, prog)?.try_into()?;
            for tp in *tps {
                match rt.attach(tp) {
                    Ok(id) => links.push(Link::R(prog.to_string(), id)),
                    Err(e) => log::debug!("raw tracepoint {tp}: {e}"),
                }
            }
        }
        let kprobes: [(&str, Option<&String>); 4] = [
            ("kvmalloc_enter", res.kvmalloc.as_ref()),
            ("kvmalloc_leave", res.kvmalloc.as_ref()),
            ("vfree_enter", res.vfree.as_ref()),
            ("kvfree_enter", res.kvfree.as_ref()),
        ];
        for (prog, target) in kprobes {
            let Some(target) = target else {
                log::warn!("--all-allocations: no kernel function for {prog}");
                continue;
            };
            let kp: &mut KProbe = prepare(ebpf, prog)?.try_into()?;
            match kp.attach(target, 0) {
                Ok(id) => links.push(Link::K(prog.to_string(), id)),
                Err(e) => log::warn!("--all-allocations: {prog} on {target}: {e}"),
            }
        }
    }
    Ok(Attachment {
        links,
        identity,
        resolution: res,
        statuses,
    })
}

fn detach(ebpf: &mut Ebpf, a: Attachment) {
    for l in a.links {
        let r = match l {
            Link::K(name, id) => ebpf
                .program_mut(&name)
                .and_then(|p| <&mut KProbe>::try_from(p).ok())
                .map(|p| p.detach(id)),
            Link::R(name, id) => ebpf
                .program_mut(&name)
                .and_then(|p| <&mut RawTracePoint>::try_from(p).ok())
                .map(|p| p.detach(id)),
        };
        if let Some(Err(e)) = r {
            log::debug!("detach: {e}");
        }
    }
    // A zero address switches a slot's programs off; its config is rewritten on attach.
    if let Some(m) = ebpf.map_mut("FUNC_SLOTS_MAP") {
        if let Ok(mut slots) = Array::<&mut MapData, u64>::try_from(m) {
            for i in 0..abi::FUNC_SLOTS {
                let _ = slots.set(i, 0, 0);
            }
        }
    }
}

/// `live --noop-floor` (hidden, for `cargo xtask bench`): the do-nothing program on every
/// allocator tracepoint `--all-allocations` uses, until SIGINT or SIGTERM. What any BPF
/// program there costs, measured in the same guest as aptrace's own.
pub fn run_noop_floor() -> Result<u8> {
    let mut ebpf = load(4096, &["noop_alloc"])?;
    let rt: &mut RawTracePoint = prepare(&mut ebpf, "noop_alloc")?.try_into()?;
    let mut n = 0;
    for (_, tps) in RAW_TRACEPOINTS {
        for tp in *tps {
            match rt.attach(tp) {
                Ok(_) => n += 1,
                Err(e) => say!("aptrace: noop on {tp}: {e}"),
            }
        }
    }
    say!("aptrace: noop floor attached to {n} allocator tracepoints");
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?
        .block_on(async {
            let mut sigint = signal(SignalKind::interrupt())?;
            let mut sigterm = signal(SignalKind::terminate())?;
            tokio::select! {
                _ = sigint.recv() => {}
                _ = sigterm.recv() => {}
            }
            anyhow::Ok(())
        })?;
    drop(ebpf);
    say!("aptrace: noop floor detached");
    Ok(0)
}

/// Turns raw records into events: names, stacks, mdev and guest names.
struct Decoder {
    endian: Endian,
    roles: HashMap<String, Role>,
    names: HashMap<u64, Arc<str>>,
    guests: HashSet<u32>,
    host: Host,
    /// `APTRACE_RAW_DUMP=FILE`: every raw record, as a little-endian u32 length and the
    /// bytes (test fixtures captured from real kernels).
    raw_dump: Option<std::fs::File>,
}

impl Decoder {
    /// Decodes up to `limit` records from the ring; returns how many it took.
    fn drain(
        &mut self,
        ring: &mut RingBuf<MapData>,
        limit: usize,
        symbols: &dyn Symbolizer,
        stacks: &StackTraceMap<MapData>,
        out: &mut Vec<Event>,
    ) -> usize {
        let mut drained = 0;
        while drained < limit {
            let Some(item) = ring.next() else { break };
            self.decode(&item, symbols, Some(stacks), out);
            drained += 1;
        }
        drained
    }

    fn decode(
        &mut self,
        raw: &[u8],
        symbols: &dyn Symbolizer,
        stacks: Option<&StackTraceMap<MapData>>,
        out: &mut Vec<Event>,
    ) {
        if let Some(f) = &mut self.raw_dump {
            use std::io::Write;
            let _ = f
                .write_all(&(raw.len() as u32).to_le_bytes())
                .and_then(|_| f.write_all(raw));
        }
        let d = match decode_record(raw, self.endian, symbols) {
            Ok(d) => d,
            Err(e) => {
                log::warn!("undecodable record ({} bytes): {e}", raw.len());
                return;
            }
        };
        let mut ev = d.event;
        if let (Some(id), Some(map)) = (d.stack_id, stacks) {
            if let Ok(st) = map.get(&(id as u32), 0) {
                // The probe's own frames (the BPF program, the trace trampoline) are noise.
                let frames: Vec<Arc<str>> = st
                    .frames()
                    .iter()
                    .map(|f| symbols.frame(f.ip))
                    .skip_while(|f| {
                        f.contains("[bpf]")
                            || f.starts_with("bpf_trace_run")
                            || f.starts_with("kprobe_")
                    })
                    .collect();
                match &mut ev.body {
                    Body::Enter { stack, .. } | Body::Alloc { stack, .. } => *stack = frames,
                    _ => {}
                }
            }
        }
        match &ev.body {
            Body::MdevName { mdev, uuid } => {
                if self.names.get(mdev) == Some(uuid) || uuid.is_empty() {
                    return;
                }
                self.names.insert(*mdev, uuid.clone());
            }
            Body::Enter { func, .. } if self.roles.get(&**func) == Some(&Role::Open) => {
                let pid = ev.task.pid;
                if self.guests.insert(pid) {
                    let cmdline = std::fs::read(self.host.path(&format!("/proc/{pid}/cmdline")))
                        .unwrap_or_default();
                    if let Some(name) = guest_name_from_cmdline(&cmdline) {
                        out.push(Event {
                            seq: 0,
                            ts_ns: ev.ts_ns.saturating_sub(1),
                            cpu: ev.cpu,
                            task: ev.task.clone(),
                            body: Body::GuestName {
                                guest_pid: pid,
                                name: Arc::from(name),
                            },
                        });
                    }
                }
            }
            Body::Exit { func, arg0, .. } if self.roles.get(&**func) == Some(&Role::ReleaseDev) => {
                self.names.remove(arg0);
            }
            _ => {}
        }
        out.push(ev);
    }
}

fn agent_task() -> Task {
    Task {
        pid: std::process::id(),
        tid: std::process::id(),
        comm: Arc::from("aptrace"),
    }
}

/// `aptrace live`. Returns the exit status (0 no findings, 1 findings).
pub fn run(opts: LiveOptions) -> Result<u8> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting the tokio runtime")?;
    rt.block_on(run_async(opts))
}

async fn run_async(opts: LiveOptions) -> Result<u8> {
    let host = Host::live();
    let mut ebpf = load(opts.ring_buffer_size, &[])?;
    match aya_log::EbpfLogger::init(&mut ebpf) {
        // SAFETY: the logger owns its ring buffer fd for as long as the AsyncFd holds it.
        Ok(logger) => {
            match unsafe { AsyncFd::register_with_interest(logger, tokio::io::Interest::READABLE) }
            {
                Ok(mut fd) => {
                    tokio::spawn(async move {
                        loop {
                            let Ok(mut guard) = fd.readable_mut().await else {
                                break;
                            };
                            guard.get_inner_mut().flush();
                            guard.clear_ready();
                        }
                    });
                }
                Err(e) => log::debug!("aya-log: {e}"),
            }
        }
        Err(e) => log::debug!("aya-log not active: {e}"),
    }
    let ring = RingBuf::try_from(ebpf.take_map("EVENTS").context("map EVENTS")?)?;
    let stacks = StackTraceMap::try_from(ebpf.take_map("STACKS").context("map STACKS")?)?;
    let mut losses = Losses::new(PerCpuArray::try_from(
        ebpf.take_map("COUNTERS").context("map COUNTERS")?,
    )?);
    // SAFETY: the RingBuf owns its map fd for as long as the AsyncFd holds it.
    let mut ring = unsafe { AsyncFd::register_with_interest(ring, tokio::io::Interest::READABLE) }
        .map_err(|e| anyhow!("polling the ring buffer: {e}"))?;

    let mut pipeline = Pipeline::new(Auditor::new(opts.profile.clone()), None);
    if opts.forward.is_none() {
        pipeline.add_sink(Box::new(PrintSink {
            out: std::io::stdout(),
            format: opts.format,
            guest: opts.guest.clone(),
            printed: 0,
        }));
    }
    let metrics = match &opts.metrics {
        Some(addr) => {
            let m = crate::metrics::Metrics::new(&opts.profile);
            let server = crate::metrics::serve(addr, m.clone())
                .with_context(|| format!("starting the metrics server on {addr}"))?;
            pipeline.add_sink(Box::new(m.sink()));
            say!("aptrace: metrics at http://{}/metrics", server.local_addr());
            Some((m, server))
        }
        None => None,
    };
    let boot_to_wall = clock_ns(libc::CLOCK_REALTIME) - clock_ns(libc::CLOCK_BOOTTIME);
    let hostname = host
        .read_string("/proc/sys/kernel/hostname")
        .map(|s| s.trim().to_string())
        .unwrap_or_default();
    let make_header = |res: Option<&Resolution>, probes: Vec<ProbeStatus>| Header {
        arch: super::machine(),
        kernel_release: host.kernel_release(),
        hostname: hostname.clone(),
        boot_to_wall_ns: boot_to_wall,
        module: opts.module.clone(),
        symbols: res.map(|r| r.symbols.clone()).unwrap_or_default(),
        profile: opts.profile.to_toml(),
        probes,
        writer: crate::writer_id(),
    };
    let mut header_for_report = make_header(None, Vec::new());

    let mut decoder = Decoder {
        endian: native_endian(),
        roles: opts
            .profile
            .functions
            .iter()
            .map(|f| (f.name.clone(), f.role))
            .collect(),
        names: HashMap::new(),
        guests: HashSet::new(),
        host: host.clone(),
        raw_dump: std::env::var_os("APTRACE_RAW_DUMP").and_then(|p| std::fs::File::create(p).ok()),
    };
    let mut sigint = signal(SignalKind::interrupt())?;
    let mut sigterm = signal(SignalKind::terminate())?;
    let deadline = opts.duration.map(|d| tokio::time::Instant::now() + d);
    let mut tick = tokio::time::interval(Duration::from_millis(100));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut attachment: Option<Attachment> = None;
    let mut waiting_said = false;
    let mut last_module_check = Instant::now() - Duration::from_secs(10);
    let mut last_counters = Instant::now();
    let mut events_total = 0u64;
    let mut batch = Vec::new();
    let empty = Kallsyms::default();

    loop {
        // Follow the module: attach when it appears, detach when it goes, re-attach when
        // a new load of it shows up (its .text moved).
        if last_module_check.elapsed() >= Duration::from_millis(500) {
            last_module_check = Instant::now();
            let id = module_identity(&host, &opts.module, &opts.overrides);
            let current = attachment.as_ref().map(|a| a.identity.clone());
            if id != current {
                if let Some(a) = attachment.take() {
                    detach(&mut ebpf, a);
                    say!("aptrace: module {} unloaded; probes detached", opts.module);
                }
                if let Some(id) = id {
                    let res =
                        Arc::new(resolve(&host, &opts.profile, &opts.module, &opts.overrides));
                    let a = attach(&mut ebpf, res.clone(), &opts, id)?;
                    losses.note_programs(&ebpf);
                    let n = a
                        .statuses
                        .iter()
                        .filter(|s| matches!(s.state, ProbeState::Attached | ProbeState::Clone))
                        .count();
                    for s in a
                        .statuses
                        .iter()
                        .filter(|s| !matches!(s.state, ProbeState::Attached))
                    {
                        say!("aptrace: {} {}: {}", s.name, s.state.name(), s.detail);
                    }
                    if !res.lock_checks() {
                        let why: Vec<String> = [&res.matrix_dev_addr, &res.mdevs_lock_offset]
                            .iter()
                            .filter_map(|r| r.as_ref().err().cloned())
                            .collect();
                        say!("aptrace: mdevs_lock checks off: {}", why.join("; "));
                    }
                    header_for_report = make_header(Some(&res), a.statuses.clone());
                    if let Some((m, _)) = &metrics {
                        m.set_probes(&a.statuses);
                    }
                    if !pipeline.has_recorder() {
                        if let Some(path) = &opts.record {
                            pipeline.set_recorder(Writer::create(
                                path,
                                &header_for_report,
                                opts.force,
                            )?);
                        }
                    }
                    say!(
                        "aptrace: attached {n} probes to module {} ({} missing, lock checks {})",
                        opts.module,
                        res.missing.len(),
                        if res.lock_checks() { "on" } else { "off" }
                    );
                    attachment = Some(a);
                    waiting_said = false;
                }
            }
            // Absent from the start, or gone: said once until it loads.
            if attachment.is_none() && !waiting_said {
                say!("aptrace: waiting for module {} to load", opts.module);
                waiting_said = true;
            }
        }
        let symbols: &dyn Symbolizer = match &attachment {
            Some(a) => &a.resolution.kallsyms,
            None => &empty,
        };

        tokio::select! {
            guard = ring.readable_mut() => {
                let mut guard = guard?;
                // Bounded, so a flood cannot starve signals, the deadline and the module
                // check, nor grow the batch without limit.
                let drained = decoder.drain(guard.get_inner_mut(), DRAIN_BATCH, symbols, &stacks, &mut batch);
                if drained < DRAIN_BATCH {
                    guard.clear_ready();
                }
            }
            _ = tick.tick() => {
                // Records are submitted without a wakeup until the ring is an eighth full
                // (tracer-ebpf maps::wake_flags): the timer drains the rest.
                decoder.drain(ring.get_mut(), DRAIN_BATCH, symbols, &stacks, &mut batch);
                pipeline.idle();
                if opts.stop.as_ref().is_some_and(|s| s.load(std::sync::atomic::Ordering::Relaxed)) {
                    break;
                }
            }
            _ = sigint.recv() => break,
            _ = sigterm.recv() => break,
            _ = async { match deadline { Some(d) => tokio::time::sleep_until(d).await, None => std::future::pending().await } } => break,
        }
        if last_counters.elapsed() >= Duration::from_secs(1) {
            last_counters = Instant::now();
            losses.push(&mut batch);
        }
        events_total += batch.len() as u64;
        for ev in batch.drain(..) {
            if let Some(tx) = &opts.forward {
                let _ = tx.send(ev.clone());
            }
            pipeline.push(ev);
        }
        if let Some(e) = pipeline.record_error.take() {
            say!("aptrace: recording stopped: {e}");
        }
    }
    // Drain what is left, detach, finish.
    {
        let symbols: &dyn Symbolizer = match &attachment {
            Some(a) => &a.resolution.kallsyms,
            None => &empty,
        };
        decoder.drain(
            ring.get_mut(),
            16 * DRAIN_BATCH,
            symbols,
            &stacks,
            &mut batch,
        );
    }
    losses.push(&mut batch);
    events_total += batch.len() as u64;
    for ev in batch.drain(..) {
        if let Some(tx) = &opts.forward {
            let _ = tx.send(ev.clone());
        }
        pipeline.push(ev);
    }
    if let Some(a) = attachment.take() {
        detach(&mut ebpf, a);
    }
    drop(ebpf);
    say!("aptrace: detached; {events_total} events");
    let had_recorder = pipeline.has_recorder();
    let (auditor, rec_err) = pipeline.finish();
    if let Some(e) = rec_err {
        say!("aptrace: recording error: {e}");
    }
    if let (Some(path), false) = (&opts.record, had_recorder) {
        // Never attached: still leave a (header-only) recording behind.
        match Writer::create(path, &header_for_report, opts.force) {
            Ok(w) => {
                let _ = w.finish();
            }
            Err(e) => say!("aptrace: cannot write {}: {e}", path.display()),
        }
    }
    let path = opts
        .record
        .as_ref()
        .map(|p| p.display().to_string())
        .unwrap_or_else(|| "live".to_string());
    let source = SourceInfo::new(
        &path,
        &header_for_report,
        (
            crate::recording::VERSION_MAJOR,
            crate::recording::VERSION_MINOR,
        ),
        Vec::new(),
        Vec::new(),
    );
    let mut fr = FileReport::new(source, &auditor, true);
    if let Some(g) = &opts.guest {
        fr.findings.retain(|f| g.matches(f));
    }
    let report = Report { files: vec![fr] };
    if let Some(j) = &opts.json {
        write_report_file(j, report.to_json().as_bytes())?;
    }
    let text = match opts.format {
        LiveFormat::Text => report.to_text(),
        LiveFormat::Json => report.to_json(),
    };
    print_stdout(text.as_bytes())?;
    Ok(if report.has_findings() { 1 } else { 0 })
}

/// `--json FILE`: the final report, replacing an earlier one (mode 0600).
fn write_report_file(path: &std::path::Path, bytes: &[u8]) -> Result<()> {
    use std::io::Write;
    crate::recording::create_private(path, true)
        .and_then(|mut f| f.write_all(bytes))
        .with_context(|| format!("writing {}", path.display()))
}

/// The summary on standard output; a closed pipe is not an error.
fn print_stdout(bytes: &[u8]) -> Result<()> {
    use std::io::Write;
    let mut out = std::io::stdout().lock();
    match out.write_all(bytes).and_then(|_| out.flush()) {
        Err(e) if e.kind() != std::io::ErrorKind::BrokenPipe => {
            Err(e).context("writing to standard output")
        }
        _ => Ok(()),
    }
}

/// Lost events, from the probes' per-CPU counters and the kernel's own miss counts.
struct Losses {
    counters: PerCpuArray<MapData, u64>,
    seen: [u64; abi::counter::COUNT as usize],
    /// Ids of the kprobe programs, whose links report the kernel's `missed` (6.7+).
    kprobe_ids: HashSet<u32>,
    kernel_missed_seen: u64,
    /// Whether the kernel reports `missed`; until known, both sources are read.
    kernel_reports_missed: Option<bool>,
}

impl Losses {
    fn new(counters: PerCpuArray<MapData, u64>) -> Self {
        Self {
            counters,
            seen: [0; abi::counter::COUNT as usize],
            kprobe_ids: HashSet::new(),
            kernel_missed_seen: 0,
            kernel_reports_missed: None,
        }
    }

    /// After an attach: programs are loaded on first use, so their ids are known now.
    fn note_programs(&mut self, ebpf: &Ebpf) {
        self.kprobe_ids = ebpf
            .programs()
            // The profile's functions only: the host-wide kvmalloc probes of
            // --all-allocations miss returns of other modules' calls under load, which
            // are no events of the traced driver.
            .filter(|(name, _)| name.starts_with(ENTRY_PROGRAM) || name.starts_with(EXIT_PROGRAM))
            .filter_map(|(_, p)| match p {
                aya::programs::Program::KProbe(k) => k.info().ok().map(|i| i.id()),
                _ => None,
            })
            .collect();
    }

    fn push(&mut self, out: &mut Vec<Event>) {
        let now = clock_ns(libc::CLOCK_BOOTTIME) as u64;
        let lost = |count: u64, source: LossSource| Event {
            seq: 0,
            ts_ns: now,
            cpu: 0,
            task: agent_task(),
            body: Body::Lost { count, source },
        };
        // The kernel's count wins where it exists: the probes' own count of returns never
        // seen (RETURN_MISSED) would count the same misses again, later.
        match super::linkinfo::kprobe_missed(&self.kprobe_ids) {
            Ok(Some(total)) => {
                if self.kernel_reports_missed.is_none() {
                    log::info!("kretprobe misses: the kernel's count from bpf link info");
                }
                self.kernel_reports_missed = Some(true);
                let delta = total.saturating_sub(self.kernel_missed_seen);
                self.kernel_missed_seen = total;
                if delta > 0 {
                    out.push(lost(delta, LossSource::KretprobeMiss));
                }
            }
            // No attached link reports it yet (nothing attached, or before 6.7).
            Ok(None) => {}
            Err(e) => log::debug!("bpf link info: {e}"),
        }
        let sources = [
            (abi::counter::RINGBUF_FULL, LossSource::RingBuffer),
            (
                abi::counter::EXIT_WITHOUT_ENTRY,
                LossSource::ExitWithoutEntry,
            ),
            (abi::counter::RETURN_MISSED, LossSource::KretprobeMiss),
        ];
        for (idx, source) in sources {
            let Ok(values) = self.counters.get(&idx, 0) else {
                continue;
            };
            let total: u64 = values.iter().sum();
            let delta = total.saturating_sub(self.seen[idx as usize]);
            self.seen[idx as usize] = total;
            if delta > 0
                && !(idx == abi::counter::RETURN_MISSED && self.kernel_reports_missed == Some(true))
            {
                out.push(lost(delta, source));
            }
        }
    }
}
