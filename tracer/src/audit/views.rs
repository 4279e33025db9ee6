//! What the auditor shows: the snapshot for the TUI and metrics, and the end-of-stream
//! summary.

use std::collections::BTreeMap;
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use super::lifecycle::{Mdev, MdevView};
use super::migration::session::Session;
use super::migration::MigState;
use super::{Auditor, FunctionStats, Kind, LifeKey, OrderEdge, Outstanding, TaskRef};
use crate::model::Event;

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
    /// Lock order edges seen across every task.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub lock_order: Vec<OrderEdge>,
    /// Migration sessions (STOP_COPY and RESUMING periods), in start order.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub migrations: Vec<Session>,
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

impl Auditor {
    /// The state now, for sinks.
    pub fn snapshot(&self) -> Snapshot {
        self.snapshot_with_timelines(|_| true)
    }

    /// The state now, with the timelines only of the lives `keep` names (rendering every
    /// life's timeline is most of a snapshot's cost, and a screen shows one).
    pub fn snapshot_with_timelines(&self, keep: impl Fn(LifeKey) -> bool) -> Snapshot {
        let g = self.view_guest.as_ref();
        let mut mdevs: Vec<MdevView> = self
            .mdevs
            .values()
            .chain(self.past.values())
            .filter(|m| g.is_none_or(|g| m.guest.as_ref().is_some_and(|t| g.matches_task(t))))
            .map(|m| m.view(keep((m.ptr, m.incarnation))))
            .collect();
        mdevs.sort_by_key(|m| (m.id.ptr, m.id.incarnation));
        let findings_by_kind = match g {
            None => self.finding_counts(),
            Some(g) => {
                let mut counts: BTreeMap<Kind, u64> = Kind::ALL.iter().map(|&k| (k, 0)).collect();
                for f in self.findings.iter().filter(|f| g.matches(f)) {
                    *counts.entry(f.kind).or_default() += 1;
                }
                counts
            }
        };
        let mut migrations = self.migrations();
        if let Some(g) = g {
            migrations.retain(|s| g.matches_session(s));
        }
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
                .transitions()
                .iter()
                .map(|((a, b), n)| (format!("{a}->{b}"), *n))
                .collect(),
            lock_order: self.lock_order(),
            migrations,
        }
    }

    /// Limits what snapshots show to one guest's devices, findings and sessions (`live
    /// --guest`: the pipeline sets it with the same filter it applies to the sinks).
    pub fn limit_views(&mut self, guest: Option<crate::report::GuestFilter>) {
        self.view_guest = guest;
    }

    /// The tasks an event concerns, as a `--guest` filter matches them: the guest that has
    /// its call's mdev open, and the task that made it.
    pub fn event_tasks(&self, ev: &Event, step: &crate::calls::Step<'_>) -> Vec<TaskRef> {
        use crate::calls::Step;
        let mdev = match step {
            Step::Enter { call, .. } => call.mdev,
            Step::Exit { ret, .. } => ret.mdev,
            Step::Other => None,
        };
        let mut v: Vec<TaskRef> = mdev
            .and_then(|p| self.mdevs.get(&p))
            .and_then(|m| m.guest.clone())
            .into_iter()
            .collect();
        v.push(TaskRef {
            pid: ev.task.pid,
            tid: ev.task.tid,
            comm: ev.task.comm.clone(),
            guest: self.guests.get(&ev.task.pid).cloned(),
        });
        v
    }

    /// The times of every ended migration session of `direction` (cumulative).
    pub fn migration_times(
        &self,
        direction: super::migration::session::Direction,
    ) -> &super::migration::session::SessionTimes {
        self.sessions.times(direction)
    }

    /// Every migration session kept, in start order, open ones as of the last event; each
    /// with its device's name and guest as known now (both may arrive after it began).
    pub fn migrations(&self) -> Vec<Session> {
        let mut all = self.sessions.view(self.last_ts.unwrap_or(0));
        for s in &mut all {
            if let Some(m) = self.life(s.mdev.ptr, s.mdev.incarnation) {
                s.mdev = m.reference();
                if m.guest.is_some() {
                    s.guest = m.guest.clone();
                }
            }
        }
        all
    }

    /// Migration steps by (from, to), the steps seen only.
    pub fn transitions(&self) -> BTreeMap<(MigState, MigState), u64> {
        let mut map = BTreeMap::new();
        for from in MigState::ALL {
            for to in MigState::ALL {
                let n = self.transitions[from as usize][to as usize];
                if n > 0 {
                    map.insert((from, to), n);
                }
            }
        }
        map
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
                mdev: a
                    .mdev
                    .and_then(|m| self.life(m, a.life))
                    .map(Mdev::reference),
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
