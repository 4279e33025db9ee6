//! The VFIO migration state machine (uAPI v2), as include/uapi/linux/vfio.h and
//! vfio_mig_get_next_state() define it. The auditor's rules on it are in `rules`.

pub mod pair;
pub(in crate::audit) mod rules;
pub mod session;

use serde::{Deserialize, Serialize};

use crate::profile::{VFIO_MIGRATION_P2P, VFIO_MIGRATION_PRE_COPY, VFIO_MIGRATION_STOP_COPY};

/// `enum vfio_device_mig_state`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum MigState {
    Error = 0,
    Stop = 1,
    Running = 2,
    StopCopy = 3,
    Resuming = 4,
    RunningP2p = 5,
    PreCopy = 6,
    PreCopyP2p = 7,
}

impl TryFrom<u64> for MigState {
    type Error = u64;
    fn try_from(v: u64) -> Result<Self, u64> {
        Ok(match v {
            0 => MigState::Error,
            1 => MigState::Stop,
            2 => MigState::Running,
            3 => MigState::StopCopy,
            4 => MigState::Resuming,
            5 => MigState::RunningP2p,
            6 => MigState::PreCopy,
            7 => MigState::PreCopyP2p,
            other => return Err(other),
        })
    }
}

impl MigState {
    pub const ALL: [MigState; 8] = [
        MigState::Error,
        MigState::Stop,
        MigState::Running,
        MigState::StopCopy,
        MigState::Resuming,
        MigState::RunningP2p,
        MigState::PreCopy,
        MigState::PreCopyP2p,
    ];

    pub fn name(self) -> &'static str {
        match self {
            MigState::Error => "ERROR",
            MigState::Stop => "STOP",
            MigState::Running => "RUNNING",
            MigState::StopCopy => "STOP_COPY",
            MigState::Resuming => "RESUMING",
            MigState::RunningP2p => "RUNNING_P2P",
            MigState::PreCopy => "PRE_COPY",
            MigState::PreCopyP2p => "PRE_COPY_P2P",
        }
    }

    /// Whether a device with `flags` supports this state at all.
    pub fn supported(self, flags: u32) -> bool {
        let p2p = flags & VFIO_MIGRATION_P2P != 0;
        let pre = flags & VFIO_MIGRATION_PRE_COPY != 0;
        match self {
            MigState::Error => false,
            MigState::Stop | MigState::Running => true,
            MigState::StopCopy | MigState::Resuming => flags & VFIO_MIGRATION_STOP_COPY != 0,
            MigState::RunningP2p => p2p,
            MigState::PreCopy => pre,
            MigState::PreCopyP2p => p2p && pre,
        }
    }

    /// The `migration_flags` this state needs that `flags` lacks, by name (empty when it is
    /// supported; ERROR is never a state to request).
    pub fn missing_flags(self, flags: u32) -> Vec<&'static str> {
        let needs: &[(u32, &'static str)] = match self {
            MigState::Error | MigState::Stop | MigState::Running => &[],
            MigState::StopCopy | MigState::Resuming => {
                &[(VFIO_MIGRATION_STOP_COPY, "VFIO_MIGRATION_STOP_COPY")]
            }
            MigState::RunningP2p => &[(VFIO_MIGRATION_P2P, "VFIO_MIGRATION_P2P")],
            MigState::PreCopy => &[(VFIO_MIGRATION_PRE_COPY, "VFIO_MIGRATION_PRE_COPY")],
            MigState::PreCopyP2p => &[
                (VFIO_MIGRATION_P2P, "VFIO_MIGRATION_P2P"),
                (VFIO_MIGRATION_PRE_COPY, "VFIO_MIGRATION_PRE_COPY"),
            ],
        };
        needs
            .iter()
            .filter(|(bit, _)| flags & bit == 0)
            .map(|(_, name)| *name)
            .collect()
    }
}

/// Whether the arc `from → to` begins a data transfer and hands userspace a new data file
/// (the uAPI: RUNNING → PRE_COPY, RUNNING_P2P → PRE_COPY_P2P, STOP → STOP_COPY, STOP →
/// RESUMING). Moving within the saving group (PRE_COPY, PRE_COPY_P2P, STOP_COPY) keeps the
/// file already open.
pub fn arc_opens_data_file(from: MigState, to: MigState) -> bool {
    use MigState::*;
    matches!(
        (from, to),
        (Running, PreCopy) | (RunningP2p, PreCopyP2p) | (Stop, StopCopy) | (Stop, Resuming)
    )
}

/// Whether a request from `before` to `to` ends on an arc that opens a data file, as the
/// core walks it. `before` unknown: the answer when every arc into `to` agrees; `None`
/// when they do not, or when the core refuses the request.
pub fn request_opens_data_file(before: Option<MigState>, to: MigState, flags: u32) -> Option<bool> {
    match before {
        Some(from) if from == to => Some(false),
        Some(from) => {
            let walk = path(from, to, flags)?;
            let last_from = walk.len().checked_sub(2).map_or(from, |i| walk[i]);
            Some(arc_opens_data_file(last_from, to))
        }
        None => {
            let mut into = MigState::ALL
                .into_iter()
                .filter(|&from| is_direct_arc(from, to, flags))
                .map(|from| arc_opens_data_file(from, to));
            let first = into.next()?;
            into.all(|o| o == first).then_some(first)
        }
    }
}

impl std::fmt::Display for MigState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// Whether `from → to` is one direct arc for a device with `flags`.
pub fn is_direct_arc(from: MigState, to: MigState, flags: u32) -> bool {
    use MigState::*;
    if !from.supported(flags) || !to.supported(flags) {
        return false;
    }
    let p2p = flags & VFIO_MIGRATION_P2P != 0;
    match (from, to) {
        (Stop, StopCopy) | (StopCopy, Stop) | (Stop, Resuming) | (Resuming, Stop) => true,
        (Running, Stop) | (Stop, Running) => !p2p,
        (Running, RunningP2p) | (RunningP2p, Running) => true,
        (RunningP2p, Stop) | (Stop, RunningP2p) => true,
        // The core's table steps RUNNING <-> PRE_COPY directly, P2P or not.
        (Running, PreCopy) | (PreCopy, Running) => true,
        (PreCopy, StopCopy) => !p2p,
        (PreCopy, PreCopyP2p) | (PreCopyP2p, PreCopy) => true,
        (PreCopyP2p, RunningP2p) | (RunningP2p, PreCopyP2p) => true,
        (PreCopyP2p, StopCopy) => true,
        _ => false,
    }
}

/// Whether the VFIO core walks a request from `from` to `to` (as `path(..).is_some()`).
pub fn reachable(from: MigState, to: MigState, flags: u32) -> bool {
    path(from, to, flags).is_some()
}

/// The direct arcs and the walks of one device's migration flags, as a bitmask of states
/// per state, and whether each request opens a data file: the auditor asks on every step
/// and every accepted request, and the flags of a profile do not change.
#[derive(Clone, Copy, Debug)]
pub struct Arcs {
    direct: [u8; 8],
    reach: [u8; 8],
    /// [`request_opens_data_file`] by (state before, or the last row when unknown; target).
    opens: [[Option<bool>; 8]; 9],
}

impl Arcs {
    pub fn new(flags: u32) -> Arcs {
        let mask = |f: &dyn Fn(MigState) -> bool| {
            MigState::ALL
                .iter()
                .filter(|&&to| f(to))
                .fold(0u8, |m, &to| m | 1 << to as u8)
        };
        let mut opens = [[None; 8]; 9];
        for (row, before) in MigState::ALL
            .map(Some)
            .into_iter()
            .chain([None])
            .enumerate()
        {
            for to in MigState::ALL {
                opens[row][to as usize] = request_opens_data_file(before, to, flags);
            }
        }
        Arcs {
            direct: MigState::ALL.map(|from| mask(&|to| is_direct_arc(from, to, flags))),
            reach: MigState::ALL.map(|from| mask(&|to| reachable(from, to, flags))),
            opens,
        }
    }

    /// As [`request_opens_data_file`] with these flags.
    #[inline]
    pub fn opens_data_file(&self, before: Option<MigState>, to: MigState) -> Option<bool> {
        self.opens[before.map_or(MigState::ALL.len(), |b| b as usize)][to as usize]
    }

    /// As [`is_direct_arc`] with these flags.
    #[inline]
    pub fn direct(&self, from: MigState, to: MigState) -> bool {
        self.direct[from as usize] & 1 << to as u8 != 0
    }

    /// As [`reachable`] with these flags.
    #[inline]
    pub fn reachable(&self, from: MigState, to: MigState) -> bool {
        self.reach[from as usize] & 1 << to as u8 != 0
    }
}

/// The VFIO core's next step from a state (row) toward a requested one (column), before it
/// skips the states a device does not support: `vfio_mig_get_next_state()`'s table, rows and
/// columns in the uAPI's order of states. ERROR is a refusal: nothing leaves ERROR, and a
/// device in STOP_COPY may not go back to a PRE_COPY state.
const TOWARD: [[MigState; 8]; 8] = {
    use MigState::*;
    [
        // from ERROR
        [Error; 8],
        // from STOP
        [
            Error, Stop, RunningP2p, StopCopy, Resuming, RunningP2p, RunningP2p, RunningP2p,
        ],
        // from RUNNING
        [
            Error, RunningP2p, Running, RunningP2p, RunningP2p, RunningP2p, PreCopy, RunningP2p,
        ],
        // from STOP_COPY
        [Error, Stop, Stop, StopCopy, Stop, Stop, Error, Error],
        // from RESUMING
        [Error, Stop, Stop, Stop, Resuming, Stop, Stop, Stop],
        // from RUNNING_P2P
        [
            Error, Stop, Running, Stop, Stop, RunningP2p, Running, PreCopyP2p,
        ],
        // from PRE_COPY
        [
            Error, Running, Running, PreCopyP2p, Running, Running, PreCopy, PreCopyP2p,
        ],
        // from PRE_COPY_P2P
        [
            Error, RunningP2p, RunningP2p, StopCopy, RunningP2p, RunningP2p, PreCopy, PreCopyP2p,
        ],
    ]
};

/// The walk the VFIO core makes a driver take from `from` to `to`, one direct arc a step,
/// without `from` itself; `None` when the core refuses the request (a state the device does
/// not support, or no way there: out of ERROR, or from STOP_COPY back to PRE_COPY).
pub fn path(from: MigState, to: MigState, flags: u32) -> Option<Vec<MigState>> {
    if from == to {
        return Some(Vec::new());
    }
    if !from.supported(flags) || !to.supported(flags) {
        return None;
    }
    let mut walk = Vec::new();
    let mut at = from;
    while at != to {
        let mut next = TOWARD[at as usize][to as usize];
        while next != MigState::Error && !next.supported(flags) {
            next = TOWARD[next as usize][to as usize];
        }
        // The table reaches any target in at most four steps; more would be a loop.
        if next == MigState::Error || walk.len() == MigState::ALL.len() {
            return None;
        }
        walk.push(next);
        at = next;
    }
    Some(walk)
}

#[cfg(test)]
mod tests {
    use super::MigState::*;
    use super::*;

    #[test]
    fn stop_copy_only_arcs_match_the_uapi() {
        let f = VFIO_MIGRATION_STOP_COPY;
        assert!(is_direct_arc(Running, Stop, f));
        assert!(is_direct_arc(Stop, StopCopy, f));
        assert!(is_direct_arc(Resuming, Stop, f));
        assert!(!is_direct_arc(Running, StopCopy, f));
        assert!(!is_direct_arc(StopCopy, Resuming, f));
        assert!(!is_direct_arc(Running, RunningP2p, f));
        assert_eq!(path(Resuming, Running, f), Some(vec![Stop, Running]));
        assert_eq!(path(Running, StopCopy, f), Some(vec![Stop, StopCopy]));
        assert_eq!(path(Running, PreCopy, f), None);
    }

    #[test]
    fn p2p_and_pre_copy_arcs() {
        let all = VFIO_MIGRATION_STOP_COPY | VFIO_MIGRATION_P2P | VFIO_MIGRATION_PRE_COPY;
        assert!(!is_direct_arc(Running, Stop, all));
        assert!(is_direct_arc(RunningP2p, Stop, all));
        assert!(is_direct_arc(PreCopyP2p, StopCopy, all));
        assert!(!is_direct_arc(StopCopy, PreCopy, all));
        assert!(!is_direct_arc(Error, Stop, all));
        assert_eq!(path(Running, Stop, all), Some(vec![RunningP2p, Stop]));
    }

    #[test]
    fn the_tables_agree_with_the_functions() {
        let s = VFIO_MIGRATION_STOP_COPY;
        for flags in [
            0,
            s,
            s | VFIO_MIGRATION_P2P,
            s | VFIO_MIGRATION_PRE_COPY,
            s | VFIO_MIGRATION_P2P | VFIO_MIGRATION_PRE_COPY,
            VFIO_MIGRATION_P2P | VFIO_MIGRATION_PRE_COPY,
        ] {
            let arcs = Arcs::new(flags);
            for from in MigState::ALL {
                for to in MigState::ALL {
                    assert_eq!(arcs.direct(from, to), is_direct_arc(from, to, flags));
                    assert_eq!(arcs.reachable(from, to), reachable(from, to, flags));
                    assert_eq!(
                        arcs.opens_data_file(Some(from), to),
                        request_opens_data_file(Some(from), to, flags)
                    );
                }
                assert_eq!(
                    arcs.opens_data_file(None, from),
                    request_opens_data_file(None, from, flags)
                );
            }
        }
    }

    /// Every step of every walk the core makes is a direct arc, and every direct arc is the
    /// step of some walk: for each set of optional features a device may declare.
    #[test]
    fn the_direct_arcs_are_the_steps_of_the_cores_walks() {
        let s = VFIO_MIGRATION_STOP_COPY;
        for flags in [
            s,
            s | VFIO_MIGRATION_P2P,
            s | VFIO_MIGRATION_PRE_COPY,
            s | VFIO_MIGRATION_P2P | VFIO_MIGRATION_PRE_COPY,
        ] {
            let mut steps = std::collections::BTreeSet::new();
            for from in MigState::ALL {
                for to in MigState::ALL {
                    if let Some(walk) = path(from, to, flags) {
                        let mut at = from;
                        for next in walk {
                            steps.insert((at, next));
                            at = next;
                        }
                    }
                }
            }
            for from in MigState::ALL {
                for to in MigState::ALL {
                    assert_eq!(
                        is_direct_arc(from, to, flags),
                        steps.contains(&(from, to)),
                        "{from} -> {to} with flags {flags:#x}"
                    );
                }
            }
        }
    }

    #[test]
    fn the_core_refuses_stop_copy_back_to_pre_copy_and_anything_from_error() {
        let all = VFIO_MIGRATION_STOP_COPY | VFIO_MIGRATION_P2P | VFIO_MIGRATION_PRE_COPY;
        let pre = VFIO_MIGRATION_STOP_COPY | VFIO_MIGRATION_PRE_COPY;
        assert_eq!(path(StopCopy, PreCopy, all), None);
        assert_eq!(path(StopCopy, PreCopyP2p, all), None);
        assert_eq!(path(StopCopy, PreCopy, pre), None);
        assert!(!reachable(StopCopy, PreCopy, pre));
        assert_eq!(path(Error, Stop, all), None);
        assert_eq!(
            path(StopCopy, Running, all),
            Some(vec![Stop, RunningP2p, Running])
        );
        // With P2P, RUNNING and PRE_COPY are still one arc apart, both ways.
        assert!(is_direct_arc(Running, PreCopy, all));
        assert!(is_direct_arc(PreCopy, Running, all));
        assert_eq!(path(PreCopyP2p, Stop, all), Some(vec![RunningP2p, Stop]));
        assert_eq!(
            path(Resuming, PreCopy, pre),
            Some(vec![Stop, Running, PreCopy])
        );
    }

    #[test]
    fn reachable_agrees_with_path() {
        let s = VFIO_MIGRATION_STOP_COPY;
        for flags in [
            0,
            s,
            s | VFIO_MIGRATION_P2P,
            s | VFIO_MIGRATION_PRE_COPY,
            s | VFIO_MIGRATION_P2P | VFIO_MIGRATION_PRE_COPY,
        ] {
            for from in MigState::ALL {
                for to in MigState::ALL {
                    assert_eq!(
                        reachable(from, to, flags),
                        path(from, to, flags).is_some(),
                        "{from} -> {to} with {flags:#x}"
                    );
                }
            }
        }
    }
}
