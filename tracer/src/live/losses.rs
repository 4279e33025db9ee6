//! Lost events: the probes' per-CPU counters and the kernel's own kretprobe miss count,
//! turned into `Lost` events carrying only what is new since the last reading.

use std::sync::Arc;

use tracer_common::counter;

use crate::model::{Body, Event, LossSource, Task};

/// Name prefixes of the programs of the profile's function slots (`enter_00`, `leave_00`).
pub const ENTRY_PROGRAM: &str = "enter_";
pub const EXIT_PROGRAM: &str = "leave_";

/// Whether a program's link reports misses of the traced driver: the profile's functions
/// only. The host-wide kvmalloc probes of --all-allocations miss returns of other modules'
/// calls under load, which are no events of the traced driver.
pub fn is_function_program(name: &str) -> bool {
    name.starts_with(ENTRY_PROGRAM) || name.starts_with(EXIT_PROGRAM)
}

/// One reading of the loss sources, as running totals.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Reading {
    /// Per counter index (`tracer_common::counter`): the sum over CPUs, if it was read.
    pub counters: [Option<u64>; counter::COUNT as usize],
    /// The kernel's `missed` over the function probes' links: `Ok(None)` when no attached
    /// link reports it (nothing attached, or a kernel before 6.7).
    pub kernel_missed: Result<Option<u64>, String>,
}

impl Default for Ledger {
    fn default() -> Self {
        Ledger::new()
    }
}

/// What has been reported so far.
#[derive(Debug)]
pub struct Ledger {
    seen: [u64; counter::COUNT as usize],
    kernel_missed_seen: u64,
    /// Whether the kernel reports `missed`; until known, both sources are read.
    kernel_reports_missed: Option<bool>,
}

impl Ledger {
    pub fn new() -> Ledger {
        Ledger {
            seen: [0; counter::COUNT as usize],
            kernel_missed_seen: 0,
            kernel_reports_missed: None,
        }
    }

    /// The losses new in `r`, as events at `now_ns` from the agent itself.
    pub fn account(&mut self, r: &Reading, now_ns: u64, out: &mut Vec<Event>) {
        let lost = |count: u64, source: LossSource| Event {
            seq: 0,
            ts_ns: now_ns,
            cpu: 0,
            task: agent_task(),
            body: Body::Lost { count, source },
        };
        // The kernel's count wins where it exists: the probes' own count of returns never
        // seen (RETURN_MISSED) would count the same misses again, later.
        match &r.kernel_missed {
            Ok(Some(total)) => {
                if self.kernel_reports_missed.is_none() {
                    log::info!("kretprobe misses: the kernel's count from bpf link info");
                }
                self.kernel_reports_missed = Some(true);
                let delta = total.saturating_sub(self.kernel_missed_seen);
                self.kernel_missed_seen = *total;
                if delta > 0 {
                    out.push(lost(delta, LossSource::KretprobeMiss));
                }
            }
            Ok(None) => {}
            Err(e) => log::debug!("bpf link info: {e}"),
        }
        let sources = [
            (counter::RINGBUF_FULL, LossSource::RingBuffer),
            (counter::EXIT_WITHOUT_ENTRY, LossSource::ExitWithoutEntry),
            (counter::RETURN_MISSED, LossSource::KretprobeMiss),
        ];
        for (idx, source) in sources {
            let Some(total) = r.counters[idx as usize] else {
                continue;
            };
            let delta = total.saturating_sub(self.seen[idx as usize]);
            self.seen[idx as usize] = total;
            if delta > 0
                && !(idx == counter::RETURN_MISSED && self.kernel_reports_missed == Some(true))
            {
                out.push(lost(delta, source));
            }
        }
    }
}

/// The task losses are attributed to: this process.
pub fn agent_task() -> Task {
    Task {
        pid: std::process::id(),
        tid: std::process::id(),
        comm: Arc::from("aptrace"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reading(full: u64, orphan: u64, missed: u64, kernel: Option<u64>) -> Reading {
        Reading {
            counters: [Some(full), Some(orphan), Some(missed)],
            kernel_missed: Ok(kernel),
        }
    }

    fn losses(l: &mut Ledger, r: Reading) -> Vec<(u64, LossSource)> {
        let mut out = Vec::new();
        l.account(&r, 5, &mut out);
        out.iter()
            .map(|e| match e.body {
                Body::Lost { count, source } => {
                    assert_eq!((e.ts_ns, e.task.comm.as_ref()), (5, "aptrace"));
                    (count, source)
                }
                _ => panic!("{e:?}"),
            })
            .collect()
    }

    #[test]
    fn only_what_is_new_is_reported() {
        let mut l = Ledger::new();
        assert_eq!(
            losses(&mut l, reading(3, 1, 0, None)),
            [
                (3, LossSource::RingBuffer),
                (1, LossSource::ExitWithoutEntry)
            ]
        );
        assert_eq!(losses(&mut l, reading(3, 1, 0, None)), []);
        assert_eq!(
            losses(&mut l, reading(10, 1, 2, None)),
            [(7, LossSource::RingBuffer), (2, LossSource::KretprobeMiss)]
        );
    }

    /// Once the kernel reports its own count, the probes' count of missed returns is not
    /// added to it (the same misses, seen later).
    #[test]
    fn the_kernels_miss_count_wins_over_the_probes() {
        let mut l = Ledger::new();
        assert_eq!(
            losses(&mut l, reading(0, 0, 4, Some(4))),
            [(4, LossSource::KretprobeMiss)]
        );
        assert_eq!(
            losses(&mut l, reading(0, 0, 9, Some(6))),
            [(2, LossSource::KretprobeMiss)]
        );
        // An unreadable counter or link info is skipped, not reported as a loss.
        let r = Reading {
            counters: [None, None, None],
            kernel_missed: Err("EPERM".into()),
        };
        assert_eq!(losses(&mut l, r), []);
    }

    #[test]
    fn only_the_function_slots_count_kernel_misses() {
        assert!(is_function_program("enter_07"));
        assert!(is_function_program("leave_63"));
        assert!(!is_function_program("kvmalloc_leave"));
        assert!(!is_function_program("kfree"));
    }
}
