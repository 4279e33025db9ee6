//! The auditor: the one place that decides what calls mean for the driver.
//!
//! Pure: no I/O, no clock, no async. `ingest` events in kernel-timestamp order, read
//! `findings` and `snapshot` at any time, `finish` at the end. Everything it concludes can be
//! reproduced from a recording. The calls themselves (stacks, trust, mdev, failure) come from
//! [`crate::calls`]; each concern's rules live in their own file: `lifecycle`, `locks`,
//! `order`, `ledger`, [`migration`], `losses`.

mod buffers;
mod call_state;
mod files;
pub mod finding;
mod ledger;
mod lifecycle;
mod lives;
mod locks;
mod losses;
pub mod migration;
mod order;
pub mod stats;
mod trust;
mod views;

use std::collections::{BTreeMap, VecDeque};
use std::sync::Arc;

use crate::calls::fasthash::FastMap;
use crate::calls::{Calls, Exited, Step};
use call_state::CallState;
pub use finding::{Finding, Kind, LifeKey, MdevRef, Severity, TaskRef};
pub use ledger::Outstanding;
use ledger::{Allocation, Freed};
use lifecycle::Mdev;
pub use lifecycle::{MdevView, Phase, TimelineEntry};
pub use order::OrderEdge;
pub use stats::{FunctionStats, Histogram};
pub use views::{Snapshot, Summary, UnfinishedCall};

use crate::model::{Body, Event};
// The rules' tests name lock observations through `super::*`.
#[cfg(test)]
use crate::model::LockObs;
use crate::profile::{LockContract, Profile, Role};

/// How far ahead [`Auditor::ingest_all`] asks for an event's lines: 4 to 16 measured alike.
const PREFETCH_AHEAD: usize = 8;

/// How many findings are kept in full; the rest are counted by kind.
pub const FINDINGS_KEPT: usize = 10_000;

type Frame = crate::calls::Frame<CallState>;

/// A call being entered, before it goes on its task's stack: the rules read the call and
/// write what the auditor keeps about it.
struct Entering<'a> {
    call: &'a crate::calls::Entered,
    /// The function's role and lock contract, read from the profile once per entry.
    role: Role,
    contract: LockContract,
    x: &'a mut CallState,
}

/// The auditor.
pub struct Auditor {
    profile: Profile,
    calls: Calls<CallState>,
    /// The current life of each pointer.
    mdevs: lives::Lives,
    /// Earlier lives of pointers that carry a later one now, by (pointer, life): a reused
    /// pointer never hides the device it held before.
    past: BTreeMap<(u64, u32), Mdev>,
    /// Lives that ended (released or superseded), oldest first, to bound what is kept.
    ended_order: VecDeque<(u64, u32)>,
    ledger: FastMap<u64, Allocation>,
    /// Open migration files by `struct file *`.
    files: FastMap<u64, files::MigFile>,
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
    /// Migration steps by (from, to) state: an array, counted on every accepted request.
    transitions: [[u64; 8]; 8],
    /// The profile's migration arcs, as tables.
    arcs: migration::Arcs,
    events: u64,
    first_ts: Option<u64>,
    last_ts: Option<u64>,
    lost: u64,
    last_loss_seq: Option<u64>,
    /// The last untrusted call by the mdev of its enclosing calls (None: no mdev known).
    untrusted: FastMap<Option<u64>, trust::Untrusted>,
    mdevs_seen: u64,
    /// Lock order edges across every task.
    order: order::OrderGraph,
    /// Migration sessions (STOP_COPY and RESUMING periods).
    sessions: migration::session::Sessions,
    /// `--guest`: what the snapshots show (the audit itself sees every guest).
    view_guest: Option<crate::report::GuestFilter>,
    /// The freeing rows no probe could see (see [`Auditor::probes_attached`]).
    unseen_frees: ledger::UnseenFrees,
}

fn secs(ts: u64) -> String {
    format!("{}.{:06}s", ts / 1_000_000_000, (ts % 1_000_000_000) / 1000)
}

impl Auditor {
    pub fn new(profile: Profile) -> Auditor {
        let functions = vec![FunctionStats::default(); profile.functions.len()];
        let arcs = migration::Arcs::new(profile.migration_flags);
        Auditor {
            calls: Calls::new(&profile),
            order: order::OrderGraph::new(&profile),
            profile,
            mdevs: lives::Lives::default(),
            past: BTreeMap::new(),
            ended_order: VecDeque::new(),
            ledger: FastMap::default(),
            files: FastMap::default(),
            freed: FastMap::default(),
            freed_order: VecDeque::new(),
            guests: FastMap::default(),
            pending_names: FastMap::default(),
            findings: Vec::new(),
            kind_counts: [0; Kind::ALL.len()],
            raised: Vec::new(),
            streaming: false,
            unseen_frees: ledger::UnseenFrees::default(),
            functions,
            transitions: [[0; 8]; 8],
            view_guest: None,
            arcs,
            events: 0,
            first_ts: None,
            last_ts: None,
            lost: 0,
            last_loss_seq: None,
            untrusted: FastMap::default(),
            mdevs_seen: 0,
            sessions: Default::default(),
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

    /// Takes one event, in kernel-timestamp order. A call's entry is copied into its frame;
    /// [`Auditor::ingest_owned`] moves it there instead.
    pub fn ingest(&mut self, ev: &Event) {
        self.count(ev);
        match &ev.body {
            Body::Enter { .. } => {
                if let Some(call) = self.calls.enter(ev) {
                    let x = self.on_enter(ev, &call);
                    self.calls.push(call, ev, x);
                }
            }
            Body::Exit { .. } => self.ingest_exit(ev),
            _ => self.ingest_other(ev),
        }
    }

    /// [`Auditor::ingest`] of each event of a run, in order. While one event is judged, the
    /// lines of one a few places on are asked for: read one at a time from memory, an
    /// event's three cache lines were about a quarter of the auditor's time on a large
    /// input (hardware prefetching did not run far enough ahead of the rules).
    pub fn ingest_all(&mut self, evs: &[Event]) {
        for (i, e) in evs.iter().enumerate() {
            if let Some(ahead) = evs.get(i + PREFETCH_AHEAD) {
                crate::model::prefetch(ahead, crate::model::EVENT_LINES);
            }
            self.ingest(e);
        }
    }

    /// [`Auditor::ingest`] of an event the caller gives away. Gives the event back when it
    /// was not kept; a kept one is [`Auditor::last_entry`] until the next event.
    pub fn ingest_owned(&mut self, ev: Event) -> Option<Event> {
        self.count(&ev);
        match &ev.body {
            // Copied into a spare box, whose argument list it reuses, and dropped: moving
            // it in cost more (the box's old event dropped, the new one copied whole).
            Body::Enter { .. } => match self.calls.enter(&ev) {
                Some(call) => {
                    let x = self.on_enter(&ev, &call);
                    self.calls.push(call, &ev, x);
                    None
                }
                None => Some(ev),
            },
            Body::Exit { .. } => {
                self.ingest_exit(&ev);
                Some(ev)
            }
            _ => {
                self.ingest_other(&ev);
                Some(ev)
            }
        }
    }

    /// [`Auditor::ingest_owned`] of a boxed event: an entry's box becomes its call's.
    pub fn ingest_boxed(&mut self, ev: Box<Event>) -> Option<Box<Event>> {
        self.count(&ev);
        match &ev.body {
            Body::Enter { .. } => match self.calls.enter(&ev) {
                Some(call) => {
                    let x = self.on_enter(&ev, &call);
                    self.calls.push_boxed(call, ev, x);
                    None
                }
                None => Some(ev),
            },
            Body::Exit { .. } => {
                self.ingest_exit(&ev);
                Some(ev)
            }
            _ => {
                self.ingest_other(&ev);
                Some(ev)
            }
        }
    }

    /// `ev` in a box, one the auditor is done with when it has one: a pipeline boxes every
    /// event and gives back the boxes the auditor does not keep ([`Auditor::recycle`]).
    #[inline]
    pub fn boxed(&mut self, ev: Event) -> Box<Event> {
        self.calls.boxed_owned(ev)
    }

    /// A box to decode the next event into ([`crate::model::decode_record_into`]): one
    /// the auditor is done with when it has one, else a new one.
    #[inline]
    pub fn spare_box(&mut self) -> Box<Event> {
        self.calls
            .take_spare()
            .unwrap_or_else(|| Box::new(Event::placeholder()))
    }

    /// Takes back a box [`Auditor::ingest_boxed`] returned, to be refilled by
    /// [`Auditor::boxed`].
    #[inline]
    pub fn recycle(&mut self, ev: Box<Event>) {
        self.calls.spare(ev);
    }

    /// The entry [`Auditor::ingest_owned`] kept in its call's frame, while it is the last
    /// event.
    pub fn last_entry(&self) -> Option<&Event> {
        match self.calls.step() {
            Step::Enter { call, .. } => Some(&call.enter),
            _ => None,
        }
    }

    #[inline]
    fn count(&mut self, ev: &Event) {
        self.events += 1;
        self.first_ts.get_or_insert(ev.ts_ns);
        self.last_ts = Some(ev.ts_ns);
    }

    fn ingest_exit(&mut self, ev: &Event) {
        let Body::Exit {
            func,
            duration_ns,
            field,
            ..
        } = &ev.body
        else {
            return;
        };
        if let Some(exited) = self.calls.exit(ev) {
            self.on_exit(ev, &exited, func, *duration_ns, *field);
            self.calls.retire(exited);
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
                for m in self.mdevs.values_mut().chain(self.past.values_mut()) {
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
        evidence: Vec<Event>,
        stack: Vec<Arc<str>>,
    ) {
        self.raise_doubted(
            kind, mdev, trigger, function, message, evidence, stack, None,
        )
    }

    /// [`Auditor::raise`] with a reason of the rule's own to doubt the finding (`doubt`),
    /// which wins over the window's.
    #[allow(clippy::too_many_arguments)]
    fn raise_doubted(
        &mut self,
        kind: Kind,
        mdev: Option<u64>,
        trigger: &Event,
        function: Option<Arc<str>>,
        message: String,
        mut evidence: Vec<Event>,
        stack: Vec<Arc<str>>,
        doubt: Option<String>,
    ) {
        if !evidence.iter().any(|e| e.seq == trigger.seq) {
            evidence.push(trigger.clone());
        }
        evidence.sort_by_key(|e| e.seq);
        evidence.dedup_by_key(|e| e.seq);
        let first = evidence.first().map(|e| e.seq).unwrap_or(trigger.seq);
        let uncertainty = if doubt.is_some() {
            doubt
        } else if kind == Kind::EventsLost {
            None
        } else if self.last_loss_seq.is_some_and(|l| l >= first) {
            Some("events were lost meanwhile".to_string())
        } else {
            self.uncertainty(mdev, first)
        };
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
            uncertain: uncertainty.is_some(),
            uncertainty,
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

    /// Forgets the findings raised since the last `take_raised` (no sink is waiting).
    pub fn clear_raised(&mut self) {
        self.raised.clear();
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

    /// An entered call, judged before it goes on its task's stack: what the auditor keeps
    /// about it.
    #[inline]
    fn on_enter(&mut self, ev: &Event, call: &crate::calls::Entered) -> CallState {
        let mut x = CallState::default();
        let spec = &self.profile.functions[call.spec];
        let (role, contract) = (spec.role, spec.lock);
        self.judge_entry(
            ev,
            &mut Entering {
                call,
                role,
                contract,
                x: &mut x,
            },
        );
        x
    }

    fn judge_entry(&mut self, ev: &Event, frame: &mut Entering<'_>) {
        let Body::Enter {
            func,
            args,
            field,
            lock,
            stack,
            ..
        } = &ev.body
        else {
            return;
        };
        let (field, lock) = (*field, *lock);
        self.functions[frame.call.spec].entries += 1;
        let role = frame.role;
        if !frame.call.trusted {
            // A compiler clone: timed, but its registers may not be the C arguments.
            self.note_untrusted(ev.task.tid, ev.seq, trust::Why::Clone(func.clone()));
            return;
        }
        self.check_lock(ev, frame, lock, stack, func);
        self.check_order(ev, frame, lock, stack, func);
        self.touch_at_entry(ev, frame, func);
        match role {
            Role::MigFileRead | Role::MigFileWrite | Role::MigFileRelease => {
                self.file_used(ev, frame, func)
            }
            Role::BufferFree => {
                if let Some(p) = field {
                    self.buffer_freed(ev, frame, p, func);
                }
            }
            _ => {}
        }
        if let Some(ptr) = frame.call.mdev {
            match role {
                Role::MigrationCapabilities | Role::Open | Role::Close => {
                    self.enter_lifecycle(ev, frame, ptr, func)
                }
                Role::FreeField => {
                    if let Some(p) = field.filter(|&p| p != 0) {
                        self.on_free(ev, p, Some((ptr, func.clone())));
                    }
                }
                Role::SetState | Role::TransitionStep | Role::Reset => {
                    self.enter_migration(ev, frame, ptr, args, func)
                }
                _ => {}
            }
        }
    }

    fn on_exit(
        &mut self,
        ev: &Event,
        exited: &Exited<CallState>,
        func: &Arc<str>,
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
        if r.missed > 0 {
            self.note_untrusted(
                ev.task.tid,
                ev.seq,
                trust::Why::Missed(func.clone(), r.missed),
            );
        }
        if !r.trusted {
            self.note_untrusted(ev.task.tid, ev.seq, trust::Why::Clone(func.clone()));
            return;
        }
        match role {
            Role::MigFileRelease => {
                if let Some(f) = frame {
                    self.file_released(f);
                }
            }
            Role::BufferAlloc if !failed => {
                if let Some(p) = field {
                    self.buffer_allocated(ev, frame, r.mdev, p, func);
                }
            }
            _ => {}
        }
        if matches!(role, Role::MigFileRead | Role::MigFileWrite) {
            // Bytes moved through a migration data file: arg 0 is the file.
            if let Body::Exit { arg0, .. } = &ev.body {
                self.sessions.transfer(*arg0, ret as i64);
            }
        }
        let Some(ptr) = r.mdev else { return };
        match self.mdevs.get_mut(&ptr) {
            // The common case, in one lookup: a live mdev, one more event.
            Some(m) if role != Role::ReleaseDev && m.live_and_counted() => m.events += 1,
            _ => {
                // The return of a call entered before the release ended the life (remove
                // puts the device itself, so release_dev runs nested in it) is not a use
                // after release.
                let straddles = frame.is_some_and(|f| {
                    self.mdevs.get(&ptr).is_some_and(|m| {
                        m.phase == Phase::Released
                            && m.released_by.is_some_and(|r| r > f.call.enter.seq)
                    })
                });
                if role != Role::ReleaseDev && !straddles {
                    self.touch(ptr, ev, func);
                } else if let Some(m) = self.mdevs.get_mut(&ptr) {
                    m.events += 1;
                }
            }
        }
        let lock_fault = frame.is_some_and(|f| f.x.lock_fault());
        match role {
            Role::Probe | Role::Open | Role::Close | Role::Remove => {
                self.exit_lifecycle(ev, frame, ptr, role, ret, failed, func)
            }
            Role::ReleaseDev => self.end_life(ptr, ev, func),
            Role::AllocField if !failed => {
                if let Some(p) = field.filter(|&p| p != 0) {
                    self.alloc_into_field(ptr, p, ev, func, frame, lock_fault);
                }
            }
            Role::SetState | Role::GetState | Role::GetDataSize | Role::TransitionStep => {
                self.exit_migration(ev, frame, ptr, role, ret, failed, field, func)
            }
            Role::MigFileOpen if !failed && ret != 0 => self.file_opened(ptr, ret, ev),
            _ => {}
        }
        if matches!(role, Role::Close | Role::Reset) {
            self.buffers_held_at_close(ptr, ev, func);
        }
        if matches!(role, Role::Close | Role::ReleaseDev) {
            self.sessions.closed(ptr, ev.ts_ns);
        }
    }
}

#[cfg(test)]
mod tests;
