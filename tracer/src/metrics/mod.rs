//! Prometheus metrics: a sink that reads the auditor and an exposition at `/metrics`.
//!
//! The metrics decide nothing: counters follow the events and findings the pipeline hands
//! over, gauges and histograms are read from the auditor's [`Snapshot`](crate::audit::Snapshot).
//!
//! Wiring (live, tui, replay):
//! ```no_run
//! # use tracer::{audit::Auditor, metrics, pipeline::Pipeline, profile::Profile};
//! let profile = Profile::vfio_ap();
//! let m = metrics::Metrics::new(&profile);
//! m.set_probes(&[]); // the probes' status once they are attached
//! let server = metrics::serve(":9464", m.clone()).expect("bind");
//! let mut p = Pipeline::new(Auditor::new(profile), None);
//! p.add_sink(Box::new(m.sink()));
//! // ... p.push(event) ...; on every idle tick of the source:
//! m.refresh(&p.auditor);
//! # drop(server);
//! ```
//!
//! Every series the dashboards and alerts use exists from the first scrape (findings of
//! every kind at 0, mdevs of every phase at 0, ...), so that `increase()` sees the first
//! finding. Labels are bounded: function and probe names come from the profile (anything
//! else is folded into `other`), kinds, severities, phases and migration states are closed
//! sets; no pointer, pid or UUID is ever a label.

mod encode;
mod server;

use encode::Collector;

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use prometheus_client::encoding::DescriptorEncoder;
use prometheus_client::metrics::MetricType;
use prometheus_client::registry::Registry;

use crate::audit::migration::session::Direction;
use crate::audit::migration::{is_direct_arc, MigState};
use crate::audit::{Auditor, Finding, Histogram, Kind, Phase, Severity};
use crate::model::{Allocator, Body, Event, LossSource};
use crate::pipeline::Sink;
use crate::profile::Profile;
use crate::recording::{ProbeState, ProbeStatus};

pub use server::{parse_addr, serve, Server};

/// The content type of the exposition (OpenMetrics text, which Prometheus negotiates).
pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// At most this many distinct probe or function label values; the rest are `other`.
const MAX_LABELS: usize = 256;

/// How often the sink re-reads the auditor while events flow.
const REFRESH_EVERY: Duration = Duration::from_millis(200);

/// Upper bounds (seconds) of the exported latency buckets; +Inf is added.
const LATENCY_BOUNDS: [f64; 22] = [
    1e-6, 2.5e-6, 5e-6, 1e-5, 2.5e-5, 5e-5, 1e-4, 2.5e-4, 5e-4, 1e-3, 2.5e-3, 5e-3, 1e-2, 2.5e-2,
    5e-2, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

/// Upper bounds (seconds) of the migration duration and stop time buckets; +Inf is added.
/// A vfio_ap device's state is small: most sessions take milliseconds, a stuck one minutes.
const MIGRATION_BOUNDS: [f64; 15] = [
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 120.0,
];

/// An exported histogram: per-bucket (not cumulative) counts, the last is +Inf.
#[derive(Clone, Debug, PartialEq)]
struct LatencyHist {
    bounds: &'static [f64],
    buckets: Vec<u64>,
    count: u64,
    sum_ns: u128,
}

impl Default for LatencyHist {
    fn default() -> LatencyHist {
        LatencyHist::new()
    }
}

impl LatencyHist {
    fn new() -> LatencyHist {
        LatencyHist::with_bounds(&LATENCY_BOUNDS)
    }

    fn with_bounds(bounds: &'static [f64]) -> LatencyHist {
        LatencyHist {
            bounds,
            buckets: vec![0; bounds.len() + 1],
            count: 0,
            sum_ns: 0,
        }
    }

    /// The auditor's log-linear histogram folded into the exported buckets. A bucket of
    /// the auditor `[lo, hi)` lands in the first exported bucket whose bound holds `hi - 1`
    /// (the auditor's buckets are 6 % wide: the error is that small).
    fn from_auditor(h: &Histogram) -> LatencyHist {
        LatencyHist::from_auditor_in(h, &LATENCY_BOUNDS)
    }

    fn from_auditor_in(h: &Histogram, bounds: &'static [f64]) -> LatencyHist {
        let mut out = LatencyHist::with_bounds(bounds);
        for (upper_excl, n) in h.buckets() {
            let top = upper_excl.saturating_sub(1) as f64 / 1e9;
            let i = bounds
                .iter()
                .position(|&b| top <= b)
                .unwrap_or(bounds.len());
            out.buckets[i] += n;
        }
        out.count = h.count;
        out.sum_ns = u128::from(h.sum);
        out
    }

    /// (upper bound, count) per bucket, +Inf last, as the encoder takes them.
    fn exported(&self) -> Vec<(f64, u64)> {
        self.bounds
            .iter()
            .copied()
            .chain([f64::INFINITY])
            .zip(self.buckets.iter().copied())
            .collect()
    }

    fn add(&mut self, o: &LatencyHist) {
        for (a, b) in self.buckets.iter_mut().zip(&o.buckets) {
            *a += b;
        }
        self.count += o.count;
        self.sum_ns += o.sum_ns;
    }
}

/// Per-function call counters read from the auditor.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
struct Calls {
    entries: u64,
    exits: u64,
    failures: u64,
}

impl Calls {
    fn add(&mut self, o: &Calls) {
        self.entries += o.entries;
        self.exits += o.exits;
        self.failures += o.failures;
    }
}

/// What the auditor says, cumulative within one pass (one auditor's life).
#[derive(Clone, Debug, Default)]
struct Pass {
    lost: u64,
    transitions: BTreeMap<(MigState, MigState), u64>,
    latency: BTreeMap<String, LatencyHist>,
    calls: BTreeMap<String, Calls>,
    /// Ended migration sessions by direction: (duration, stop time).
    migrations: BTreeMap<Direction, (LatencyHist, LatencyHist)>,
}

impl Pass {
    fn add(&mut self, o: &Pass) {
        self.lost += o.lost;
        for (k, v) in &o.transitions {
            *self.transitions.entry(*k).or_default() += v;
        }
        for (k, v) in &o.latency {
            self.latency.entry(k.clone()).or_default().add(v);
        }
        for (k, v) in &o.calls {
            self.calls.entry(k.clone()).or_default().add(v);
        }
        for (k, (d, st)) in &o.migrations {
            let e = self.migrations.entry(*k).or_insert_with(migration_hists);
            e.0.add(d);
            e.1.add(st);
        }
    }
}

fn migration_hists() -> (LatencyHist, LatencyHist) {
    (
        LatencyHist::with_bounds(&MIGRATION_BOUNDS),
        LatencyHist::with_bounds(&MIGRATION_BOUNDS),
    )
}

#[derive(Debug)]
struct State {
    /// Profile function names (the bounded label set for functions).
    functions: Vec<String>,
    /// (probe, type) → events; counted as they pass (monotonic by construction).
    events: BTreeMap<(String, &'static str), u64>,
    /// (kind, severity) → findings; counted as they are raised.
    findings: BTreeMap<(Kind, Severity), u64>,
    uncertain_findings: u64,
    /// Gauges from the last refresh.
    outstanding: u64,
    outstanding_bytes: u64,
    mdevs: BTreeMap<Phase, u64>,
    mdevs_in_migration_state: BTreeMap<MigState, u64>,
    /// Passes that ended (a replay loop restarts the auditor): their totals.
    base: Pass,
    /// The running auditor's totals at the last refresh.
    current: Pass,
    probes: Vec<ProbeStatus>,
    passes: u64,
    refreshes: u64,
    last_event_ts_ns: Option<u64>,
}

impl State {
    fn probe_label(&self, name: &str) -> String {
        let known =
            self.events.keys().any(|(p, _)| p == name) || self.functions.iter().any(|f| f == name);
        let distinct = self.events.len();
        if known || distinct < MAX_LABELS {
            name.to_string()
        } else {
            "other".to_string()
        }
    }

    fn function_label(&self, name: &str) -> String {
        if self.functions.iter().any(|f| f == name) {
            name.to_string()
        } else {
            "other".to_string()
        }
    }
}

/// The agent's metrics: shared between the pipeline's sink (which writes) and the HTTP
/// server (which reads on every scrape).
#[derive(Debug)]
pub struct Metrics {
    state: Arc<Mutex<State>>,
    registry: Registry,
}

/// Event types, the `type` label of `aptrace_events_total`.
const EVENT_TYPES: [&str; 7] = [
    "enter",
    "exit",
    "alloc",
    "free",
    "lost",
    "mdev-name",
    "guest-name",
];

fn allocator_name(a: Allocator) -> &'static str {
    match a {
        Allocator::Kmalloc => "kmalloc",
        Allocator::KmemCache => "kmem_cache",
        Allocator::Kvmalloc => "kvmalloc",
        Allocator::Vmalloc => "vmalloc",
    }
}

fn loss_name(s: LossSource) -> &'static str {
    match s {
        LossSource::RingBuffer => "ring-buffer",
        LossSource::KretprobeMiss => "kretprobe-miss",
        LossSource::ExitWithoutEntry => "exit-without-entry",
        LossSource::Recording => "recording",
    }
}

/// The `probe` and `type` labels of one event.
fn event_labels(ev: &Event) -> (&str, &'static str) {
    match &ev.body {
        Body::Enter { func, .. } => (func, "enter"),
        Body::Exit { func, .. } => (func, "exit"),
        Body::Alloc { allocator, .. } => (allocator_name(*allocator), "alloc"),
        Body::Free { allocator, .. } => (allocator_name(*allocator), "free"),
        Body::Lost { source, .. } => (loss_name(*source), "lost"),
        Body::MdevName { .. } => ("agent", "mdev-name"),
        Body::GuestName { .. } => ("agent", "guest-name"),
    }
}

impl Metrics {
    /// Metrics for a pipeline that audits with `profile`: every series exists from now on.
    pub fn new(profile: &Profile) -> Arc<Metrics> {
        let functions: Vec<String> = profile.functions.iter().map(|f| f.name.clone()).collect();
        let mut events = BTreeMap::new();
        for f in &functions {
            events.insert((f.clone(), "enter"), 0);
            events.insert((f.clone(), "exit"), 0);
        }
        let mut current = Pass::default();
        for &a in &MigState::ALL {
            for &b in &MigState::ALL {
                let flags = profile.migration_flags;
                if a.supported(flags) && b.supported(flags) && is_direct_arc(a, b, flags) {
                    current.transitions.insert((a, b), 0);
                }
            }
        }
        for f in &functions {
            current.latency.insert(f.clone(), LatencyHist::new());
            current.calls.insert(f.clone(), Calls::default());
        }
        for d in Direction::ALL {
            current.migrations.insert(d, migration_hists());
        }
        let state = State {
            functions,
            events,
            findings: Kind::ALL.iter().map(|&k| ((k, k.severity()), 0)).collect(),
            uncertain_findings: 0,
            outstanding: 0,
            outstanding_bytes: 0,
            mdevs: Phase::ALL.iter().map(|&p| (p, 0)).collect(),
            mdevs_in_migration_state: MigState::ALL.iter().map(|&s| (s, 0)).collect(),
            base: Pass::default(),
            current,
            probes: Vec::new(),
            passes: 0,
            refreshes: 0,
            last_event_ts_ns: None,
        };
        let state = Arc::new(Mutex::new(state));
        let mut registry = Registry::default();
        registry.register_collector(Box::new(Collector(state.clone())));
        Arc::new(Metrics { state, registry })
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // A panic elsewhere while holding the lock leaves numbers that are still numbers.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// A sink for [`Pipeline::add_sink`](crate::pipeline::Pipeline::add_sink): counts
    /// events and findings, and re-reads the auditor at most every 200 ms while events flow.
    pub fn sink(self: &Arc<Self>) -> MetricsSink {
        MetricsSink {
            metrics: self.clone(),
            last_refresh: None,
        }
    }

    /// The probes and their state (from the live loader or a recording's header).
    pub fn set_probes(&self, probes: &[ProbeStatus]) {
        let mut s = self.lock();
        s.probes = probes.iter().take(MAX_LABELS).cloned().collect();
    }

    /// Re-reads gauges, histograms and transitions from the auditor. Call it when the source
    /// is idle (the sink cannot know) and after the last event.
    pub fn refresh(&self, auditor: &Auditor) {
        let snap = auditor.snapshot();
        let mut pass = Pass {
            lost: snap.lost_events,
            transitions: auditor.transitions().clone(),
            migrations: Direction::ALL
                .iter()
                .map(|&d| {
                    let t = auditor.migration_times(d);
                    (
                        d,
                        (
                            LatencyHist::from_auditor_in(&t.duration, &MIGRATION_BOUNDS),
                            LatencyHist::from_auditor_in(&t.stopped, &MIGRATION_BOUNDS),
                        ),
                    )
                })
                .collect(),
            ..Pass::default()
        };
        let mut mdevs: BTreeMap<Phase, u64> = Phase::ALL.iter().map(|&p| (p, 0)).collect();
        let mut mig: BTreeMap<MigState, u64> = MigState::ALL.iter().map(|&s| (s, 0)).collect();
        for m in &snap.mdevs {
            *mdevs.entry(m.phase).or_default() += 1;
            if let (Some(st), false) = (m.mig_state, m.phase == Phase::Released) {
                *mig.entry(st).or_default() += 1;
            }
        }
        let mut s = self.lock();
        for (name, st) in &snap.functions {
            let label = s.function_label(name);
            pass.latency
                .entry(label.clone())
                .or_default()
                .add(&LatencyHist::from_auditor(&st.latency));
            pass.calls.entry(label).or_default().add(&Calls {
                entries: st.entries,
                exits: st.exits,
                failures: st.failures,
            });
        }
        // Keep the series seeded at 0 (arcs never taken, functions never called).
        for k in s.current.transitions.keys().copied().collect::<Vec<_>>() {
            pass.transitions.entry(k).or_insert(0);
        }
        for f in s.functions.clone() {
            pass.latency.entry(f.clone()).or_default();
            pass.calls.entry(f).or_default();
        }
        s.current = pass;
        s.outstanding = snap.outstanding;
        s.outstanding_bytes = snap.outstanding_bytes;
        s.mdevs = mdevs;
        s.mdevs_in_migration_state = mig;
        s.refreshes += 1;
    }

    /// The auditor is about to be replaced (a replay loop restarts): its totals become the
    /// base that later passes add to, so that counters never go backwards.
    pub fn end_pass(&self, auditor: &Auditor) {
        self.refresh(auditor);
        let mut s = self.lock();
        let cur = std::mem::take(&mut s.current);
        s.base.add(&cur);
        // Re-seed the running pass with the same series at 0.
        let mut seeded = Pass::default();
        for (k, _) in cur.transitions {
            seeded.transitions.insert(k, 0);
        }
        for (k, _) in cur.latency {
            seeded.latency.insert(k, LatencyHist::new());
        }
        for (k, _) in cur.calls {
            seeded.calls.insert(k, Calls::default());
        }
        for d in Direction::ALL {
            seeded.migrations.insert(d, migration_hists());
        }
        s.current = seeded;
        s.passes += 1;
    }

    /// Counts one event (what [`MetricsSink`] does).
    pub fn count_event(&self, ev: &Event) {
        let (probe, ty) = event_labels(ev);
        let key = (probe.to_string(), ty);
        let mut s = self.lock();
        if let Some(n) = s.events.get_mut(&key) {
            *n += 1;
        } else {
            // A new series: bounded (see probe_label).
            let probe = s.probe_label(probe);
            *s.events.entry((probe, ty)).or_default() += 1;
        }
        s.last_event_ts_ns = Some(ev.ts_ns);
    }

    /// Counts one finding (what [`MetricsSink`] does).
    pub fn count_finding(&self, f: &Finding) {
        let mut s = self.lock();
        *s.findings.entry((f.kind, f.severity)).or_default() += 1;
        if f.uncertain {
            s.uncertain_findings += 1;
        }
    }

    /// The exposition, as served at `/metrics`.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        if prometheus_client::encoding::text::encode(&mut out, &self.registry).is_err() {
            out.clear();
            out.push_str("# aptrace: encoding the metrics failed\n# EOF\n");
        }
        out
    }
}

/// The pipeline's view of [`Metrics`].
pub struct MetricsSink {
    metrics: Arc<Metrics>,
    last_refresh: Option<Instant>,
}

impl MetricsSink {
    /// The metrics this sink writes.
    pub fn metrics(&self) -> &Arc<Metrics> {
        &self.metrics
    }
}

impl Sink for MetricsSink {
    fn on_event(&mut self, ev: &Event, _step: &crate::calls::Step<'_>, auditor: &Auditor) {
        self.metrics.count_event(ev);
        let due = self
            .last_refresh
            .is_none_or(|t| t.elapsed() >= REFRESH_EVERY);
        if due {
            self.metrics.refresh(auditor);
            self.last_refresh = Some(Instant::now());
        }
    }

    fn on_finding(&mut self, f: &Finding) {
        self.metrics.count_finding(f);
    }

    fn on_idle(&mut self, auditor: &Auditor) {
        // Gauges must not stay stale when events stop.
        self.metrics.refresh(auditor);
        self.last_refresh = Some(Instant::now());
    }
}

/// A short text for humans on `/`.
pub fn index_page() -> String {
    let mut s = String::new();
    let _ = writeln!(s, "aptrace {} metrics exporter", env!("CARGO_PKG_VERSION"));
    let _ = writeln!(s, "Prometheus exposition: /metrics");
    s
}

#[cfg(test)]
mod tests;
