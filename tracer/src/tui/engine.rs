//! The side of the TUI that runs outside the draw loop: a tap on the source's [`Pipeline`]
//! that keeps what the screen needs, bounded, and publishes [`Update`]s.
//!
//! Nothing here knows whether events come from a kernel or a recording.

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::audit::{Auditor, Finding, LifeKey, Outstanding, Snapshot};
use crate::calls::show::Signatures;
use crate::calls::{lock_kept, Step};
use crate::model::{human_ns, Body, Event, LockObs};
use crate::pipeline::{Pipeline, Sink};
use crate::profile::{LockContract, Profile};

/// Event-log lines handed over per update at most (the newest win).
pub const PENDING_LOG_CAP: usize = 2_000;
/// Findings held for the next update at most (beyond, they are counted as dropped).
pub const PENDING_FINDINGS_CAP: usize = 10_000;
/// Lock checks kept per mdev.
pub const LOCK_CHECKS_PER_MDEV: usize = 32;
/// Mdevs whose lock checks are kept.
const LOCK_MDEVS_CAP: usize = 8_192;
/// Seconds of throughput history.
pub const RATE_HISTORY: usize = 240;

/// One line of the event log, rendered once.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LogLine {
    pub seq: u64,
    pub ts_ns: u64,
    pub cpu: u32,
    pub pid: u32,
    pub comm: Arc<str>,
    pub text: String,
}

impl LogLine {
    pub fn from_event(ev: &Event, sigs: &Signatures) -> LogLine {
        LogLine {
            seq: ev.seq,
            ts_ns: ev.ts_ns,
            cpu: ev.cpu,
            pid: ev.task.pid,
            comm: ev.task.comm.clone(),
            text: sigs.describe(ev),
        }
    }

    /// Case-insensitive match of `needle` (already lower-case) against the text, comm, pid
    /// and sequence number.
    pub fn matches(&self, needle: &str) -> bool {
        if needle.is_empty() {
            return true;
        }
        self.text.to_lowercase().contains(needle)
            || self.comm.to_lowercase().contains(needle)
            || self.pid.to_string() == needle
            || format!("#{}", self.seq) == needle
    }
}

/// One reading of `matrix_dev->mdevs_lock` on entry to a function of an mdev.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LockCheck {
    pub seq: u64,
    pub ts_ns: u64,
    pub function: Arc<str>,
    pub pid: u32,
    pub observed: LockObs,
    pub contract: LockContract,
    /// The observation satisfies the contract.
    pub ok: bool,
}

impl LockCheck {
    pub fn observed_text(&self) -> String {
        match self.observed {
            LockObs::NotChecked => "not read".into(),
            LockObs::Free => "free".into(),
            LockObs::HeldByCurrent => "held by this task".into(),
            LockObs::HeldByOther { owner } => format!("held by {owner:#x}"),
        }
    }
    pub fn contract_text(&self) -> &'static str {
        match self.contract {
            LockContract::None => "no contract",
            LockContract::Held => "must hold",
            LockContract::NotHeld => "must not hold",
        }
    }
}

/// The selected mdev's detail, computed on the engine side.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct MdevDetail {
    /// The life it is the detail of.
    pub key: LifeKey,
    pub outstanding: Vec<Outstanding>,
    pub lock_checks: Vec<LockCheck>,
}

/// Calls and latency of one profiled function.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct FunctionRow {
    pub name: String,
    pub entries: u64,
    pub failures: u64,
    pub p50_ns: Option<u64>,
    pub p99_ns: Option<u64>,
    pub max_ns: u64,
}

/// Where the source is. Shown, never interpreted by the App.
#[derive(Clone, Debug, PartialEq)]
pub enum Playback {
    /// A running kernel; `frozen` is the display pause (the auditor keeps ingesting).
    Live { frozen: bool },
    Replay {
        paused: bool,
        speed: f64,
        position: usize,
        total: usize,
        /// Running at full speed until the next finding.
        seeking: bool,
    },
}

impl Default for Playback {
    fn default() -> Self {
        Playback::Live { frozen: false }
    }
}

impl Playback {
    pub fn paused(&self) -> bool {
        match self {
            Playback::Live { frozen } => *frozen,
            Playback::Replay { paused, .. } => *paused,
        }
    }
}

/// Counts the updates the App holds or has queued; the engine sends no new one while two
/// are in flight, so a slow screen never makes memory grow.
#[derive(Debug)]
pub struct Ticket(Arc<AtomicUsize>);

impl Drop for Ticket {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

/// What the engine publishes: the state now, and what is new since the last update.
#[derive(Debug, Default)]
pub struct Update {
    /// The auditor's snapshot; only the selected mdev keeps its timeline, and the latency
    /// histograms are summarised in `functions`.
    pub snapshot: Snapshot,
    pub functions: Vec<FunctionRow>,
    pub new_findings: Vec<Finding>,
    pub findings_dropped: u64,
    pub new_log: Vec<LogLine>,
    /// Log lines that arrived but were not kept (more than a screen could show).
    pub log_dropped: u64,
    /// Events per second, oldest first, the last one still filling.
    pub rate: Vec<u64>,
    /// Lost events per second, aligned with `rate`.
    pub lost_rate: Vec<u64>,
    pub detail: Option<MdevDetail>,
    pub playback: Playback,
    /// The source has ended (the end of a recording).
    pub ended: bool,
    /// Releases the engine's in-flight slot when the App drops this update.
    pub ticket: Option<Ticket>,
}

/// What the tap collects from the pipeline, between two updates.
struct Tap {
    log: VecDeque<Event>,
    log_dropped: u64,
    findings: Vec<Finding>,
    findings_dropped: u64,
    events_in_bucket: u64,
    lost_in_bucket: u64,
    locks: HashMap<u64, VecDeque<LockCheck>>,
    lock_order: VecDeque<u64>,
}

impl Tap {
    fn new() -> Tap {
        Tap {
            log: VecDeque::with_capacity(PENDING_LOG_CAP),
            log_dropped: 0,
            findings: Vec::new(),
            findings_dropped: 0,
            events_in_bucket: 0,
            lost_in_bucket: 0,
            locks: HashMap::new(),
            lock_order: VecDeque::new(),
        }
    }

    fn add_check(&mut self, mdev: u64, check: LockCheck) {
        if !self.locks.contains_key(&mdev) {
            if self.lock_order.len() >= LOCK_MDEVS_CAP {
                if let Some(old) = self.lock_order.pop_front() {
                    self.locks.remove(&old);
                }
            }
            self.lock_order.push_back(mdev);
        }
        let q = self.locks.entry(mdev).or_default();
        if q.len() == LOCK_CHECKS_PER_MDEV {
            q.pop_front();
        }
        q.push_back(check);
    }

    /// The lock reading of a call whose mdev is known: at its entry, or (probe) once the
    /// call nested in it names the object.
    fn observe_lock(&mut self, step: &Step<'_>, profile: &Profile) {
        let Step::Enter { call, attributed } = step else {
            return;
        };
        for c in attributed.iter().chain(Some(call)) {
            let Some(mdev) = c.mdev else { continue };
            let contract = profile.functions[c.spec].lock;
            let observed = c.lock();
            let Some(ok) = lock_kept(contract, observed) else {
                continue;
            };
            let check = LockCheck {
                seq: c.enter.seq,
                ts_ns: c.enter.ts_ns,
                function: c.func(),
                pid: c.enter.task.pid,
                observed,
                contract,
                ok,
            };
            self.add_check(mdev, check);
        }
    }
}

impl Sink for SharedTap {
    fn on_event(&mut self, ev: &Event, step: &Step<'_>, auditor: &Auditor) {
        let mut t = self.0.lock().expect("tap lock");
        t.events_in_bucket += 1;
        if let Body::Lost { count, .. } = ev.body {
            t.lost_in_bucket += count;
        }
        if t.log.len() == PENDING_LOG_CAP {
            t.log.pop_front();
            t.log_dropped += 1;
        }
        t.log.push_back(ev.clone());
        t.observe_lock(step, auditor.profile());
    }

    fn on_finding(&mut self, finding: &Finding) {
        let mut t = self.0.lock().expect("tap lock");
        if t.findings.len() < PENDING_FINDINGS_CAP {
            t.findings.push(finding.clone());
        } else {
            t.findings_dropped += 1;
        }
    }
}

struct SharedTap(Arc<Mutex<Tap>>);

/// What the screen needs from one pipeline: a tap on it (a sink), the throughput history,
/// and the updates in flight. It owns no pipeline: a replay's [`Engine`] holds one, and a
/// live run's [`super::live::ScreenSink`] sits in the agent's.
pub struct Screen {
    tap: Arc<Mutex<Tap>>,
    rate: VecDeque<u64>,
    lost_rate: VecDeque<u64>,
    in_flight: Arc<AtomicUsize>,
    /// How long the last snapshot took: updates are spaced to keep it a small share.
    pub last_snapshot_cost: Duration,
}

impl Screen {
    /// A screen, and the sink that feeds it, to be
    /// added to that pipeline.
    pub fn new() -> (Screen, Box<dyn Sink + Send>) {
        let tap = Arc::new(Mutex::new(Tap::new()));
        let mut rate = VecDeque::with_capacity(RATE_HISTORY);
        rate.push_back(0);
        let mut lost_rate = VecDeque::with_capacity(RATE_HISTORY);
        lost_rate.push_back(0);
        let screen = Screen {
            tap: tap.clone(),
            rate,
            lost_rate,
            in_flight: Arc::new(AtomicUsize::new(0)),
            last_snapshot_cost: Duration::ZERO,
        };
        (screen, Box::new(SharedTap(tap)))
    }

    /// Closes the current one-second throughput bucket.
    pub fn roll_rate(&mut self) {
        let (ev, lost) = {
            let mut t = self.tap.lock().expect("tap lock");
            (
                std::mem::take(&mut t.events_in_bucket),
                std::mem::take(&mut t.lost_in_bucket),
            )
        };
        *self.rate.back_mut().expect("never empty") += ev;
        *self.lost_rate.back_mut().expect("never empty") += lost;
        for q in [&mut self.rate, &mut self.lost_rate] {
            if q.len() == RATE_HISTORY {
                q.pop_front();
            }
            q.push_back(0);
        }
    }

    /// Updates sent and not yet dropped by the App.
    pub fn in_flight(&self) -> usize {
        self.in_flight.load(Ordering::Acquire)
    }

    /// Takes what is new and the state of `auditor` now. `selected` is the mdev whose
    /// detail to include.
    pub fn update(
        &mut self,
        auditor: &Auditor,
        selected: Option<LifeKey>,
        playback: Playback,
        ended: bool,
    ) -> Update {
        let started = Instant::now();
        // Timelines of the selected life and the one before it (for the window below) only.
        let mut snapshot = auditor.snapshot_with_timelines(|(ptr, life)| {
            selected.is_some_and(|(p, l)| p == ptr && (l == life || l == life + 1))
        });
        // Lock checks are kept by pointer: the selected life's are those after the previous
        // life's last event and, for a life that ended, up to its own last event.
        let last_seq = |key: LifeKey| {
            snapshot
                .mdevs
                .iter()
                .find(|m| m.id.key() == key)
                .and_then(|m| m.timeline.last())
                .map(|t| t.seq)
        };
        let window = selected.map(|(ptr, life)| {
            let after = life
                .checked_sub(1)
                .and_then(|prev| last_seq((ptr, prev)))
                .unwrap_or(0);
            let has_next = snapshot
                .mdevs
                .iter()
                .any(|m| m.id.ptr == ptr && m.id.incarnation > life);
            let upto = match has_next {
                true => last_seq((ptr, life)).unwrap_or(u64::MAX),
                false => u64::MAX,
            };
            (after, upto)
        });
        for m in &mut snapshot.mdevs {
            if Some(m.id.key()) != selected {
                m.timeline = Vec::new();
            }
        }
        let functions = std::mem::take(&mut snapshot.functions)
            .into_iter()
            .map(|(name, st)| FunctionRow {
                name,
                entries: st.entries,
                failures: st.failures,
                p50_ns: st.latency.quantile(0.5),
                p99_ns: st.latency.quantile(0.99),
                max_ns: st.latency.max,
            })
            .collect();
        let mut t = self.tap.lock().expect("tap lock");
        let detail = selected.zip(window).map(|(key, (after, upto))| MdevDetail {
            key,
            outstanding: auditor
                .finish()
                .outstanding
                .into_iter()
                .filter(|o| o.mdev.as_ref().is_some_and(|m| m.key() == key))
                .collect(),
            lock_checks: t
                .locks
                .get(&key.0)
                .map(|q| {
                    q.iter()
                        .filter(|c| c.seq > after && c.seq <= upto)
                        .cloned()
                        .collect()
                })
                .unwrap_or_default(),
        });
        let sigs = Signatures::of(auditor.profile());
        let new_log = t
            .log
            .drain(..)
            .map(|e| LogLine::from_event(&e, &sigs))
            .collect();
        let log_dropped = std::mem::take(&mut t.log_dropped);
        let new_findings = std::mem::take(&mut t.findings);
        let findings_dropped = std::mem::take(&mut t.findings_dropped);
        // The bucket still filling shows what arrived so far.
        let mut rate: Vec<u64> = self.rate.iter().copied().collect();
        *rate.last_mut().expect("never empty") += t.events_in_bucket;
        let mut lost_rate: Vec<u64> = self.lost_rate.iter().copied().collect();
        *lost_rate.last_mut().expect("never empty") += t.lost_in_bucket;
        drop(t);
        self.in_flight.fetch_add(1, Ordering::AcqRel);
        self.last_snapshot_cost = started.elapsed();
        Update {
            snapshot,
            functions,
            new_findings,
            findings_dropped,
            new_log,
            log_dropped,
            rate,
            lost_rate,
            detail,
            playback,
            ended,
            ticket: Some(Ticket(self.in_flight.clone())),
        }
    }
}

/// A replay's pipeline and the screen on it.
pub struct Engine {
    pipeline: Pipeline,
    screen: Screen,
}

impl Engine {
    /// An engine on a fresh pipeline (no recorder) around `auditor`.
    pub fn new(auditor: Auditor) -> Engine {
        Engine::with_pipeline(Pipeline::new(auditor, None))
    }

    /// An engine on a given pipeline (with the metrics sink of `aptrace tui --metrics`).
    pub fn with_pipeline(mut pipeline: Pipeline) -> Engine {
        let (screen, tap) = Screen::new();
        pipeline.add_sink(tap);
        Engine { pipeline, screen }
    }

    /// An event in order with its sequence number (a recording).
    pub fn push_ordered(&mut self, ev: Event) {
        self.pipeline.push_ordered(ev);
    }

    pub fn auditor(&self) -> &Auditor {
        &self.pipeline.auditor
    }

    /// Findings raised so far.
    pub fn findings_len(&self) -> usize {
        self.pipeline.auditor.findings_total() as usize
    }

    /// Closes the current one-second throughput bucket.
    pub fn roll_rate(&mut self) {
        self.screen.roll_rate();
    }

    /// Updates sent and not yet dropped by the App.
    pub fn in_flight(&self) -> usize {
        self.screen.in_flight()
    }

    /// How long the last snapshot took.
    pub fn last_snapshot_cost(&self) -> Duration {
        self.screen.last_snapshot_cost
    }

    /// Takes what is new and the state now. `selected` is the mdev whose detail to include.
    pub fn update(&mut self, selected: Option<LifeKey>, playback: Playback, ended: bool) -> Update {
        self.screen
            .update(&self.pipeline.auditor, selected, playback, ended)
    }
}

/// `12.345678s` from the start of the stream.
pub fn rel_time(ts_ns: u64, first: Option<u64>) -> String {
    let d = ts_ns.saturating_sub(first.unwrap_or(ts_ns));
    format!("{}.{:06}s", d / 1_000_000_000, (d % 1_000_000_000) / 1000)
}

/// Bytes for people: `512 B`, `4.0 KiB`.
pub fn human_bytes(b: u64) -> String {
    match b {
        0..=1023 => format!("{b} B"),
        1024..=1_048_575 => format!("{:.1} KiB", b as f64 / 1024.0),
        _ => format!("{:.1} MiB", b as f64 / 1_048_576.0),
    }
}

/// A latency for the probes table.
pub fn latency(ns: Option<u64>) -> String {
    ns.map(human_ns).unwrap_or_else(|| "-".into())
}
