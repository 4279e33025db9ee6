//! The mdev's life: creation at init_dev, registration, open and close, removal, release;
//! adoption of objects first seen mid-life, use after release, and the timeline.

use std::borrow::Cow;
use std::collections::VecDeque;
use std::sync::{Arc, OnceLock};

use serde::{Deserialize, Serialize};

use super::migration::rules::state_name;
use super::migration::MigState;
use super::{Auditor, Entering, Frame, Kind, MdevRef, TaskRef};
use crate::calls::as_int;
use crate::calls::show::errno_name;
use crate::model::Event;
use crate::profile::Role;

/// How many timeline entries an mdev keeps (older ones are dropped, counted).
const TIMELINE_CAP: usize = 256;
/// Timeline entries a life has room for from its start: a life with guest sessions notes a
/// few dozen, and growing from empty reallocated (and copied) the timeline six times a life.
const TIMELINE_START: usize = 32;
/// How many ended lives are remembered (for use-after-release and reports).
const ENDED_CAP: usize = 4096;

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
    /// Shared text for the common entries (a report renders every kept entry of every life).
    pub what: Cow<'static, str>,
    /// Migration state after this entry, when it is a migration step.
    pub mig_state: Option<MigState>,
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

#[derive(Clone, Debug)]
pub(super) struct Mdev {
    pub(super) ptr: u64,
    pub(super) incarnation: u32,
    pub(super) uuid: Option<Arc<str>>,
    pub(super) adopted: bool,
    pub(super) phase: Phase,
    pub(super) registered: bool,
    pub(super) open: bool,
    pub(super) guest: Option<TaskRef>,
    pub(super) mig_state: Option<MigState>,
    /// The release_dev exit that ended this incarnation.
    pub(super) released_by: Option<u64>,
    pub(super) uar_reported: bool,
    pub(super) outstanding: u64,
    pub(super) outstanding_bytes: u64,
    pub(super) findings: u64,
    pub(super) events: u64,
    pub(super) timeline: VecDeque<Noted>,
    pub(super) timeline_dropped: u64,
}

/// A timeline line as the auditor keeps it: what happened, rendered into
/// [`TimelineEntry::what`] only when a sink asks (most lines are never shown).
#[derive(Clone, Debug)]
pub(super) enum Note {
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
    /// `superseded by life {n} (never released)`
    Superseded(u32),
}

impl Note {
    fn render(&self) -> Cow<'static, str> {
        match self {
            Note::Text(s) => Cow::Borrowed(s),
            Note::Step(from, to) => Cow::Borrowed(step_text(*from, *to)),
            Note::Adopted(func) => format!("first seen in {func} (adopted)").into(),
            Note::OpenBy(pid) => format!("open by pid {pid}").into(),
            Note::ProbeFailed(err) => format!("probe failed ({})", errno_name(*err)).into(),
            Note::OpenFailed(err) => format!("open failed ({})", errno_name(*err)).into(),
            Note::MigAllocated(p) => mig_data_text(*p, " allocated"),
            Note::MigFreed(p) => mig_data_text(*p, " freed"),
            Note::Refused(raw) => format!("request {} refused", state_name(*raw)).into(),
            Note::Superseded(n) => format!("superseded by life {n} (never released)").into(),
        }
    }
}

/// `mig_data {p:#x}{what}`, in one allocation and without the formatting machinery (two
/// such entries per open, and a report renders every kept one).
fn mig_data_text(p: u64, what: &str) -> Cow<'static, str> {
    let mut s = String::with_capacity(9 + 18 + what.len());
    s.push_str("mig_data ");
    push_hex(&mut s, p);
    s.push_str(what);
    Cow::Owned(s)
}

/// Appends `{v:#x}`, digit by digit.
fn push_hex(s: &mut String, v: u64) {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    s.push_str("0x");
    let digits = (64 - v.leading_zeros()).div_ceil(4).max(1);
    for k in (0..digits).rev() {
        s.push(char::from(DIGITS[((v >> (4 * k)) & 0xf) as usize]));
    }
}

/// `{from} → {to}` (`?` for an unknown from), written once for every pair of states.
fn step_text(from: Option<MigState>, to: MigState) -> &'static str {
    const STATES: usize = MigState::ALL.len();
    static TEXTS: OnceLock<Vec<String>> = OnceLock::new();
    let texts = TEXTS.get_or_init(|| {
        let froms = std::iter::once("?").chain(MigState::ALL.iter().map(|s| s.name()));
        froms
            .flat_map(|f| MigState::ALL.iter().map(move |t| format!("{f} → {t}")))
            .collect()
    });
    let row = from.map_or(0, |f| 1 + f as usize);
    &texts[row * STATES + to as usize]
}

#[derive(Clone, Debug)]
pub(super) struct Noted {
    pub(super) seq: u64,
    pub(super) ts_ns: u64,
    pub(super) note: Note,
    pub(super) mig_state: Option<MigState>,
}

impl Mdev {
    pub(super) fn new(ptr: u64, incarnation: u32, adopted: bool) -> Mdev {
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
            timeline: VecDeque::with_capacity(TIMELINE_START),
            timeline_dropped: 0,
        }
    }

    pub(super) fn reference(&self) -> MdevRef {
        MdevRef {
            ptr: self.ptr,
            uuid: self.uuid.clone(),
            incarnation: self.incarnation,
        }
    }

    /// Not released, and counted as seen: an event on it only adds one to its events
    /// ([`Auditor::touch`]'s common case).
    #[inline]
    pub(super) fn live_and_counted(&self) -> bool {
        self.phase != Phase::Released && !(self.adopted && self.events == 0)
    }

    pub(super) fn note(&mut self, ev: &Event, note: Note, mig_state: Option<MigState>) {
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

    /// What sinks see of this life; its timeline only `with_timeline`.
    pub(super) fn view(&self, with_timeline: bool) -> MdevView {
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
            timeline: match with_timeline {
                // Mapped straight from the deque, the vector is allocated once at its size.
                true => self
                    .timeline
                    .iter()
                    .map(|n| TimelineEntry {
                        seq: n.seq,
                        ts_ns: n.ts_ns,
                        what: n.note.render(),
                        mig_state: n.mig_state,
                    })
                    .collect(),
                false => Vec::new(),
            },
            timeline_dropped: self.timeline_dropped,
        }
    }
}

impl Auditor {
    pub(super) fn mdev_label(&self, ptr: u64) -> String {
        match self.mdevs.get(&ptr).and_then(|m| m.uuid.clone()) {
            Some(uuid) => format!("mdev {uuid} ({ptr:#x})"),
            None => format!("mdev {ptr:#x}"),
        }
    }

    pub(super) fn guest_label(&self, ptr: u64) -> String {
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
    // Nearly every call finds a live mdev and counts one event: that part is inlined into
    // the rules, the rest (adoption, the finding) is not, so the common case pays no frame.
    #[inline(always)]
    pub(super) fn touch(&mut self, ptr: u64, ev: &Event, func: &Arc<str>) -> bool {
        if ptr == 0 {
            return false;
        }
        match self.mdevs.get_mut(&ptr) {
            Some(m) if m.live_and_counted() => {
                m.events += 1;
                true
            }
            _ => self.touch_rarely(ptr, ev, func),
        }
    }

    #[inline(never)]
    fn touch_rarely(&mut self, ptr: u64, ev: &Event, func: &Arc<str>) -> bool {
        let pending = &mut self.pending_names;
        let m = self.mdevs.get_or_insert_with(ptr, || {
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

    pub(super) fn begin_life(&mut self, ptr: u64, ev: &Event, func: &Arc<str>) {
        let incarnation = match self.mdevs.get(&ptr) {
            Some(old) => old.incarnation + 1,
            None => 0,
        };
        if let Some(old) = self.mdevs.get(&ptr).filter(|m| m.phase != Phase::Released) {
            // The object came back from init_dev while its last life was never seen ending:
            // its release was missed, or the driver reused an object still in use.
            let (life, phase) = (old.incarnation, old.phase);
            let label = self.mdev_label(ptr);
            let msg = format!(
                "{func} began life {incarnation} of {label} while life {life} was never released (last seen {}): either its release was not traced or the object was reused while still in use",
                phase.name()
            );
            self.raise_plain(Kind::LifecycleOrder, Some(ptr), ev, func, msg);
            if let Some(old) = self.mdevs.get_mut(&ptr) {
                old.note(ev, Note::Superseded(incarnation), None);
            }
            self.ended_order.push_back((ptr, life));
        }
        if let Some(old) = self.mdevs.remove(&ptr) {
            self.past.insert((ptr, old.incarnation), old);
        }
        self.mdevs_seen += 1;
        // A pointer back after release is a new incarnation, not a use-after-release.
        let mut m = Mdev::new(ptr, incarnation, false);
        m.uuid = self.pending_names.remove(&ptr);
        m.events = 1;
        m.note(ev, Note::Text("init_dev (created)"), None);
        self.mdevs.insert(ptr, m);
        self.forget_old_lives();
    }

    /// A life of a pointer, current or past.
    pub(super) fn life_mut(&mut self, ptr: u64, life: u32) -> Option<&mut Mdev> {
        match self.mdevs.get_mut(&ptr) {
            Some(m) if m.incarnation == life => Some(m),
            _ => self.past.get_mut(&(ptr, life)),
        }
    }

    pub(super) fn life(&self, ptr: u64, life: u32) -> Option<&Mdev> {
        match self.mdevs.get(&ptr) {
            Some(m) if m.incarnation == life => Some(m),
            _ => self.past.get(&(ptr, life)),
        }
    }

    /// The current life of a pointer, when it has one.
    pub(super) fn current_life(&self, ptr: u64) -> Option<u32> {
        self.mdevs.get(&ptr).map(|m| m.incarnation)
    }

    /// Keeps at most [`ENDED_CAP`] ended lives, dropping the oldest.
    fn forget_old_lives(&mut self) {
        while self.ended_order.len() > ENDED_CAP {
            let Some((ptr, life)) = self.ended_order.pop_front() else {
                break;
            };
            if self.past.remove(&(ptr, life)).is_none()
                && self
                    .mdevs
                    .get(&ptr)
                    .is_some_and(|m| m.incarnation == life && m.phase == Phase::Released)
            {
                self.mdevs.remove(&ptr);
            }
        }
    }

    /// The entry of a call with an mdev: the life begins at init_dev; other calls touch it.
    pub(super) fn touch_at_entry(&mut self, ev: &Event, frame: &Entering<'_>, func: &Arc<str>) {
        let Some(ptr) = frame.call.mdev else { return };
        match frame.role {
            // The calls already gave the probe it is nested in this object.
            Role::InitDev => self.begin_life(ptr, ev, func),
            _ => {
                self.touch(ptr, ev, func);
            }
        }
    }

    /// Order rules at the entry of capabilities, open and close.
    pub(super) fn enter_lifecycle(
        &mut self,
        ev: &Event,
        frame: &Entering<'_>,
        ptr: u64,
        func: &Arc<str>,
    ) {
        match frame.role {
            Role::MigrationCapabilities => {
                let m = &self.mdevs[&ptr];
                if m.registered && !m.adopted && !frame.x.lock_fault() {
                    let label = self.mdev_label(ptr);
                    let msg = format!(
                        "{func} ran on {label} after probe had registered it: the VFIO core saw no mig_ops at registration"
                    );
                    self.raise_plain(Kind::LifecycleOrder, Some(ptr), ev, func, msg);
                }
            }
            Role::Open => {
                let task = self.task_ref(ev);
                let m = self.mdevs.get_mut(&ptr).expect("touched");
                let problem = if m.adopted || frame.x.lock_fault() {
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
                    self.raise_plain(Kind::LifecycleOrder, Some(ptr), ev, func, msg);
                }
            }
            Role::Close => {
                let m = &self.mdevs[&ptr];
                if !m.open && !m.adopted && !frame.x.lock_fault() && m.phase != Phase::Released {
                    let label = self.mdev_label(ptr);
                    let msg = format!("{func} closed {label}, which was not open");
                    self.raise_plain(Kind::LifecycleOrder, Some(ptr), ev, func, msg);
                }
            }
            _ => {}
        }
    }

    /// The return of probe, open, close or remove.
    #[allow(clippy::too_many_arguments)]
    pub(super) fn exit_lifecycle(
        &mut self,
        ev: &Event,
        frame: Option<&Frame>,
        ptr: u64,
        role: Role,
        ret: u64,
        failed: bool,
        func: &Arc<str>,
    ) {
        match role {
            Role::Probe => {
                let m = self.mdevs.get_mut(&ptr).expect("touched");
                if failed {
                    m.note(ev, Note::ProbeFailed(as_int(ret)), None);
                    if let Some(f) = frame {
                        self.error_path_leaks(ptr, f, ev, func, as_int(ret));
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
                        self.error_path_leaks(ptr, f, ev, func, as_int(ret));
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
            _ => {}
        }
    }

    /// release_dev returned: whatever the mdev still holds is leaked, and its life ends.
    pub(super) fn end_life(&mut self, ptr: u64, ev: &Event, func: &Arc<str>) {
        self.leaks_at_release(ptr, ev, func);
        if let Some(m) = self.mdevs.get_mut(&ptr) {
            if m.phase != Phase::Released {
                self.ended_order.push_back((ptr, m.incarnation));
            }
            m.phase = Phase::Released;
            m.open = false;
            m.released_by = Some(ev.seq);
            m.note(ev, Note::Text("released"), None);
        }
        self.forget_old_lives();
    }
}

#[cfg(test)]
mod step_text_tests {
    use super::*;

    #[test]
    fn mig_data_reads_as_the_formatters() {
        for v in [
            0,
            1,
            0xf,
            0x10,
            0xdead_beef,
            0xffff_8880_1000_0000,
            u64::MAX,
        ] {
            assert_eq!(mig_data_text(v, " freed"), format!("mig_data {v:#x} freed"));
        }
    }

    #[test]
    fn every_step_reads_as_its_two_states() {
        for to in MigState::ALL {
            assert_eq!(step_text(None, to), format!("? → {to}"));
            for from in MigState::ALL {
                assert_eq!(step_text(Some(from), to), format!("{from} → {to}"));
            }
        }
    }
}
