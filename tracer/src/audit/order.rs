//! Lock order: which declared lock a task held when it entered a function that takes
//! another, kept as edges "A before B" across every task and time, as lockdep keeps lock
//! classes. A cycle of edges (AB-BA included), or an edge against the profile's documented
//! order, is a `lock-order` finding even though no deadlock happened.
//!
//! A task holds A at an entry when the probe's read of the owner word says so (the probed
//! lock, and the other declared locks the entry can reach: `Body::Enter::locks`), when a
//! call still open on its stack asserts A held (`holds`), or when the entered function
//! itself expects A held by its caller (its own `holds`). A read that failed is no edge.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use super::{Auditor, Entering, Frame, Kind, TaskRef};
use crate::calls::fasthash::FastSet;
use crate::model::{dec_u64, Body, Event, LockObs};
use crate::profile::Profile;

/// One order edge with the first event that showed it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct OrderEdge {
    /// The lock held.
    pub held: Arc<str>,
    /// The lock taken while it was held.
    pub taken: Arc<str>,
    /// The function that takes `taken`.
    pub taker: Arc<str>,
    /// The open call that asserts `held`, or the taker itself when it expects `held` of its
    /// caller; absent when the entry's read of the owner word said the task held it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub held_in: Option<Arc<str>>,
    pub task: TaskRef,
    #[serde(with = "dec_u64")]
    pub ts_ns: u64,
    /// The sequence number of the taker's entry.
    pub seq: u64,
    /// The call `held_in` names is one aptrace could not trust (a compiler clone).
    pub uncertain: bool,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub stack: Vec<Arc<str>>,
    /// The entries that show it: the holder's (when a call asserts the lock) and the taker's.
    #[serde(skip)]
    pub evidence: Vec<Event>,
}

impl OrderEdge {
    /// `mdevs_lock -> dev_set_lock: vfio_register_emulated_iommu_dev entered by pid 100
    /// holding mdevs_lock by its owner word`, for messages.
    fn describe(&self) -> String {
        let how = match &self.held_in {
            Some(f) if *f == self.taker => {
                format!("which expects {} held by its caller", self.held)
            }
            Some(f) => format!("inside {f}, which asserts {} held", self.held),
            None => format!("holding {} by its owner word", self.held),
        };
        format!(
            "{} -> {}: {} entered by pid {} {how}",
            self.held, self.taken, self.taker, self.task.tid
        )
    }
}

/// Why the task holds a lock at an entry.
enum Holder<'a> {
    /// The entry's read of the owner word.
    Read,
    /// A call open on the task's stack asserts it.
    Open(&'a Frame),
    /// The entered function expects it held by its caller (its own `holds`).
    Entered,
}

/// The locks each profiled function takes and asserts, and the edges seen so far.
pub(super) struct OrderGraph {
    probed: Arc<str>,
    takes: Vec<Vec<Arc<str>>>,
    holds: Vec<Vec<Arc<str>>>,
    /// Position in the documented order, by lock.
    rank: HashMap<Arc<str>, usize>,
    edges: BTreeMap<(Arc<str>, Arc<str>), OrderEdge>,
    /// The same locks as small numbers, for the check every entry pays before it looks
    /// for a new edge (most entries find none; comparing names cost more than the rest).
    ids: LockIds,
}

/// Lock names as numbers: the profile's first, then names met only in entries' reads.
struct LockIds {
    names: Vec<Arc<str>>,
    probed: u32,
    takes: Vec<Vec<u32>>,
    holds: Vec<Vec<u32>>,
    /// (held, taken) pairs that are edges already.
    edges: FastSet<(u32, u32)>,
}

impl LockIds {
    /// The number of `name`, given one if new (an entry's read of a lock the profile's
    /// functions do not name).
    fn of(&mut self, name: &Arc<str>) -> u32 {
        if let Some(i) = self.find(name) {
            return i;
        }
        self.names.push(name.clone());
        (self.names.len() - 1) as u32
    }

    fn find(&self, name: &Arc<str>) -> Option<u32> {
        let at = self
            .names
            .iter()
            .position(|n| Arc::ptr_eq(n, name))
            .or_else(|| self.names.iter().position(|n| n == name))?;
        Some(at as u32)
    }
}

impl OrderGraph {
    pub(super) fn new(profile: &Profile) -> OrderGraph {
        let probed: Arc<str> = Arc::from(profile.probed_lock());
        let names = |v: Vec<&str>| v.into_iter().map(Arc::from).collect();
        let takes: Vec<Vec<Arc<str>>> = profile
            .functions
            .iter()
            .map(|f| names(f.locks_taken(&probed)))
            .collect();
        let holds: Vec<Vec<Arc<str>>> = profile
            .functions
            .iter()
            .map(|f| names(f.locks_held(&probed)))
            .collect();
        let mut ids = LockIds {
            names: Vec::new(),
            probed: 0,
            takes: Vec::new(),
            holds: Vec::new(),
            edges: FastSet::default(),
        };
        ids.probed = ids.of(&probed);
        ids.takes = takes
            .iter()
            .map(|v| v.iter().map(|l| ids.of(l)).collect())
            .collect();
        ids.holds = holds
            .iter()
            .map(|v| v.iter().map(|l| ids.of(l)).collect())
            .collect();
        OrderGraph {
            takes,
            holds,
            ids,
            rank: profile
                .lock_order
                .iter()
                .enumerate()
                .map(|(i, l)| (Arc::from(l.as_str()), i))
                .collect(),
            probed,
            edges: BTreeMap::new(),
        }
    }

    /// Every edge, ordered by (held, taken).
    pub(super) fn edges(&self) -> impl Iterator<Item = &OrderEdge> {
        self.edges.values()
    }

    /// The edges from `from` back to `to`, when a path of edges leads there.
    fn path(&self, from: &Arc<str>, to: &Arc<str>) -> Option<Vec<&OrderEdge>> {
        let mut came: HashMap<&Arc<str>, &OrderEdge> = HashMap::new();
        let mut queue = VecDeque::from([from]);
        while let Some(at) = queue.pop_front() {
            if at == to {
                let mut path = Vec::new();
                let mut cur = to;
                while cur != from {
                    let e = came[cur];
                    path.push(e);
                    cur = &e.held;
                }
                path.reverse();
                return Some(path);
            }
            for e in self.edges.values().filter(|e| &e.held == at) {
                if &e.taken != from && !came.contains_key(&e.taken) {
                    came.insert(&e.taken, e);
                    queue.push_back(&e.taken);
                }
            }
        }
        None
    }
}

impl Auditor {
    /// Records the order edges of the entered call and raises `lock-order` for one that
    /// closes a cycle or goes against the documented order. A call already found to break
    /// its lock contract adds none: that finding says more.
    // Inlined: most entries take no declared lock, or add no edge, and return here.
    #[inline]
    pub(super) fn check_order(
        &mut self,
        ev: &Event,
        frame: &Entering<'_>,
        lock: LockObs,
        stack: &[Arc<str>],
        func: &Arc<str>,
    ) {
        if self.order.takes[frame.call.spec].is_empty()
            || frame.x.lock_fault()
            || !self.may_add_edge(ev, frame, lock)
        {
            return;
        }
        self.add_order_edges(ev, frame, lock, stack, func);
    }

    #[inline(never)]
    fn add_order_edges(
        &mut self,
        ev: &Event,
        frame: &Entering<'_>,
        lock: LockObs,
        stack: &[Arc<str>],
        func: &Arc<str>,
    ) {
        let takes = &self.order.takes[frame.call.spec];
        // What the task holds: the probed lock by its read, what open calls assert, and
        // what the entered function itself expects held (its caller's lock: the core
        // calls the driver's open_device under dev_set->lock).
        let mut held: Vec<(Arc<str>, Holder<'_>)> = Vec::new();
        if lock == LockObs::HeldByCurrent {
            held.push((self.order.probed.clone(), Holder::Read));
        }
        for f in self.calls.stack(ev.task.tid) {
            for l in &self.order.holds[f.call.spec] {
                if !held.iter().any(|(h, _)| h == l) {
                    held.push((l.clone(), Holder::Open(f)));
                }
            }
        }
        // The other locks' owner words: after the open calls (whose entries are better
        // evidence), before the entered function's own declaration.
        if let Body::Enter { locks, .. } = &ev.body {
            for l in locks.iter().filter(|l| l.obs == LockObs::HeldByCurrent) {
                if !held.iter().any(|(h, _)| *h == l.lock) {
                    held.push((l.lock.clone(), Holder::Read));
                }
            }
        }
        for l in &self.order.holds[frame.call.spec] {
            if !held.iter().any(|(h, _)| h == l) {
                held.push((l.clone(), Holder::Entered));
            }
        }
        let mut new = Vec::new();
        for taken in takes {
            for (h, by) in &held {
                if h == taken || self.order.edges.contains_key(&(h.clone(), taken.clone())) {
                    continue;
                }
                let (held_in, uncertain, mut evidence) = match by {
                    Holder::Read => (None, false, Vec::new()),
                    Holder::Open(f) => (
                        Some(f.call.func()),
                        !f.call.trusted,
                        vec![(*f.call.enter).clone()],
                    ),
                    Holder::Entered => (Some(func.clone()), false, Vec::new()),
                };
                evidence.push(ev.clone());
                new.push(OrderEdge {
                    held: h.clone(),
                    taken: taken.clone(),
                    taker: func.clone(),
                    held_in,
                    task: self.task_ref(ev),
                    ts_ns: ev.ts_ns,
                    seq: ev.seq,
                    uncertain,
                    stack: stack.to_vec(),
                    evidence,
                });
            }
        }
        for edge in new {
            let key = (edge.held.clone(), edge.taken.clone());
            let against = match (
                self.order.rank.get(&edge.held),
                self.order.rank.get(&edge.taken),
            ) {
                (Some(a), Some(b)) => a > b,
                _ => false,
            };
            let cycle: Option<Vec<OrderEdge>> = self
                .order
                .path(&edge.taken, &edge.held)
                .map(|p| p.into_iter().cloned().collect());
            let pair = (
                self.order.ids.of(&edge.held),
                self.order.ids.of(&edge.taken),
            );
            self.order.ids.edges.insert(pair);
            self.order.edges.insert(key, edge.clone());
            let message = match (&cycle, against) {
                (Some(back), _) => {
                    // In the cycle's order, from the edge that closed it.
                    let all: Vec<String> = [&edge]
                        .into_iter()
                        .chain(back)
                        .map(OrderEdge::describe)
                        .collect();
                    format!(
                        "lock order cycle {}: {}; tasks taking these locks this way can deadlock (none did)",
                        cycle_names(back, &edge),
                        all.join("; ")
                    )
                }
                (None, true) => format!(
                    "{} is taken while holding {}, against the documented order ({}): {}",
                    edge.taken,
                    edge.held,
                    self.profile.lock_order.join(" -> "),
                    edge.describe()
                ),
                (None, false) => continue,
            };
            let edges: Vec<&OrderEdge> = cycle.iter().flatten().chain([&edge]).collect();
            let doubt = edges
                .iter()
                .find(|e| e.uncertain)
                .and_then(|e| e.held_in.as_ref())
                .map(|f| {
                    format!("{f}, a call aptrace could not trust, is what says its lock was held")
                });
            let evidence = edges
                .iter()
                .flat_map(|e| e.evidence.iter().cloned())
                .collect();
            self.raise_doubted(
                Kind::LockOrder,
                frame.call.mdev,
                ev,
                Some(func.clone()),
                message,
                evidence,
                stack.to_vec(),
                doubt,
            );
        }
    }

    /// Whether the entry could add an edge: some lock the task holds, by any of the ways
    /// `check_order` counts, with a lock the function takes that is not an edge yet.
    fn may_add_edge(&self, ev: &Event, frame: &Entering<'_>, lock: LockObs) -> bool {
        let spec = frame.call.spec;
        let ids = &self.order.ids;
        let new = |h: u32| {
            ids.takes[spec]
                .iter()
                .any(|&t| t != h && !ids.edges.contains(&(h, t)))
        };
        let read_new = match &ev.body {
            Body::Enter { locks, .. } => locks
                .iter()
                .filter(|l| l.obs == LockObs::HeldByCurrent)
                // A lock no function names is looked at the long way.
                .any(|l| ids.find(&l.lock).is_none_or(new)),
            _ => false,
        };
        read_new
            || (lock == LockObs::HeldByCurrent && new(ids.probed))
            || self
                .calls
                .stack(ev.task.tid)
                .iter()
                .any(|f| ids.holds[f.call.spec].iter().any(|&h| new(h)))
            || ids.holds[spec].iter().any(|&h| new(h))
    }

    /// The order edges seen, with their first evidence.
    pub fn lock_order(&self) -> Vec<OrderEdge> {
        self.order.edges().cloned().collect()
    }
}

/// The cycle from the edge that closed it: `dev_set_lock -> mdevs_lock -> dev_set_lock`.
fn cycle_names(back: &[OrderEdge], closing: &OrderEdge) -> String {
    let mut names = vec![closing.held.to_string()];
    names.push(closing.taken.to_string());
    names.extend(back.iter().map(|e| e.taken.to_string()));
    names.join(" -> ")
}
