//! `--guest PID|NAME`: one guest's devices. A live run keeps it in its recording's header
//! (format 1.3), and every report of the recording lists only what concerns that guest.

use crate::audit::migration::session::Session;
use crate::audit::{Finding, MdevView, TaskRef};

/// A guest by its QEMU pid or its `-name guest=` name.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum GuestFilter {
    Pid(u32),
    Name(String),
}

impl GuestFilter {
    pub fn parse(s: &str) -> GuestFilter {
        match s.parse::<u32>() {
            Ok(p) => GuestFilter::Pid(p),
            Err(_) => GuestFilter::Name(s.to_string()),
        }
    }

    pub fn matches_task(&self, t: &TaskRef) -> bool {
        match self {
            GuestFilter::Pid(p) => t.pid == *p,
            GuestFilter::Name(n) => t.guest.as_deref() == Some(n.as_str()),
        }
    }

    /// The finding concerns an mdev this guest had open (or the guest's own task).
    pub fn matches(&self, f: &Finding) -> bool {
        f.guest.as_ref().is_some_and(|g| self.matches_task(g))
            || f.task.as_ref().is_some_and(|t| self.matches_task(t))
    }

    /// The guest opened this mdev.
    pub fn matches_mdev(&self, m: &MdevView) -> bool {
        m.guest.as_ref().is_some_and(|g| self.matches_task(g))
    }

    /// The session is of a device this guest opened.
    pub fn matches_session(&self, s: &Session) -> bool {
        s.guest.as_ref().is_some_and(|g| self.matches_task(g))
    }
}

impl std::fmt::Display for GuestFilter {
    /// As given on the command line.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            GuestFilter::Pid(p) => write!(f, "{p}"),
            GuestFilter::Name(n) => f.write_str(n),
        }
    }
}
