//! Certainty: a finding whose evidence window holds a call aptrace could not trust (a compiler
//! clone of a profiled function, a call marked untrusted, a missed return) may be wrong, so it
//! is raised `uncertain`, with the reason (see `Auditor::raise`).

use std::sync::Arc;

use super::Auditor;
use crate::profile::strip_clone_suffix;

/// The last untrusted call seen inside one mdev's calls (or outside any).
#[derive(Clone, Debug)]
pub(super) struct Untrusted {
    pub(super) seq: u64,
    pub(super) why: Why,
}

#[derive(Clone, Debug)]
pub(super) enum Why {
    /// A call whose registers may not be its C arguments.
    Clone(Arc<str>),
    /// Returns of calls above this one on the task's stack were never seen.
    Missed(Arc<str>, usize),
}

impl Why {
    pub(super) fn render(&self) -> String {
        match self {
            Why::Clone(func) if strip_clone_suffix(func).1 => format!(
                "{func}, a compiler clone whose registers may not be its arguments, ran meanwhile"
            ),
            Why::Clone(func) => format!("{func} ran meanwhile with arguments marked untrusted"),
            Why::Missed(func, n) => {
                format!("the return of {n} call(s) nested in {func} was missed meanwhile")
            }
        }
    }
}

impl Auditor {
    /// An untrusted call on task `tid`: it counts against findings of the mdev its enclosing
    /// calls are about, or of every mdev when they name none.
    pub(super) fn note_untrusted(&mut self, tid: u32, seq: u64, why: Why) {
        let ctx = self.calls.context_mdev(tid);
        self.untrusted.insert(ctx, Untrusted { seq, why });
    }

    /// Why a finding about `mdev` whose evidence starts at `first` cannot be certain.
    pub(super) fn uncertainty(&self, mdev: Option<u64>, first: u64) -> Option<String> {
        let mut hits: Vec<&Untrusted> = [mdev, None]
            .iter()
            .filter_map(|k| self.untrusted.get(k))
            .filter(|u| u.seq >= first)
            .collect();
        if mdev.is_none() {
            // A finding not about one mdev: any untrusted call in its window.
            hits.extend(self.untrusted.values().filter(|u| u.seq >= first));
        }
        hits.into_iter()
            .max_by_key(|u| u.seq)
            .map(|u| u.why.render())
    }
}
