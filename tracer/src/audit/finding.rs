//! Findings: what the auditor concludes, in a stable vocabulary (the kinds in the README and
//! docs/report-schema.md).

use std::sync::Arc;

use serde::{Deserialize, Serialize};

use crate::model::{dec_u64, hex_u64, Event};

/// The kinds of findings. Their names are the JSON and metrics vocabulary: never rename.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Kind {
    Leak,
    OverwriteLeak,
    DoubleFree,
    UnknownFree,
    LockNotHeld,
    SelfDeadlock,
    LockOrder,
    LifecycleOrder,
    UseAfterRelease,
    InvalidMigrationArc,
    ErrorPathLeak,
    FileAfterRelease,
    BufferHeldAtClose,
    EventsLost,
}

impl Kind {
    pub const ALL: [Kind; 14] = [
        Kind::Leak,
        Kind::OverwriteLeak,
        Kind::DoubleFree,
        Kind::UnknownFree,
        Kind::LockNotHeld,
        Kind::SelfDeadlock,
        Kind::LockOrder,
        Kind::LifecycleOrder,
        Kind::UseAfterRelease,
        Kind::InvalidMigrationArc,
        Kind::ErrorPathLeak,
        Kind::FileAfterRelease,
        Kind::BufferHeldAtClose,
        Kind::EventsLost,
    ];

    /// The stable name (`leak`, `self-deadlock`, ...).
    pub fn name(self) -> &'static str {
        match self {
            Kind::Leak => "leak",
            Kind::OverwriteLeak => "overwrite-leak",
            Kind::DoubleFree => "double-free",
            Kind::UnknownFree => "unknown-free",
            Kind::LockNotHeld => "lock-not-held",
            Kind::SelfDeadlock => "self-deadlock",
            Kind::LockOrder => "lock-order",
            Kind::LifecycleOrder => "lifecycle-order",
            Kind::UseAfterRelease => "use-after-release",
            Kind::InvalidMigrationArc => "invalid-migration-arc",
            Kind::ErrorPathLeak => "error-path-leak",
            Kind::FileAfterRelease => "file-after-release",
            Kind::BufferHeldAtClose => "buffer-held-at-close",
            Kind::EventsLost => "events-lost",
        }
    }

    pub fn severity(self) -> Severity {
        match self {
            Kind::UnknownFree | Kind::LifecycleOrder | Kind::EventsLost => Severity::Warning,
            _ => Severity::Error,
        }
    }

    pub fn from_name(name: &str) -> Option<Kind> {
        Kind::ALL.into_iter().find(|k| k.name() == name)
    }
}

impl std::fmt::Display for Kind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    Warning,
    Error,
}

impl Severity {
    pub const ALL: [Severity; 2] = [Severity::Warning, Severity::Error];
    pub fn name(self) -> &'static str {
        match self {
            Severity::Warning => "warning",
            Severity::Error => "error",
        }
    }
}

/// One life of one mdev: its pointer and which life of that pointer. The identity of an mdev
/// everywhere (a pointer reused by a new device is another mdev).
pub type LifeKey = (u64, u32);

/// The mdev a finding is about.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct MdevRef {
    /// The `struct ap_matrix_mdev *`.
    #[serde(with = "hex_u64")]
    pub ptr: u64,
    /// `dev_name()` of the vfio device, when known.
    pub uuid: Option<Arc<str>>,
    /// Which life of this pointer (a pointer reused after release is a new incarnation).
    pub incarnation: u32,
}

impl MdevRef {
    pub fn key(&self) -> LifeKey {
        (self.ptr, self.incarnation)
    }
}

/// A task (and the guest it belongs to, when it is a QEMU process).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct TaskRef {
    pub pid: u32,
    pub tid: u32,
    pub comm: Arc<str>,
    /// `-name guest=` of the QEMU process, when known.
    pub guest: Option<Arc<str>>,
}

/// One fault.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Finding {
    pub kind: Kind,
    pub severity: Severity,
    /// The finding may be wrong: events were lost, or a call aptrace could not trust ran,
    /// between its first evidence event and the finding. It still counts as a finding.
    pub uncertain: bool,
    /// Why it is uncertain, when it is.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub uncertainty: Option<String>,
    pub mdev: Option<MdevRef>,
    pub task: Option<TaskRef>,
    /// The guest that had the mdev open (or last opened it).
    pub guest: Option<TaskRef>,
    pub function: Option<Arc<str>>,
    #[serde(with = "dec_u64")]
    pub ts_ns: u64,
    pub message: String,
    /// Sequence numbers of the events that prove it, oldest first.
    pub events: Vec<u64>,
    /// The proving events themselves.
    pub evidence: Vec<Event>,
    /// A kernel stack taken at the allocation or the violation, innermost first.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub stack: Vec<Arc<str>>,
}
