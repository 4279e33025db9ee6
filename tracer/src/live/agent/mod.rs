//! The live agent (aya, Linux): loads the embedded eBPF object, follows the module (waits
//! for it, re-attaches after rmmod + insmod), reads the ring buffer through tokio's AsyncFd,
//! decodes records and feeds the one pipeline of this source. A cancel (the UI quitting,
//! SIGINT, SIGTERM, the deadline) detaches, finishes the recording and prints the summary.
//!
//! Only what touches aya lives here; deciding and decoding are in the parent module.

mod attach;
mod error;
mod kernel;
mod loader;

use std::sync::Arc;
use std::time::{Duration, Instant};

use aya::maps::{PerCpuArray, RingBuf, StackTraceMap};
use aya::programs::RawTracePoint;
use tokio::io::unix::AsyncFd;
use tokio::signal::unix::{signal, SignalKind};

pub use error::LiveError;
pub use loader::{gate, object_present, probe_features};

use attach::{attach, Attachment, RAW_TRACEPOINTS};
use error::Result;
use kernel::{drain, KernelLosses, KernelStacks};
use loader::prepare;

use super::cancel::Cancel;
use super::decode::{native_endian, Decoder};
use super::follow::{attach_lines, load_identity, own_module_changed};
use super::host::Host;
use super::kallsyms::Kallsyms;
use super::options::{LiveOptions, Session};
use super::output::{say, Output};
use super::report::{end_report, HostFacts};
use super::resolve::resolve_for;
use crate::model::{Event, Symbolizer};
use crate::pipeline::Pipeline;
use crate::recording::Writer;
use crate::report::Report;

/// Records decoded per wake-up of the ring buffer before the loop looks at its timers.
const DRAIN_BATCH: usize = 4096;

fn clock_ns(clock: libc::clockid_t) -> i64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: a valid timespec pointer.
    unsafe { libc::clock_gettime(clock, &mut ts) };
    ts.tv_sec * 1_000_000_000 + ts.tv_nsec
}

/// `aptrace live`. Returns the end-of-run report, for the caller to print and gate on.
pub fn run(opts: LiveOptions, session: Session) -> Result<Report> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(LiveError::os("starting the tokio runtime"))?;
    rt.block_on(run_async(opts, session))
}

fn take_map(ebpf: &mut aya::Ebpf, name: &'static str) -> Result<aya::maps::Map> {
    ebpf.take_map(name).ok_or(LiveError::NoMap(name))
}

/// aya-log's records go to `log` (the UI's log file, or stderr without the UI).
fn start_ebpf_logger(ebpf: &mut aya::Ebpf) {
    match aya_log::EbpfLogger::init(ebpf) {
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
}

/// Ends when `cancel` is cancelled, and cancels it on SIGINT, SIGTERM or the deadline.
async fn stop_requested(
    cancel: &Cancel,
    sigint: &mut tokio::signal::unix::Signal,
    sigterm: &mut tokio::signal::unix::Signal,
    deadline: Option<tokio::time::Instant>,
) {
    let deadline = async {
        match deadline {
            Some(d) => tokio::time::sleep_until(d).await,
            None => std::future::pending().await,
        }
    };
    tokio::select! {
        _ = cancel.cancelled() => {}
        _ = sigint.recv() => {}
        _ = sigterm.recv() => {}
        _ = deadline => {}
    }
    cancel.cancel();
}

async fn run_async(opts: LiveOptions, session: Session) -> Result<Report> {
    let Session {
        output: out,
        cancel,
        sinks,
    } = session;
    let host = Host::live();
    let t_load = Instant::now();
    let mut opts = opts;
    let release = host.kernel_release();
    let lock_reads = opts.overrides.lock_reads_on(&release);
    if !lock_reads && !opts.overrides.lock_reads_off {
        say!(
            out,
            "aptrace: notice: kernel {release}: the other declared locks' owner words are not read (the verifiers of kernels before 6.1 are untried with those reads); lock-order edges come from mdevs_lock's check and the profile's holds (--lock-reads on tries them anyway)"
        );
    }
    let (mut ebpf, reads_refused) =
        loader::load_with_lock_reads(opts.ring_buffer_size, &[], lock_reads)?;
    if let Some(why) = reads_refused {
        say!(
            out,
            "aptrace: warning: this kernel's verifier refused the entry probes with the other declared locks' reads ({why}); tracing without them, as with --lock-reads off: lock-order edges come from mdevs_lock's check and the profile's holds"
        );
        opts.overrides.lock_reads_off = true;
    }
    log::debug!("object loaded in {:?}", t_load.elapsed());
    start_ebpf_logger(&mut ebpf);
    let ring =
        RingBuf::try_from(take_map(&mut ebpf, "EVENTS")?).map_err(LiveError::map("EVENTS"))?;
    let stacks = KernelStacks(
        StackTraceMap::try_from(take_map(&mut ebpf, "STACKS")?)
            .map_err(LiveError::map("STACKS"))?,
    );
    let mut losses = KernelLosses::new(
        PerCpuArray::try_from(take_map(&mut ebpf, "COUNTERS")?)
            .map_err(LiveError::map("COUNTERS"))?,
    );
    // SAFETY: the RingBuf owns its map fd for as long as the AsyncFd holds it.
    let mut ring = unsafe { AsyncFd::register_with_interest(ring, tokio::io::Interest::READABLE) }
        .map_err(|e| LiveError::os("polling the ring buffer")(e.into()))?;

    let mut pipeline = super::options::pipeline(&opts.profile, opts.guest.clone(), sinks);
    let metrics = match &opts.metrics {
        Some(addr) => {
            let m = crate::metrics::Metrics::new(&opts.profile);
            let server = crate::metrics::serve(addr, m.clone()).map_err(LiveError::os(format!(
                "starting the metrics server on {addr}"
            )))?;
            pipeline.add_sink(Box::new(m.sink()));
            say!(
                out,
                "aptrace: metrics at http://{}/metrics",
                server.local_addr()
            );
            Some((m, server))
        }
        None => None,
    };
    let facts = HostFacts {
        arch: super::machine(),
        kernel_release: host.kernel_release(),
        hostname: host
            .read_string("/proc/sys/kernel/hostname")
            .map(|s| s.trim().to_string())
            .unwrap_or_default(),
        boot_to_wall_ns: clock_ns(libc::CLOCK_REALTIME) - clock_ns(libc::CLOCK_BOOTTIME),
    };
    let mut header = facts.header(&opts, None, Vec::new());

    let mut decoder = Decoder::new(&opts.profile, native_endian(), host.clone());
    if let Some(f) =
        std::env::var_os("APTRACE_RAW_DUMP").and_then(|p| std::fs::File::create(p).ok())
    {
        decoder.dump_raw_to(Box::new(f));
    }
    let mut sigint = signal(SignalKind::interrupt()).map_err(LiveError::os("watching SIGINT"))?;
    let mut sigterm = signal(SignalKind::terminate()).map_err(LiveError::os("watching SIGTERM"))?;
    let deadline = opts.duration.map(|d| tokio::time::Instant::now() + d);
    let stop = stop_requested(&cancel, &mut sigint, &mut sigterm, deadline);
    tokio::pin!(stop);
    let mut tick = tokio::time::interval(Duration::from_millis(100));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut attachment: Option<Attachment> = None;
    let mut waiting_said = false;
    let mut last_module_check = Instant::now() - Duration::from_secs(10);
    let mut last_counters = Instant::now();
    let mut events_total = 0u64;
    // Decoded events, boxed (each in a box the auditor gave back), and the agent's own
    // loss counts.
    let mut batch = Vec::new();
    let mut lost = Vec::new();
    let empty = Kallsyms::default();
    let mut preflight = opts.preflight.clone();

    loop {
        // Follow the module: attach when it appears, detach when it goes, re-attach when
        // a new load of it shows up (its .text moved).
        if last_module_check.elapsed() >= Duration::from_millis(500) {
            last_module_check = Instant::now();
            let id = load_identity(&host, &opts.profile, &opts.module, &opts.overrides);
            let current = attachment.as_ref().map(|a| a.identity.clone());
            if id != current {
                if let Some(a) = attachment.take() {
                    a.detach(&mut ebpf);
                    if own_module_changed(id.as_deref(), current.as_deref()) {
                        say!(
                            out,
                            "aptrace: module {} unloaded; probes detached",
                            opts.module
                        );
                    } else {
                        say!(
                            out,
                            "aptrace: a module of the profile's core rows loaded or unloaded; probes re-attached"
                        );
                    }
                }
                if let Some(id) = id {
                    let t_resolve = Instant::now();
                    let res = match preflight.take().and_then(|p| p.for_load(&id)) {
                        Some(res) => res,
                        None => Arc::new(resolve_for(
                            &host,
                            &opts.profile,
                            &opts.module,
                            &opts.overrides,
                            false,
                        )),
                    };
                    log::debug!("resolved in {:?}", t_resolve.elapsed());
                    let a = attach(&mut ebpf, res.clone(), opts.all_allocations, id)?;
                    losses.note_programs(&ebpf);
                    let mut lines = attach_lines(&opts.module, &res, &a.statuses);
                    let attached_line = lines.pop();
                    for l in &lines {
                        out.say(l);
                    }
                    header = facts.header(&opts, Some(&res), a.statuses.clone());
                    if let Some((m, _)) = &metrics {
                        m.set_probes(&a.statuses);
                    }
                    pipeline.probes_attached(&a.statuses);
                    if let Some(super::sink::GuestFilter::Pid(pid)) = &opts.guest {
                        decoder.name_guest_ahead(*pid);
                    }
                    if !pipeline.has_recorder() {
                        if let Some(path) = &opts.record {
                            let w = Writer::create(path, &header, opts.force).map_err(
                                LiveError::os(format!("creating the recording {}", path.display())),
                            )?;
                            pipeline.set_recorder(w);
                        }
                    }
                    if let Some(l) = attached_line {
                        out.say(&l);
                    }
                    attachment = Some(a);
                    waiting_said = false;
                }
            }
            // Absent from the start, or gone: said once until it loads.
            if attachment.is_none() && !waiting_said {
                say!(out, "aptrace: waiting for module {} to load", opts.module);
                waiting_said = true;
            }
        }
        let symbols: &dyn Symbolizer = match &attachment {
            Some(a) => &a.resolution.kallsyms,
            None => &empty,
        };

        tokio::select! {
            guard = ring.readable_mut() => {
                let mut guard = guard.map_err(LiveError::os("polling the ring buffer"))?;
                // Bounded, so a flood cannot starve signals, the deadline and the module
                // check, nor grow the batch without limit.
                let drained = drain(&mut decoder, guard.get_inner_mut(), DRAIN_BATCH, symbols, &stacks, &mut || pipeline.spare_box(), &mut batch);
                if drained < DRAIN_BATCH {
                    guard.clear_ready();
                }
            }
            _ = tick.tick() => {
                // Records are submitted without a wakeup until the ring is an eighth full
                // (tracer-ebpf maps::wake_flags): the timer drains the rest.
                drain(&mut decoder, ring.get_mut(), DRAIN_BATCH, symbols, &stacks, &mut || pipeline.spare_box(), &mut batch);
                pipeline.idle();
            }
            _ = &mut stop => break,
        }
        if last_counters.elapsed() >= Duration::from_secs(1) {
            last_counters = Instant::now();
            losses.push(clock_ns(libc::CLOCK_BOOTTIME) as u64, &mut lost);
        }
        events_total += deliver(&mut pipeline, &mut batch, &mut lost);
        if let Some(e) = pipeline.record_error.take() {
            say!(out, "aptrace: recording stopped: {e}");
        }
    }
    // Drain what is left, detach, finish.
    {
        let symbols: &dyn Symbolizer = match &attachment {
            Some(a) => &a.resolution.kallsyms,
            None => &empty,
        };
        let limit = 16 * DRAIN_BATCH;
        drain(
            &mut decoder,
            ring.get_mut(),
            limit,
            symbols,
            &stacks,
            &mut || pipeline.spare_box(),
            &mut batch,
        );
    }
    losses.push(clock_ns(libc::CLOCK_BOOTTIME) as u64, &mut lost);
    events_total += deliver(&mut pipeline, &mut batch, &mut lost);
    if let Some(a) = attachment.take() {
        a.detach(&mut ebpf);
    }
    drop(ebpf);
    say!(out, "aptrace: detached; {events_total} events");
    finish(&opts, &out, pipeline, &header)
}

/// Closes the recording (a header-only one if the module never attached) and prints the
/// end-of-run report.
/// Hands the decoded events (boxed, each into the auditor's own box) and then the agent's
/// loss events to the pipeline; returns how many.
// The boxes are what travels: each goes on into the pipeline as it is.
#[allow(clippy::vec_box)]
fn deliver(pipeline: &mut Pipeline, batch: &mut Vec<Box<Event>>, lost: &mut Vec<Event>) -> u64 {
    let n = (batch.len() + lost.len()) as u64;
    for ev in batch.drain(..) {
        pipeline.push_boxed(ev);
    }
    for ev in lost.drain(..) {
        pipeline.push(ev);
    }
    n
}

fn finish(
    opts: &LiveOptions,
    out: &Output,
    pipeline: Pipeline,
    header: &crate::recording::Header,
) -> Result<Report> {
    let had_recorder = pipeline.has_recorder();
    let (auditor, rec_err) = pipeline.finish();
    if let Some(e) = rec_err {
        say!(out, "aptrace: recording error: {e}");
    }
    if let (Some(path), false) = (&opts.record, had_recorder) {
        // Never attached: still leave a (header-only) recording behind.
        match Writer::create(path, header, opts.force) {
            Ok(w) => {
                let _ = w.finish();
            }
            Err(e) => say!(out, "aptrace: cannot write {}: {e}", path.display()),
        }
    }
    Ok(end_report(opts, header, &auditor))
}

/// `live --noop-floor` (hidden, for `cargo xtask bench`): the do-nothing program on every
/// allocator tracepoint `--all-allocations` uses, until SIGINT or SIGTERM. What any BPF
/// program there costs, measured in the same guest as aptrace's own.
pub fn run_noop_floor(out: &Output) -> Result<u8> {
    // No function probe runs here: nothing to read locks with, nothing to verify with them.
    let (mut ebpf, _) = loader::load_with_lock_reads(4096, &["noop_alloc"], false)?;
    let rt: &mut RawTracePoint =
        prepare(&mut ebpf, "noop_alloc")?
            .try_into()
            .map_err(|source| LiveError::Program {
                name: "noop_alloc".into(),
                source,
            })?;
    let mut n = 0;
    for (_, tps) in RAW_TRACEPOINTS {
        for tp in *tps {
            match rt.attach(tp) {
                Ok(_) => n += 1,
                Err(e) => say!(out, "aptrace: noop on {tp}: {e}"),
            }
        }
    }
    say!(
        out,
        "aptrace: noop floor attached to {n} allocator tracepoints"
    );
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(LiveError::os("starting the tokio runtime"))?
        .block_on(async {
            let mut sigint = signal(SignalKind::interrupt())?;
            let mut sigterm = signal(SignalKind::terminate())?;
            tokio::select! {
                _ = sigint.recv() => {}
                _ = sigterm.recv() => {}
            }
            Ok(())
        })
        .map_err(LiveError::os("watching SIGINT and SIGTERM"))?;
    drop(ebpf);
    say!(out, "aptrace: noop floor detached");
    Ok(0)
}
