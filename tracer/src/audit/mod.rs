//! The auditor: the one place that decides what events mean.
//!
//! Pure: no I/O, no clock, no async. `ingest` events in kernel-timestamp order, read
//! `findings` and `snapshot` at any time, `finish` at the end. Everything it concludes can be
//! reproduced from a recording.

pub mod finding;
pub mod migration;
pub mod stats;

use std::collections::{BTreeMap, VecDeque};
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use crate::calls::fasthash::FastMap;
use crate::calls::{as_int, lock_kept, Calls, Exited, Step};
pub use finding::{Finding, Kind, MdevRef, Severity, TaskRef};
use migration::{is_direct_arc, MigState};
pub use stats::{FunctionStats, Histogram};

use crate::model::{hex_u64, Body, Event, LockObs, LossSource};
use crate::profile::{LockContract, Profile, Role};

/// How many findings are kept in full; the rest are counted by kind.
pub const FINDINGS_KEPT: usize = 10_000;
/// How many timeline entries an mdev keeps (older ones are dropped, counted).
const TIMELINE_CAP: usize = 256;
/// How many freed pointers are remembered for double-free detection.
const FREED_CAP: usize = 1 << 16;
/// How many released mdevs are remembered (for use-after-release and reports).
const RELEASED_CAP: usize = 4096;

/// Where an mdev is in its life.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Phase {
    /// init_dev ran; probe has not returned.
    Probing,
    /// probe returned success: registered with VFIO.
    Registered,
    /// A guest has it open.
    Open,
    /// Closed again (registered, not open).
    Closed,
    /// remove ran.
    Removed,
    /// release_dev returned: the object is gone.
    Released,
    /// First seen mid-life: the agent started after it was created.
    Adopted,
}

impl Phase {
    pub const ALL: [Phase; 7] = [
        Phase::Probing,
        Phase::Registered,
        Phase::Open,
        Phase::Closed,
        Phase::Removed,
        Phase::Released,
        Phase::Adopted,
    ];
    pub fn name(self) -> &'static str {
        match self {
            Phase::Probing => "probing",
            Phase::Registered => "registered",
            Phase::Open => "open",
            Phase::Closed => "closed",
            Phase::Removed => "removed",
            Phase::Released => "released",
            Phase::Adopted => "adopted",
        }
    }
}

/// One line of an mdev's timeline.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct TimelineEntry {
    pub seq: u64,
    #[serde(with = "crate::model::dec_u64")]
    pub ts_ns: u64,
    pub what: String,
    /// Migration state after this entry, when it is a migration step.
    pub mig_state: Option<MigState>,
}

/// An allocation still outstanding.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Outstanding {
    #[serde(with = "hex_u64")]
    pub ptr: u64,
    pub bytes: u64,
    pub function: Arc<str>,
    pub mdev: Option<MdevRef>,
    pub seq: u64,
    #[serde(with = "crate::model::dec_u64")]
    pub ts_ns: u64,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub stack: Vec<Arc<str>>,
}

/// What the auditor knows about one mdev, for sinks.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct MdevView {
    #[serde(flatten)]
    pub id: MdevRef,
    pub phase: Phase,
    pub adopted: bool,
    pub open: bool,
    pub guest: Option<TaskRef>,
    pub mig_state: Option<MigState>,
    pub outstanding: u64,
    pub outstanding_bytes: u64,
    pub findings: u64,
    pub events: u64,
    pub timeline: Vec<TimelineEntry>,
    /// Timeline entries dropped to keep memory bounded.
    pub timeline_dropped: u64,
}

/// The auditor's state at one moment, for the TUI, metrics and reports.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Snapshot {
    pub events: u64,
    pub first_ts_ns: Option<u64>,
    pub last_ts_ns: Option<u64>,
    pub lost_events: u64,
    pub mdevs: Vec<MdevView>,
    /// Findings so far, by kind name.
    pub findings_by_kind: BTreeMap<Kind, u64>,
    pub outstanding: u64,
    pub outstanding_bytes: u64,
    /// Per traced function: calls and latency.
    pub functions: BTreeMap<String, FunctionStats>,
    /// Migration steps seen, by (from, to).
    pub transitions: BTreeMap<String, u64>,
}

#[derive(Clone, Debug)]
struct Mdev {
    ptr: u64,
    incarnation: u32,
    uuid: Option<Arc<str>>,
    adopted: bool,
    phase: Phase,
    registered: bool,
    open: bool,
    guest: Option<TaskRef>,
    mig_state: Option<MigState>,
    /// The release_dev exit that ended this incarnation.
    released_by: Option<u64>,
    uar_reported: bool,
    outstanding: u64,
    outstanding_bytes: u64,
    findings: u64,
    events: u64,
    timeline: VecDeque<Noted>,
    timeline_dropped: u64,
}

/// A timeline line as the auditor keeps it: what happened, rendered into
/// [`TimelineEntry::what`] only when a sink asks (most lines are never shown).
#[derive(Clone, Debug)]
enum Note {
    Text(&'static str),
    /// `first seen in {func} (adopted)`
    Adopted(Arc<str>),
    /// `open by pid {pid}`
    OpenBy(u32),
    /// `probe failed ({err})`
    ProbeFailed(i32),
    /// `open failed ({err})`
    OpenFailed(i32),
    /// `mig_data {p:#x} allocated`
    MigAllocated(u64),
    /// `mig_data {p:#x} freed`
    MigFreed(u64),
    /// `request {state} refused`, from the raw requested state.
    Refused(u64),
    /// `{from} → {to}`, `?` for an unknown from.
    Step(Option<MigState>, MigState),
}

impl Note {
    fn render(&self) -> String {
        match self {
            Note::Text(s) => (*s).to_string(),
            Note::Adopted(func) => format!("first seen in {func} (adopted)"),
            Note::OpenBy(pid) => format!("open by pid {pid}"),
            Note::ProbeFailed(err) => format!("probe failed ({err})"),
            Note::OpenFailed(err) => format!("open failed ({err})"),
            Note::MigAllocated(p) => format!("mig_data {p:#x} allocated"),
            Note::MigFreed(p) => format!("mig_data {p:#x} freed"),
            Note::Refused(raw) => format!("request {} refused", state_name(*raw)),
            Note::Step(from, to) => {
                let from = from.map(|s| s.to_string()).unwrap_or_else(|| "?".into());
                format!("{from} → {to}")
            }
        }
    }
}

/// A requested state by name, or `invalid state N`.
fn state_name(raw: u64) -> String {
    MigState::try_from(raw)
        .map(|s| s.to_string())
        .unwrap_or_else(|raw| format!("invalid state {raw}"))
}

#[derive(Clone, Debug)]
struct Noted {
    seq: u64,
    ts_ns: u64,
    note: Note,
    mig_state: Option<MigState>,
}

impl Mdev {
    fn new(ptr: u64, incarnation: u32, adopted: bool) -> Mdev {
        Mdev {
            ptr,
            incarnation,
            uuid: None,
            adopted,
            phase: if adopted {
                Phase::Adopted
            } else {
                Phase::Probing
            },
            registered: adopted,
            open: false,
            guest: None,
            mig_state: None,
            released_by: None,
            uar_reported: false,
            outstanding: 0,
            outstanding_bytes: 0,
            findings: 0,
            events: 0,
            timeline: VecDeque::new(),
            timeline_dropped: 0,
        }
    }

    fn reference(&self) -> MdevRef {
        MdevRef {
            ptr: self.ptr,
            uuid: self.uuid.clone(),
            incarnation: self.incarnation,
        }
    }

    fn note(&mut self, ev: &Event, note: Note, mig_state: Option<MigState>) {
        if self.timeline.len() == TIMELINE_CAP {
            self.timeline.pop_front();
            self.timeline_dropped += 1;
        }
        self.timeline.push_back(Noted {
            seq: ev.seq,
            ts_ns: ev.ts_ns,
            note,
            mig_state,
        });
    }

    fn view(&self) -> MdevView {
        MdevView {
            id: self.reference(),
            phase: self.phase,
            adopted: self.adopted,
            open: self.open,
            guest: self.guest.clone(),
            mig_state: self.mig_state,
            outstanding: self.outstanding,
            outstanding_bytes: self.outstanding_bytes,
            findings: self.findings,
            events: self.events,
            timeline: self
                .timeline
                .iter()
                .map(|n| TimelineEntry {
                    seq: n.seq,
                    ts_ns: n.ts_ns,
                    what: n.note.render(),
                    mig_state: n.mig_state,
                })
                .collect(),
            timeline_dropped: self.timeline_dropped,
        }
    }
}

/// What the auditor keeps about a call in progress.
#[derive(Clone, Debug, Default)]
struct CallState {
    /// set_state: the requested final state (raw), and the state when it was entered.
    requested: Option<u64>,
    state_before: Option<MigState>,
    /// set_state: the state after the last traced step.
    step_state: Option<MigState>,
    step_fault: bool,
    /// A lock finding was raised for this call: no further ordering finding for it.
    lock_fault: bool,
}

type Frame = crate::calls::Frame<CallState>;

#[derive(Clone, Debug)]
struct Allocation {
    bytes: u64,
    mdev: Option<u64>,
    function: Arc<str>,
    tid: u32,
    event: Event,
    stack: Vec<Arc<str>>,
    /// Stored into the profile's field (as opposed to seen only at the allocator).
    in_field: bool,
    /// Already reported (error-path-leak / overwrite-leak): not a leak again.
    reported: bool,
}

#[derive(Clone, Debug)]
struct Freed {
    event: Event,
    tid: u32,
    /// seq of the entry of the call that freed it (to merge the allocator's own kfree).
    call_seq: Option<u64>,
}

/// The end-of-stream summary.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Summary {
    pub events: u64,
    pub mdevs_seen: u64,
    #[serde(with = "crate::model::dec_opt")]
    pub first_ts_ns: Option<u64>,
    #[serde(with = "crate::model::dec_opt")]
    pub last_ts_ns: Option<u64>,
    pub lost_events: u64,
    /// Allocations still outstanding at the end (not leaks: their mdev may be alive).
    pub outstanding: Vec<Outstanding>,
    /// Tasks still inside a traced function at the end (a hang shows here).
    pub unfinished_calls: Vec<UnfinishedCall>,
}

/// A call that never returned before the stream ended.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct UnfinishedCall {
    pub function: Arc<str>,
    pub task: TaskRef,
    pub seq: u64,
    #[serde(with = "crate::model::dec_u64")]
    pub ts_ns: u64,
}

/// The auditor.
pub struct Auditor {
    profile: Profile,
    calls: Calls<CallState>,
    mdevs: FastMap<u64, Mdev>,
    released_order: VecDeque<u64>,
    ledger: FastMap<u64, Allocation>,
    freed: FastMap<u64, Freed>,
    freed_order: VecDeque<u64>,
    guests: FastMap<u32, Arc<str>>,
    /// UUIDs read before the life they name began (the probes read the name at init_dev's
    /// entry, just before the auditor creates the mdev), or for a pointer whose last life
    /// ended: given to the next life of that pointer.
    pending_names: FastMap<u64, Arc<str>>,
    findings: Vec<Finding>,
    /// Every finding raised, by kind (exact even when `findings` stopped keeping them).
    kind_counts: [u64; Kind::ALL.len()],
    /// Raised and not yet taken by `take_raised` (only while streaming).
    raised: Vec<Finding>,
    streaming: bool,
    functions: Vec<FunctionStats>,
    transitions: BTreeMap<(MigState, MigState), u64>,
    events: u64,
    first_ts: Option<u64>,
    last_ts: Option<u64>,
    lost: u64,
    last_loss_seq: Option<u64>,
    mdevs_seen: u64,
}

/// The function of a call event, sharing the event's string.
fn call_name(ev: &Event) -> Arc<str> {
    match &ev.body {
        Body::Enter { func, .. } | Body::Exit { func, .. } => func.clone(),
        _ => Arc::from(""),
    }
}

fn secs(ts: u64) -> String {
    format!("{}.{:06}s", ts / 1_000_000_000, (ts % 1_000_000_000) / 1000)
}

impl Auditor {
    pub fn new(profile: Profile) -> Auditor {
        let functions = vec![FunctionStats::default(); profile.functions.len()];
        Auditor {
            calls: Calls::new(&profile),
            profile,
            mdevs: FastMap::default(),
            released_order: VecDeque::new(),
            ledger: FastMap::default(),
            freed: FastMap::default(),
            freed_order: VecDeque::new(),
            guests: FastMap::default(),
            pending_names: FastMap::default(),
            findings: Vec::new(),
            kind_counts: [0; Kind::ALL.len()],
            raised: Vec::new(),
            streaming: false,
            functions,
            transitions: BTreeMap::new(),
            events: 0,
            first_ts: None,
            last_ts: None,
            lost: 0,
            last_loss_seq: None,
            mdevs_seen: 0,
        }
    }

    pub fn profile(&self) -> &Profile {
        &self.profile
    }

    /// What the last ingested event was as a call, for sinks.
    pub fn step(&self) -> Step<'_> {
        self.calls.step()
    }

    /// Every finding so far, in the order they were raised.
    /// Findings kept in memory: the first [`FINDINGS_KEPT`]; later ones are counted only
    /// (an agent on a host that keeps faulting must not grow without bound).
    pub fn findings(&self) -> &[Finding] {
        &self.findings
    }

    /// Takes one event, in kernel-timestamp order.
    pub fn ingest(&mut self, ev: &Event) {
        self.events += 1;
        self.first_ts.get_or_insert(ev.ts_ns);
        self.last_ts = Some(ev.ts_ns);
        match &ev.body {
            Body::Enter {
                args,
                field,
                lock,
                stack,
                ..
            } => {
                if let Some(frame) = self.calls.enter(ev) {
                    self.on_enter(ev, frame, args, *field, *lock, stack);
                }
            }
            Body::Exit {
                duration_ns, field, ..
            } => {
                if let Some(exited) = self.calls.exit(ev) {
                    self.on_exit(ev, &exited, *duration_ns, *field);
                    self.calls.retire(exited);
                }
            }
            _ => self.ingest_other(ev),
        }
    }

    fn ingest_other(&mut self, ev: &Event) {
        self.calls.other();
        match &ev.body {
            Body::Enter { .. } | Body::Exit { .. } => {}
            Body::Alloc {
                ptr,
                bytes,
                site,
                stack,
                ..
            } => self.on_alloc(ev, *ptr, *bytes, site.clone(), stack),
            Body::Free { ptr, .. } => self.on_free(ev, *ptr, None),
            Body::Lost { count, source } => self.on_lost(ev, *count, *source),
            Body::MdevName { mdev, uuid } => match self.mdevs.get_mut(mdev) {
                Some(m) if m.phase != Phase::Released => m.uuid = Some(uuid.clone()),
                _ => {
                    self.pending_names.insert(*mdev, uuid.clone());
                }
            },
            Body::GuestName { guest_pid, name } => {
                self.guests.insert(*guest_pid, name.clone());
                for m in self.mdevs.values_mut() {
                    if let Some(g) = &mut m.guest {
                        if g.pid == *guest_pid {
                            g.guest = Some(name.clone());
                        }
                    }
                }
            }
        }
    }

    fn task_ref(&self, ev: &Event) -> TaskRef {
        TaskRef {
            pid: ev.task.pid,
            tid: ev.task.tid,
            comm: ev.task.comm.clone(),
            guest: self.guests.get(&ev.task.pid).cloned(),
        }
    }

    #[allow(clippy::too_many_arguments)]
    fn raise(
        &mut self,
        kind: Kind,
        mdev: Option<u64>,
        trigger: &Event,
        function: Option<Arc<str>>,
        message: String,
        mut evidence: Vec<Event>,
        stack: Vec<Arc<str>>,
    ) {
        if !evidence.iter().any(|e| e.seq == trigger.seq) {
            evidence.push(trigger.clone());
        }
        evidence.sort_by_key(|e| e.seq);
        let first = evidence.first().map(|e| e.seq).unwrap_or(trigger.seq);
        let uncertain = kind != Kind::EventsLost && self.last_loss_seq.is_some_and(|l| l >= first);
        let (mdev_ref, guest) = match mdev.and_then(|p| self.mdevs.get_mut(&p)) {
            Some(m) => {
                m.findings += 1;
                (Some(m.reference()), m.guest.clone())
            }
            None => (None, None),
        };
        let task = Some(self.task_ref(trigger));
        self.kind_counts[kind as usize] += 1;
        let finding = Finding {
            kind,
            severity: kind.severity(),
            uncertain,
            mdev: mdev_ref,
            task,
            guest,
            function,
            ts_ns: trigger.ts_ns,
            message,
            events: evidence.iter().map(|e| e.seq).collect(),
            evidence,
            stack,
        };
        if self.streaming {
            self.raised.push(finding.clone());
        }
        if self.findings.len() < FINDINGS_KEPT {
            self.findings.push(finding);
        }
    }

    /// Makes `take_raised` return every finding as it is raised (for live sinks).
    pub fn stream_findings(&mut self) {
        self.streaming = true;
    }

    /// The findings raised since the last call (needs `stream_findings`).
    pub fn take_raised(&mut self) -> Vec<Finding> {
        std::mem::take(&mut self.raised)
    }

    /// Every finding raised, kept or not.
    pub fn findings_total(&self) -> u64 {
        self.kind_counts.iter().sum()
    }

    /// Findings raised of each kind, kept or not.
    pub fn finding_counts(&self) -> BTreeMap<Kind, u64> {
        Kind::ALL
            .iter()
            .map(|&k| (k, self.kind_counts[k as usize]))
            .collect()
    }

    /// A finding proved by its triggering event alone, without a stack.
    fn raise_plain(
        &mut self,
        kind: Kind,
        mdev: Option<u64>,
        trigger: &Event,
        func: &Arc<str>,
        message: String,
    ) {
        self.raise(
            kind,
            mdev,
            trigger,
            Some(func.clone()),
            message,
            Vec::new(),
            Vec::new(),
        );
    }

    fn mdev_label(&self, ptr: u64) -> String {
        match self.mdevs.get(&ptr).and_then(|m| m.uuid.clone()) {
            Some(uuid) => format!("mdev {uuid} ({ptr:#x})"),
            None => format!("mdev {ptr:#x}"),
        }
    }

    fn guest_label(&self, ptr: u64) -> String {
        match self.mdevs.get(&ptr).and_then(|m| m.guest.clone()) {
            Some(g) => match g.guest {
                Some(name) => format!("guest {name} (pid {})", g.pid),
                None => format!("guest pid {} ({})", g.pid, g.comm),
            },
            None => "no guest had it open".to_string(),
        }
    }

    /// The mdev an event is about, adopting it if it was never seen being created.
    /// Raises use-after-release for events on a released incarnation.
    fn touch(&mut self, ptr: u64, ev: &Event, func: &Arc<str>) -> bool {
        if ptr == 0 {
            return false;
        }
        let pending = &mut self.pending_names;
        let m = self.mdevs.entry(ptr).or_insert_with(|| {
            let mut m = Mdev::new(ptr, 0, true);
            m.uuid = pending.remove(&ptr);
            m.note(ev, Note::Adopted(func.clone()), None);
            m
        });
        if m.adopted && m.events == 0 {
            self.mdevs_seen += 1;
        }
        m.events += 1;
        if m.phase == Phase::Released && !m.uar_reported {
            m.uar_reported = true;
            let released = m.released_by;
            let msg = format!(
                "{func} ran on {} after vfio_ap_mdev_release_dev ended its life (event #{})",
                self.mdev_label(ptr),
                released.unwrap_or(0)
            );
            self.raise_plain(Kind::UseAfterRelease, Some(ptr), ev, func, msg);
        }
        true
    }

    fn on_enter(
        &mut self,
        ev: &Event,
        mut frame: Frame,
        args: &[u64],
        field: Option<u64>,
        lock: LockObs,
        stack: &[Arc<str>],
    ) {
        let spec_idx = frame.call.spec;
        self.functions[spec_idx].entries += 1;
        let spec = &self.profile.functions[spec_idx];
        let (role, contract) = (spec.role, spec.lock);
        let func = call_name(ev);
        let arg = |i: usize| args.get(i).copied().unwrap_or(0);
        if !frame.call.trusted {
            // A compiler clone: timed, but its registers may not be the C arguments.
            self.calls.push(frame);
            return;
        }

        // The lock contract, on the kernel's reading of the owner word.
        match (lock_kept(contract, lock), contract) {
            (Some(false), LockContract::Held) => {
                let who = match lock {
                    LockObs::HeldByOther { owner } => {
                        format!("held by another task (owner {owner:#x})")
                    }
                    _ => "free".to_string(),
                };
                let on = frame
                    .call
                    .mdev
                    .map(|p| format!(" on {}", self.mdev_label(p)))
                    .unwrap_or_default();
                let msg = format!(
                    "{func} asserts matrix_dev->mdevs_lock is held by the calling task, but it was {who}{on}"
                );
                frame.x.lock_fault = true;
                let mdev = frame.call.mdev;
                self.raise(
                    Kind::LockNotHeld,
                    mdev,
                    ev,
                    Some(func.clone()),
                    msg,
                    Vec::new(),
                    stack.to_vec(),
                );
            }
            (Some(false), LockContract::NotHeld) => {
                let holder = self
                    .calls
                    .stack(ev.task.tid)
                    .last()
                    .map(|f| (*f.call.enter).clone());
                let inside = holder
                    .as_ref()
                    .and_then(|e| e.body.func().map(|s| format!(", called from {s}")))
                    .unwrap_or_default();
                let msg = format!(
                    "{func} takes matrix_dev->mdevs_lock, but the calling task (pid {}) already holds it{inside}: this task will block on it for ever",
                    ev.task.tid
                );
                frame.x.lock_fault = true;
                let mdev = frame.call.mdev;
                let evidence = holder.into_iter().collect();
                self.raise(
                    Kind::SelfDeadlock,
                    mdev,
                    ev,
                    Some(func.clone()),
                    msg,
                    evidence,
                    stack.to_vec(),
                );
            }
            _ => {}
        }

        match role {
            Role::InitDev => {
                // The calls already gave the probe it is nested in this object.
                if let Some(ptr) = frame.call.mdev {
                    self.begin_life(ptr, ev);
                }
            }
            _ => {
                if let Some(ptr) = frame.call.mdev {
                    self.touch(ptr, ev, &func);
                }
            }
        }
        let Some(ptr) = frame.call.mdev else {
            self.calls.push(frame);
            return;
        };
        match role {
            Role::MigrationCapabilities => {
                let m = &self.mdevs[&ptr];
                if m.registered && !m.adopted && !frame.x.lock_fault {
                    let label = self.mdev_label(ptr);
                    let msg = format!(
                        "{func} ran on {label} after probe had registered it: the VFIO core saw no mig_ops at registration"
                    );
                    self.raise_plain(Kind::LifecycleOrder, Some(ptr), ev, &func, msg);
                }
            }
            Role::Open => {
                let task = self.task_ref(ev);
                let m = self.mdevs.get_mut(&ptr).expect("touched");
                let problem = if m.adopted || frame.x.lock_fault {
                    None
                } else if m.phase == Phase::Probing {
                    Some("before probe registered it")
                } else if m.open {
                    Some("while it was already open")
                } else if m.phase == Phase::Removed {
                    Some("after it was removed")
                } else {
                    None
                };
                m.guest = Some(task);
                m.note(ev, Note::OpenBy(ev.task.pid), None);
                if let Some(problem) = problem {
                    let label = self.mdev_label(ptr);
                    let msg = format!("{func} opened {label} {problem}");
                    self.raise_plain(Kind::LifecycleOrder, Some(ptr), ev, &func, msg);
                }
            }
            Role::Close => {
                let m = &self.mdevs[&ptr];
                if !m.open && !m.adopted && !frame.x.lock_fault && m.phase != Phase::Released {
                    let label = self.mdev_label(ptr);
                    let msg = format!("{func} closed {label}, which was not open");
                    self.raise_plain(Kind::LifecycleOrder, Some(ptr), ev, &func, msg);
                }
            }
            Role::FreeField => {
                if let Some(p) = field.filter(|&p| p != 0) {
                    self.on_free(ev, p, Some((ptr, func.clone())));
                }
            }
            Role::SetState => {
                frame.x.requested = Some(arg(1));
                frame.x.state_before = self.mdevs[&ptr].mig_state;
                frame.x.step_state = frame.x.state_before;
            }
            Role::TransitionStep => {
                let flags = self.profile.migration_flags;
                let to = MigState::try_from(arg(1));
                let parent = self
                    .calls
                    .stack_mut(ev.task.tid)
                    .iter_mut()
                    .rev()
                    .find(|f| f.x.requested.is_some() && f.call.mdev == Some(ptr));
                let mut fault = None;
                if let Some(parent) = parent {
                    if let Some(from) = parent.x.step_state {
                        match to {
                            Ok(to) if is_direct_arc(from, to, flags) => {}
                            Ok(to) => fault = Some(format!("{from} → {to}")),
                            Err(raw) => fault = Some(format!("{from} → invalid state {raw}")),
                        }
                        if fault.is_some() {
                            parent.x.step_fault = true;
                        }
                    }
                }
                if let Some(arc) = fault {
                    let label = self.mdev_label(ptr);
                    let msg = format!(
                        "{func} stepped {label} along {arc}, which is not one direct arc of the VFIO migration state machine"
                    );
                    self.raise_plain(Kind::InvalidMigrationArc, Some(ptr), ev, &func, msg);
                }
            }
            Role::Reset => {
                let m = self.mdevs.get_mut(&ptr).expect("touched");
                if m.mig_state.is_some() {
                    m.mig_state = Some(MigState::Running);
                    m.note(ev, Note::Text("reset"), Some(MigState::Running));
                }
            }
            _ => {}
        }
        self.calls.push(frame);
    }

    fn begin_life(&mut self, ptr: u64, ev: &Event) {
        let incarnation = match self.mdevs.get(&ptr) {
            Some(old) => old.incarnation + 1,
            None => 0,
        };
        self.mdevs_seen += 1;
        // A pointer back after release is a new incarnation, not a use-after-release.
        let mut m = Mdev::new(ptr, incarnation, false);
        m.uuid = self.pending_names.remove(&ptr);
        m.events = 1;
        m.note(ev, Note::Text("init_dev (created)"), None);
        self.mdevs.insert(ptr, m);
    }

    fn on_exit(
        &mut self,
        ev: &Event,
        exited: &Exited<CallState>,
        duration: Option<u64>,
        field: Option<u64>,
    ) {
        let (r, frame) = (&exited.ret, exited.frame.as_ref());
        let (spec_idx, ret, failed) = (r.spec, r.ret, r.failed);
        let stats = &mut self.functions[spec_idx];
        stats.exits += 1;
        if let Some(d) = duration {
            stats.latency.record(d);
        }
        if failed {
            stats.failures += 1;
        }
        let role = self.profile.functions[spec_idx].role;
        let func = call_name(ev);
        if !r.trusted {
            return;
        }
        let Some(ptr) = r.mdev else { return };
        // The return of a call entered before the release ended the life (remove puts the
        // device itself, so release_dev runs nested in it) is not a use after release.
        let straddles = frame.is_some_and(|f| {
            self.mdevs.get(&ptr).is_some_and(|m| {
                m.phase == Phase::Released && m.released_by.is_some_and(|r| r > f.call.enter.seq)
            })
        });
        if role != Role::ReleaseDev && !straddles {
            self.touch(ptr, ev, &func);
        } else if let Some(m) = self.mdevs.get_mut(&ptr) {
            m.events += 1;
        }
        let lock_fault = frame.is_some_and(|f| f.x.lock_fault);
        match role {
            Role::Probe => {
                let m = self.mdevs.get_mut(&ptr).expect("touched");
                if failed {
                    m.note(ev, Note::ProbeFailed(as_int(ret)), None);
                    if let Some(f) = frame {
                        self.error_path_leaks(ptr, f, ev, &func, as_int(ret));
                    }
                } else if m.phase != Phase::Released {
                    m.registered = true;
                    if m.phase == Phase::Probing {
                        m.phase = Phase::Registered;
                    }
                    m.note(ev, Note::Text("probe done (registered)"), None);
                }
            }
            Role::Open => {
                let m = self.mdevs.get_mut(&ptr).expect("touched");
                if failed {
                    m.note(ev, Note::OpenFailed(as_int(ret)), None);
                    if let Some(f) = frame {
                        self.error_path_leaks(ptr, f, ev, &func, as_int(ret));
                    }
                } else {
                    m.open = true;
                    m.phase = Phase::Open;
                }
            }
            Role::Close => {
                let m = self.mdevs.get_mut(&ptr).expect("touched");
                m.open = false;
                if m.phase != Phase::Released {
                    m.phase = Phase::Closed;
                }
                m.mig_state = None;
                m.note(ev, Note::Text("closed"), None);
            }
            Role::Remove => {
                let m = self.mdevs.get_mut(&ptr).expect("touched");
                if m.phase != Phase::Released {
                    m.phase = Phase::Removed;
                }
                m.note(ev, Note::Text("removed"), None);
            }
            Role::ReleaseDev => self.end_life(ptr, ev, &func),
            Role::AllocField if !failed => {
                if let Some(p) = field.filter(|&p| p != 0) {
                    self.alloc_into_field(ptr, p, ev, &func, frame, lock_fault);
                }
            }
            Role::SetState => {
                if let Some(f) = frame {
                    self.check_set_state(ptr, f, ev, ret, failed, &func);
                }
            }
            Role::GetState if !failed => {
                {
                    let Some(read) = field else { return };
                    let m = &self.mdevs[&ptr];
                    if let Some(tracked) = m.mig_state {
                        if read != tracked as u64 {
                            let shown = MigState::try_from(read)
                                .map(|s| s.to_string())
                                .unwrap_or_else(|raw| format!("invalid state {raw}"));
                            let label = self.mdev_label(ptr);
                            let msg = format!(
                                "{func} read back {shown} on {label}, but the last accepted request left it in {tracked}"
                            );
                            self.raise_plain(Kind::InvalidMigrationArc, Some(ptr), ev, &func, msg);
                        }
                    } else if let Ok(s) = MigState::try_from(read) {
                        // Learn the state of an adopted mdev or after an error.
                        if self.mdevs[&ptr].open || self.mdevs[&ptr].adopted {
                            self.mdevs.get_mut(&ptr).expect("touched").mig_state = Some(s);
                        }
                    }
                }
            }
            Role::TransitionStep if !failed => {
                let to = frame
                    .and_then(|f| f.call.arg(1))
                    .and_then(|raw| MigState::try_from(raw).ok());
                if let (Some(to), Some(parent)) = (
                    to,
                    self.calls
                        .stack_mut(ev.task.tid)
                        .iter_mut()
                        .rev()
                        .find(|f| f.x.requested.is_some() && f.call.mdev == Some(ptr)),
                ) {
                    parent.x.step_state = Some(to);
                }
            }
            _ => {}
        }
    }

    #[allow(clippy::too_many_arguments)]
    fn check_set_state(
        &mut self,
        ptr: u64,
        frame: &Frame,
        ev: &Event,
        ret: u64,
        failed: bool,
        func: &Arc<str>,
    ) {
        let flags = self.profile.migration_flags;
        let raw = frame.x.requested.unwrap_or(0);
        let requested = MigState::try_from(raw);
        let before = frame.x.state_before;
        // Messages are built only for a fault: most calls are clean.
        let label = || self.mdev_label(ptr);
        let fault = if frame.x.step_fault {
            None // already reported at the step that broke the machine
        } else if !requested.is_ok_and(|s| s.supported(flags)) {
            (!failed).then(|| {
                format!(
                    "{func} accepted a request for {} on {}, a state outside the device's migration flags ({flags:#x}); it must fail",
                    state_name(raw),
                    label()
                )
            })
        } else if before == Some(MigState::Error) {
            (!failed).then(|| {
                format!("{func} accepted a request for {} on {} while the device was in ERROR; nothing leaves ERROR but a reset", state_name(raw), label())
            })
        } else if failed {
            None
        } else {
            let to = requested.expect("checked supported");
            let wants_file = before != Some(to) && to.opens_data_file();
            let has_file = ret != 0;
            if wants_file && !has_file {
                Some(format!(
                    "{func} moved {} into {to} but returned no migration data file",
                    label()
                ))
            } else if !wants_file && has_file && before.is_some() {
                Some(format!(
                    "{func} returned a file ({ret:#x}) for {} on a request for {to}, whose last arc opens no data stream",
                    label()
                ))
            } else if let (Some(from), false) = (
                before,
                migration::reachable(before.unwrap_or(to), to, flags),
            ) {
                Some(format!(
                    "{func} accepted {from} → {to} on {}, which no walk of direct arcs reaches",
                    label()
                ))
            } else {
                None
            }
        };
        let m = self.mdevs.get_mut(&ptr).expect("touched");
        if failed {
            // An error leaves the state as it was or in ERROR: learn it from get_state.
            if before.is_some() && requested.is_ok_and(|s| s.supported(flags)) {
                m.mig_state = None;
            }
            m.note(ev, Note::Refused(raw), m.mig_state);
        } else if let Ok(to) = requested {
            if let Some(from) = before {
                *self.transitions.entry((from, to)).or_default() += 1;
            }
            // An unsupported state was already reported: what follows cannot be judged.
            m.mig_state = Some(to).filter(|s| s.supported(flags));
            m.note(ev, Note::Step(before, to), Some(to));
        }
        if let Some(msg) = fault {
            self.raise(
                Kind::InvalidMigrationArc,
                Some(ptr),
                ev,
                Some(func.clone()),
                msg,
                vec![(*frame.call.enter).clone()],
                Vec::new(),
            );
        }
    }

    fn alloc_into_field(
        &mut self,
        ptr: u64,
        p: u64,
        ev: &Event,
        func: &Arc<str>,
        frame: Option<&Frame>,
        lock_fault: bool,
    ) {
        // An older allocation still in the same field is lost by this store.
        let older: Option<u64> = self
            .ledger
            .iter()
            .find(|(&q, a)| {
                q != p && a.mdev == Some(ptr) && a.in_field && !a.reported && a.function == *func
            })
            .map(|(&q, _)| q);
        let stack = match frame.map(|f| &f.call.enter.body) {
            Some(Body::Enter { stack, .. }) => stack.clone(),
            _ => Vec::new(),
        };
        let entry = frame.map(|f| (*f.call.enter).clone());
        match self.ledger.get_mut(&p) {
            // The allocator's own event (--all-allocations) came first: same allocation.
            Some(a) if a.tid == ev.task.tid && !a.in_field => {
                a.in_field = true;
                a.function = func.clone();
                a.mdev = Some(ptr);
                if a.stack.is_empty() {
                    a.stack = stack;
                }
            }
            _ => {
                self.freed.remove(&p);
                if let Some(old) = self.ledger.remove(&p) {
                    self.forget_outstanding(&old);
                }
                let m = self.mdevs.get_mut(&ptr).expect("touched");
                m.outstanding += 1;
                self.ledger.insert(
                    p,
                    Allocation {
                        bytes: 0,
                        mdev: Some(ptr),
                        function: func.clone(),
                        tid: ev.task.tid,
                        event: ev.clone(),
                        stack,
                        in_field: true,
                        reported: false,
                    },
                );
            }
        }
        self.mdevs.get_mut(&ptr).expect("touched").note(
            ev,
            Note::MigAllocated(p),
            Some(MigState::Running),
        );
        self.mdevs.get_mut(&ptr).expect("touched").mig_state = Some(MigState::Running);
        if let Some(q) = older {
            let a = self.ledger.get_mut(&q).expect("found above");
            a.reported = true;
            let mut evidence = vec![a.event.clone()];
            evidence.extend(entry);
            let (at, afunc) = (a.event.ts_ns, a.function.clone());
            let msg = format!(
                "{func} stored {p:#x} into mig_data of {} while {q:#x} (allocated by {afunc} at {}) was still there: the older allocation is leaked",
                self.mdev_label(ptr),
                secs(at)
            );
            let _ = lock_fault;
            self.raise(
                Kind::OverwriteLeak,
                Some(ptr),
                ev,
                Some(func.clone()),
                msg,
                evidence,
                Vec::new(),
            );
        }
    }

    fn forget_outstanding(&mut self, a: &Allocation) {
        if let Some(m) = a.mdev.and_then(|p| self.mdevs.get_mut(&p)) {
            m.outstanding = m.outstanding.saturating_sub(1);
            m.outstanding_bytes = m.outstanding_bytes.saturating_sub(a.bytes);
        }
    }

    /// A failed open or probe: what it allocated for the mdev must be gone.
    fn error_path_leaks(&mut self, ptr: u64, frame: &Frame, ev: &Event, func: &Arc<str>, err: i32) {
        let since = frame.call.enter.seq;
        let mut left: Vec<u64> = self
            .ledger
            .iter()
            .filter(|(_, a)| {
                a.mdev == Some(ptr) && !a.reported && a.tid == ev.task.tid && a.event.seq > since
            })
            .map(|(&p, _)| p)
            .collect();
        left.sort_unstable();
        for p in left {
            let a = self.ledger.get_mut(&p).expect("listed");
            a.reported = true;
            let (aev, afunc, astack) = (a.event.clone(), a.function.clone(), a.stack.clone());
            let msg = format!(
                "{func} failed with {err} on {} ({}) but left {p:#x} allocated by {afunc} at {} outstanding",
                self.mdev_label(ptr),
                self.guest_label(ptr),
                secs(aev.ts_ns)
            );
            self.raise(
                Kind::ErrorPathLeak,
                Some(ptr),
                ev,
                Some(func.clone()),
                msg,
                vec![(*frame.call.enter).clone(), aev],
                astack,
            );
        }
    }

    /// release_dev returned: whatever the mdev still holds is leaked.
    fn end_life(&mut self, ptr: u64, ev: &Event, func: &Arc<str>) {
        let mut leaked: Vec<u64> = self
            .ledger
            .iter()
            .filter(|(_, a)| a.mdev == Some(ptr))
            .map(|(&p, _)| p)
            .collect();
        leaked.sort_unstable();
        for p in leaked {
            let a = self.ledger.remove(&p).expect("listed");
            self.forget_outstanding(&a);
            if a.reported {
                continue;
            }
            let what = if a.in_field { "mig_data " } else { "" };
            let size = if a.bytes > 0 {
                format!(" ({} bytes)", a.bytes)
            } else {
                String::new()
            };
            let msg = format!(
                "{what}{p:#x}{size} allocated by {} at {} for {} ({}) was never freed before {func} returned at {}",
                a.function,
                secs(a.event.ts_ns),
                self.mdev_label(ptr),
                self.guest_label(ptr),
                secs(ev.ts_ns)
            );
            self.raise(
                Kind::Leak,
                Some(ptr),
                ev,
                Some(a.function.clone()),
                msg,
                vec![a.event.clone()],
                a.stack.clone(),
            );
        }
        if let Some(m) = self.mdevs.get_mut(&ptr) {
            m.phase = Phase::Released;
            m.open = false;
            m.released_by = Some(ev.seq);
            m.note(ev, Note::Text("released"), None);
        }
        self.released_order.push_back(ptr);
        while self.released_order.len() > RELEASED_CAP {
            if let Some(old) = self.released_order.pop_front() {
                if self
                    .mdevs
                    .get(&old)
                    .is_some_and(|m| m.phase == Phase::Released)
                {
                    self.mdevs.remove(&old);
                }
            }
        }
    }

    fn on_alloc(
        &mut self,
        ev: &Event,
        p: u64,
        bytes: u64,
        site: Option<Arc<str>>,
        stack: &[Arc<str>],
    ) {
        if p == 0 {
            return;
        }
        let ctx = self.calls.context_mdev(ev.task.tid);
        self.freed.remove(&p);
        if let Some(old) = self.ledger.remove(&p) {
            self.forget_outstanding(&old);
        }
        if let Some(m) = ctx.and_then(|c| self.mdevs.get_mut(&c)) {
            m.outstanding += 1;
            m.outstanding_bytes += bytes;
        }
        let function = site.unwrap_or_else(|| Arc::from("?"));
        self.ledger.insert(
            p,
            Allocation {
                bytes,
                mdev: ctx,
                function,
                tid: ev.task.tid,
                event: ev.clone(),
                stack: stack.to_vec(),
                in_field: false,
                reported: false,
            },
        );
    }

    /// A free: from the allocator (`by_field` None) or from the profile's freeing function.
    fn on_free(&mut self, ev: &Event, p: u64, by_field: Option<(u64, Arc<str>)>) {
        if p == 0 {
            return;
        }
        let tid = ev.task.tid;
        let call_seq = match &by_field {
            Some(_) => Some(ev.seq),
            // The allocator's kfree inside the freeing function is the same free.
            None => self
                .calls
                .stack(tid)
                .iter()
                .rev()
                .find(|f| self.profile.functions[f.call.spec].role == Role::FreeField)
                .map(|f| f.call.enter.seq),
        };
        let ctx = by_field
            .as_ref()
            .map(|(m, _)| *m)
            .or_else(|| self.calls.context_mdev(tid));
        let func = by_field
            .as_ref()
            .map(|(_, f)| f.clone())
            .or_else(|| match &ev.body {
                Body::Free { site, .. } => site.clone(),
                _ => None,
            });
        if let Some(a) = self.ledger.remove(&p) {
            self.forget_outstanding(&a);
            if let Some(m) = a.mdev.and_then(|q| self.mdevs.get_mut(&q)) {
                if a.in_field {
                    m.note(ev, Note::MigFreed(p), None);
                }
            }
            self.remember_freed(p, ev, tid, call_seq);
            return;
        }
        if let Some(prev) = self.freed.get(&p) {
            if by_field.is_none()
                && prev.tid == tid
                && prev.call_seq.is_some()
                && prev.call_seq == call_seq
            {
                return; // the kfree inside the freeing function we already counted
            }
            let first = prev.event.clone();
            let label = ctx
                .map(|m| format!(" of {}", self.mdev_label(m)))
                .unwrap_or_default();
            let msg = format!(
                "{p:#x}{label} freed again by {} at {}; it was already freed at {} (event #{}) and not allocated since",
                func.as_deref().unwrap_or("?"),
                secs(ev.ts_ns),
                secs(first.ts_ns),
                first.seq
            );
            self.raise(
                Kind::DoubleFree,
                ctx,
                ev,
                func,
                msg,
                vec![first],
                Vec::new(),
            );
            return;
        }
        // Never seen allocated. Only a finding when we watched the mdev from its birth.
        let known_birth = ctx
            .and_then(|m| self.mdevs.get(&m))
            .is_some_and(|m| !m.adopted);
        self.remember_freed(p, ev, tid, call_seq);
        if known_birth {
            let label = self.mdev_label(ctx.expect("known"));
            let msg = format!(
                "{} freed {p:#x} of {label}, a pointer never seen allocated",
                func.as_deref().unwrap_or("?")
            );
            self.raise(
                Kind::UnknownFree,
                ctx,
                ev,
                func,
                msg,
                Vec::new(),
                Vec::new(),
            );
        }
    }

    fn remember_freed(&mut self, p: u64, ev: &Event, tid: u32, call_seq: Option<u64>) {
        if self
            .freed
            .insert(
                p,
                Freed {
                    event: ev.clone(),
                    tid,
                    call_seq,
                },
            )
            .is_none()
        {
            self.freed_order.push_back(p);
        }
        while self.freed_order.len() > FREED_CAP {
            if let Some(old) = self.freed_order.pop_front() {
                self.freed.remove(&old);
            }
        }
    }

    fn on_lost(&mut self, ev: &Event, count: u64, source: LossSource) {
        self.lost += count;
        self.last_loss_seq = Some(ev.seq);
        let why = match source {
            LossSource::RingBuffer => "the ring buffer was full (raise --ring-buffer-size)",
            LossSource::KretprobeMiss => "kretprobes missed returns (too many concurrent calls)",
            LossSource::ExitWithoutEntry => "returns arrived without their entries",
            LossSource::Recording => "damaged parts of the recording were skipped",
        };
        let msg =
            format!("{count} events were lost: {why}; findings after this point may miss evidence");
        self.raise(
            Kind::EventsLost,
            None,
            ev,
            None,
            msg,
            Vec::new(),
            Vec::new(),
        );
    }

    /// The state now, for sinks.
    pub fn snapshot(&self) -> Snapshot {
        let mut mdevs: Vec<MdevView> = self.mdevs.values().map(Mdev::view).collect();
        mdevs.sort_by_key(|m| (m.id.ptr, m.id.incarnation));
        let findings_by_kind = self.finding_counts();
        Snapshot {
            events: self.events,
            first_ts_ns: self.first_ts,
            last_ts_ns: self.last_ts,
            lost_events: self.lost,
            outstanding: self.ledger.len() as u64,
            outstanding_bytes: self.ledger.values().map(|a| a.bytes).sum(),
            mdevs,
            findings_by_kind,
            functions: self
                .profile
                .functions
                .iter()
                .zip(&self.functions)
                .map(|(s, st)| (s.name.clone(), st.clone()))
                .collect(),
            transitions: self
                .transitions
                .iter()
                .map(|((a, b), n)| (format!("{a}->{b}"), *n))
                .collect(),
        }
    }

    /// Migration steps by (from, to).
    pub fn transitions(&self) -> &BTreeMap<(MigState, MigState), u64> {
        &self.transitions
    }

    /// Per-function statistics, in profile order.
    pub fn function_stats(&self) -> impl Iterator<Item = (&str, &FunctionStats)> {
        self.profile
            .functions
            .iter()
            .map(|s| s.name.as_str())
            .zip(&self.functions)
    }

    /// The end of the stream: outstanding allocations and unfinished calls, not leaks.
    pub fn finish(&self) -> Summary {
        let mut outstanding: Vec<Outstanding> = self
            .ledger
            .iter()
            .filter(|(_, a)| !a.reported)
            .map(|(&ptr, a)| Outstanding {
                ptr,
                bytes: a.bytes,
                function: a.function.clone(),
                mdev: a.mdev.and_then(|m| self.mdevs.get(&m)).map(Mdev::reference),
                seq: a.event.seq,
                ts_ns: a.event.ts_ns,
                stack: a.stack.clone(),
            })
            .collect();
        outstanding.sort_by_key(|o| o.seq);
        let mut unfinished_calls: Vec<UnfinishedCall> = self
            .calls
            .in_progress()
            .map(|f| UnfinishedCall {
                function: f
                    .enter
                    .body
                    .func()
                    .map(Arc::from)
                    .unwrap_or_else(|| Arc::from("")),
                task: self.task_ref(&f.enter),
                seq: f.enter.seq,
                ts_ns: f.enter.ts_ns,
            })
            .collect();
        unfinished_calls.sort_by_key(|u| u.seq);
        Summary {
            events: self.events,
            mdevs_seen: self.mdevs_seen,
            first_ts_ns: self.first_ts,
            last_ts_ns: self.last_ts,
            lost_events: self.lost,
            outstanding,
            unfinished_calls,
        }
    }
}

#[cfg(test)]
mod tests;
