//! Migration sessions: each STOP_COPY or RESUMING period of a device life, built from the
//! accepted state changes, the reads and writes of the data file the state returned, the
//! size the driver reports and what ended the period. Pure bookkeeping: the auditor's
//! migration rules feed it (`rules.rs`), and it decides nothing about faults.

use std::collections::VecDeque;

use serde::{Deserialize, Serialize};

use super::MigState;
use crate::audit::{Histogram, MdevRef, TaskRef};
use crate::calls::fasthash::FastMap;
use crate::model::{dec_u64, hex_opt};

/// Ended sessions kept in memory (older ones are dropped and counted): an agent watching a
/// host for weeks must not grow without bound.
pub const SESSIONS_KEPT: usize = 4096;

/// Which side of a migration a session is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Direction {
    /// STOP_COPY: the device's state is read out (the source host).
    Save,
    /// RESUMING: the device's state is written in (the destination host).
    Restore,
}

impl Direction {
    fn of(state: MigState) -> Option<Direction> {
        match state {
            MigState::StopCopy | MigState::PreCopy | MigState::PreCopyP2p => Some(Direction::Save),
            MigState::Resuming => Some(Direction::Restore),
            _ => None,
        }
    }

    pub const ALL: [Direction; 2] = [Direction::Save, Direction::Restore];

    pub fn name(self) -> &'static str {
        match self {
            Direction::Save => "save",
            Direction::Restore => "restore",
        }
    }

    /// The data state the session is named by.
    pub fn state(self) -> MigState {
        match self {
            Direction::Save => MigState::StopCopy,
            Direction::Restore => MigState::Resuming,
        }
    }
}

/// How a session ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum SessionEnd {
    /// The device was set running again (RUNNING or RUNNING_P2P).
    Running,
    /// VFIO_DEVICE_RESET put it back to RUNNING.
    Reset,
    /// The device was closed (or its life ended) while stopped.
    Closed,
    /// A state change failed or the device reported ERROR: its state is no longer known.
    Error,
    /// Still in progress when the input ended.
    Open,
}

impl SessionEnd {
    pub fn name(self) -> &'static str {
        match self {
            SessionEnd::Running => "running",
            SessionEnd::Reset => "reset",
            SessionEnd::Closed => "closed",
            SessionEnd::Error => "error",
            SessionEnd::Open => "open",
        }
    }
}

/// Where a session's expected size comes from.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum SizeFrom {
    /// The driver's `migration_get_data_size` (VFIO_DEVICE_FEATURE_MIG_DATA_SIZE).
    DataSize,
    /// A read of the STOP_COPY file returned 0: the stream ended there (kernels whose VFIO
    /// core has no data-size op, such as 6.1).
    StreamEnd,
}

impl SizeFrom {
    pub fn name(self) -> &'static str {
        match self {
            SizeFrom::DataSize => "data-size",
            SizeFrom::StreamEnd => "stream-end",
        }
    }
}

/// Time spent in one state during a session.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct StateTime {
    pub state: MigState,
    #[serde(with = "dec_u64")]
    pub entered_ts_ns: u64,
    /// Up to the next state, the session's end or (open) the last event.
    #[serde(with = "dec_u64")]
    pub ns: u64,
}

/// One STOP_COPY or RESUMING period of a device life (a save from PRE_COPY on, where the
/// device has it).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Session {
    /// Ordinal within its source, from 1.
    pub id: u64,
    pub direction: Direction,
    pub mdev: MdevRef,
    /// The task that opened the device (its guest name when QEMU's `-name` gave one).
    pub guest: Option<TaskRef>,
    /// The `struct file *` the data state returned (its reads and writes are counted).
    #[serde(with = "hex_opt")]
    pub file: Option<u64>,
    /// The accepted entry into STOP_COPY or RESUMING.
    #[serde(with = "dec_u64")]
    pub start_ts_ns: u64,
    /// The session's end; for an open session, the last event of the input.
    #[serde(with = "dec_u64")]
    pub end_ts_ns: u64,
    pub end: SessionEnd,
    /// Every state from the device leaving RUNNING to the end, with the time in each.
    pub states: Vec<StateTime>,
    /// Bytes moved: the sum of the successful read (save) or write (restore) returns.
    pub bytes: u64,
    /// Successful reads or writes, and failed ones.
    pub transfers: u64,
    pub failed_transfers: u64,
    /// The size the driver reported, or the stream's end; none for a restore, whose
    /// driver reports nothing, or a save read neither to its end nor sized.
    pub size: Option<u64>,
    pub size_from: Option<SizeFrom>,
    /// From the start to the end.
    #[serde(with = "dec_u64")]
    pub duration_ns: u64,
    /// From the device leaving RUNNING to running again (or the end).
    #[serde(with = "dec_u64")]
    pub stopped_ns: u64,
}

impl Session {
    /// The guest's name, else its pid.
    pub fn guest_label(&self) -> String {
        match &self.guest {
            Some(TaskRef {
                guest: Some(name), ..
            }) => name.to_string(),
            Some(t) => format!("pid {}", t.pid),
            None => "?".to_string(),
        }
    }

    /// The guest's `-name`, when known.
    pub fn guest_name(&self) -> Option<&str> {
        self.guest.as_ref().and_then(|g| g.guest.as_deref())
    }

    /// The state it was last in.
    pub fn last_state(&self) -> Option<MigState> {
        self.states.last().map(|s| s.state)
    }

    /// `72 / 72 B (data-size)`, `16 B`.
    pub fn bytes_text(&self) -> String {
        match (self.size, self.size_from) {
            (Some(size), Some(from)) => format!("{} / {size} B ({})", self.bytes, from.name()),
            _ => format!("{} B", self.bytes),
        }
    }
}

/// A device's states since it last left RUNNING.
#[derive(Clone, Debug)]
struct Device {
    life: u32,
    state: Option<MigState>,
    since: u64,
    stopped_since: Option<u64>,
    /// States of this stopped period before a session started (the STOP ahead of it).
    spans: Vec<StateTime>,
    /// A data size reported before the session it belongs to started.
    pending_size: Option<u64>,
}

impl Device {
    fn new(life: u32) -> Device {
        Device {
            life,
            state: None,
            since: 0,
            stopped_since: None,
            spans: Vec::new(),
            pending_size: None,
        }
    }
}

/// An open session's stop time while its device still runs (pre-copy): closing its books
/// then gives a stop time of 0.
const NOT_STOPPED: u64 = u64::MAX;

/// Running states: the device executes (it is not stopped for migration).
fn running(s: MigState) -> bool {
    matches!(
        s,
        MigState::Running | MigState::RunningP2p | MigState::PreCopy | MigState::PreCopyP2p
    )
}

/// The sessions of one source.
#[derive(Clone, Debug, Default)]
pub struct Sessions {
    devices: FastMap<u64, Device>,
    /// Open sessions by mdev pointer.
    open: FastMap<u64, Session>,
    /// Data files of open sessions, to their mdev pointer.
    files: FastMap<u64, u64>,
    ended: VecDeque<Session>,
    dropped: u64,
    next_id: u64,
    /// Durations and stop times of every ended session (kept or dropped), by direction.
    times: [SessionTimes; 2],
}

/// The times of ended sessions of one direction, cumulative (for metrics: they never go
/// backwards, whatever is dropped from the kept list).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SessionTimes {
    /// Session durations, ns.
    pub duration: Histogram,
    /// Device stop times, ns.
    pub stopped: Histogram,
}

/// The device of life `life` of pointer `ptr` (a new life starts afresh).
fn device(devices: &mut FastMap<u64, Device>, ptr: u64, life: u32) -> &mut Device {
    let d = devices.entry(ptr).or_insert_with(|| Device::new(life));
    if d.life != life {
        *d = Device::new(life);
    }
    d
}

impl Sessions {
    /// `set_state_of` with the device's reference and guest at hand, as the tests have them.
    #[cfg(test)]
    pub fn set_state(
        &mut self,
        mdev: &MdevRef,
        guest: Option<&TaskRef>,
        to: MigState,
        file: u64,
        ts: u64,
    ) {
        let who = || (mdev.clone(), guest.cloned());
        self.set_state_of(mdev.ptr, mdev.incarnation, who, to, file, ts);
    }

    /// An accepted state change of life `life` of `ptr` to `to` at `ts`; `file` is what
    /// set_state returned (0: none). `who` names the device and its guest, asked only when
    /// a session starts (most changes start none, and the names are shared strings whose
    /// copies cost more than the rest of the change).
    pub fn set_state_of(
        &mut self,
        ptr: u64,
        life: u32,
        who: impl FnOnce() -> (MdevRef, Option<TaskRef>),
        to: MigState,
        file: u64,
        ts: u64,
    ) {
        let d = device(&mut self.devices, ptr, life);
        let from = d.state;
        if from == Some(to) {
            return;
        }
        if let Some(s) = from {
            let span = StateTime {
                state: s,
                entered_ts_ns: d.since,
                ns: ts.saturating_sub(d.since),
            };
            match self.open.get_mut(&ptr) {
                Some(sess) => {
                    if let Some(last) = sess.states.last_mut() {
                        last.ns = span.ns;
                    }
                }
                None if d.stopped_since.is_some() => d.spans.push(span),
                None => {}
            }
        }
        d.state = Some(to);
        d.since = ts;
        // PRE_COPY and PRE_COPY_P2P save while the device still runs: the save session
        // starts there (RUNNING -> PRE_COPY returns its data file), the stop only at STOP_COPY.
        let pre_copy = matches!(to, MigState::PreCopy | MigState::PreCopyP2p);
        if running(to) {
            d.stopped_since = None;
            d.spans.clear();
            if !pre_copy {
                self.end(ptr, SessionEnd::Running, ts);
                return;
            }
        } else if d.stopped_since.is_none() {
            // From RUNNING, or from a state not seen (a device opens RUNNING).
            d.stopped_since = Some(ts);
        }
        let entered = StateTime {
            state: to,
            entered_ts_ns: ts,
            ns: 0,
        };
        if let Some(sess) = self.open.get_mut(&ptr) {
            sess.states.push(entered);
            if !pre_copy && sess.stopped_ns == NOT_STOPPED {
                sess.stopped_ns = ts;
            }
            if file != 0 && Direction::of(to) == Some(sess.direction) {
                sess.file = Some(file);
                self.files.insert(file, ptr);
            }
            return;
        }
        let Some(direction) = Direction::of(to) else {
            return;
        };
        let mut states = std::mem::take(&mut d.spans);
        states.push(entered);
        let size = d
            .pending_size
            .take()
            .filter(|_| direction == Direction::Save);
        let stopped_since = if pre_copy {
            NOT_STOPPED
        } else {
            d.stopped_since.unwrap_or(ts)
        };
        self.next_id += 1;
        let (mdev, guest) = who();
        let sess = Session {
            id: self.next_id,
            direction,
            mdev,
            guest,
            file: (file != 0).then_some(file),
            start_ts_ns: ts,
            end_ts_ns: ts,
            end: SessionEnd::Open,
            states,
            bytes: 0,
            transfers: 0,
            failed_transfers: 0,
            size,
            size_from: size.map(|_| SizeFrom::DataSize),
            duration_ns: 0,
            // Holds the time the device stopped until the session is rendered.
            stopped_ns: stopped_since,
        };
        if file != 0 {
            self.files.insert(file, ptr);
        }
        self.open.insert(ptr, sess);
    }

    /// A state change that failed: the device's state is no longer known.
    pub fn set_state_failed(&mut self, ptr: u64, ts: u64) {
        if let Some(d) = self.devices.get_mut(&ptr) {
            d.state = None;
        }
        self.end(ptr, SessionEnd::Error, ts);
    }

    /// get_state read ERROR back.
    pub fn error_state(&mut self, ptr: u64, ts: u64) {
        self.set_state_failed(ptr, ts);
    }

    /// VFIO_DEVICE_RESET: back to RUNNING.
    pub fn reset(&mut self, ptr: u64, ts: u64) {
        if let Some(d) = self.devices.get_mut(&ptr) {
            d.state = Some(MigState::Running);
            d.since = ts;
            d.stopped_since = None;
            d.spans.clear();
        }
        self.end(ptr, SessionEnd::Reset, ts);
    }

    /// close_device returned, or the device's life ended.
    pub fn closed(&mut self, ptr: u64, ts: u64) {
        self.end(ptr, SessionEnd::Closed, ts);
        self.devices.remove(&ptr);
    }

    /// get_data_size reported `size` bytes of saved state.
    pub fn data_size(&mut self, mdev: &MdevRef, size: u64) {
        match self.open.get_mut(&mdev.ptr) {
            Some(s) if s.direction == Direction::Save => {
                s.size = Some(size);
                s.size_from = Some(SizeFrom::DataSize);
            }
            Some(_) => {}
            None => device(&mut self.devices, mdev.ptr, mdev.incarnation).pending_size = Some(size),
        }
    }

    /// An `ssize_t` call on `file` returned `ret` (bytes moved, or a negative errno).
    /// False when the file is no open session's.
    pub fn transfer(&mut self, file: u64, ret: i64) -> bool {
        let Some(sess) = self.files.get(&file).and_then(|p| self.open.get_mut(p)) else {
            return false;
        };
        if ret < 0 {
            sess.failed_transfers += 1;
            return true;
        }
        sess.transfers += 1;
        sess.bytes = sess.bytes.saturating_add(ret as u64);
        if ret == 0 && sess.direction == Direction::Save && sess.size_from.is_none() {
            sess.size = Some(sess.bytes);
            sess.size_from = Some(SizeFrom::StreamEnd);
        }
        true
    }

    fn end(&mut self, ptr: u64, how: SessionEnd, ts: u64) {
        let Some(mut sess) = self.open.remove(&ptr) else {
            return;
        };
        self.files.retain(|_, p| *p != ptr);
        finish(&mut sess, how, ts);
        let t = &mut self.times[sess.direction as usize];
        t.duration.record(sess.duration_ns);
        t.stopped.record(sess.stopped_ns);
        if self.ended.len() == SESSIONS_KEPT {
            self.ended.pop_front();
            self.dropped += 1;
        }
        self.ended.push_back(sess);
    }

    /// The times of every ended session of `direction`.
    pub fn times(&self, direction: Direction) -> &SessionTimes {
        &self.times[direction as usize]
    }

    /// Ended sessions dropped to bound memory.
    pub fn dropped(&self) -> u64 {
        self.dropped
    }

    /// Every session kept, in start order: open ones as they stand at `now` (the last event).
    pub fn view(&self, now: u64) -> Vec<Session> {
        let mut all: Vec<Session> = self.ended.iter().cloned().collect();
        all.extend(self.open.values().map(|s| {
            let mut s = s.clone();
            let at = now.max(s.start_ts_ns);
            finish(&mut s, SessionEnd::Open, at);
            s
        }));
        all.sort_by_key(|s| s.id);
        all
    }
}

/// Closes a session's books at `ts`.
fn finish(sess: &mut Session, how: SessionEnd, ts: u64) {
    if let Some(last) = sess.states.last_mut() {
        last.ns = ts.saturating_sub(last.entered_ts_ns);
    }
    sess.end = how;
    sess.end_ts_ns = ts;
    sess.duration_ns = ts.saturating_sub(sess.start_ts_ns);
    sess.stopped_ns = ts.saturating_sub(sess.stopped_ns);
}

#[cfg(test)]
mod tests;
