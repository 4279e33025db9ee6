//! A live migration seen from two hosts: the source's save session (STOP_COPY) paired with
//! the destination's restore session (RESUMING) of the same guest, each from its own
//! auditor. Pure: sessions in, pairs out.

use serde::Serialize;

use super::session::{Direction, Session, SessionEnd};
use crate::audit::MdevRef;
use crate::model::dec_opt;

/// One session and the source (recording) it came from.
#[derive(Clone, Copy, Debug)]
pub struct Sourced<'a> {
    /// Index of the source among the inputs.
    pub source: usize,
    /// Add to the session's boot-clock times for Unix time (0: unknown, boot clock as is).
    pub boot_to_wall_ns: i64,
    pub session: &'a Session,
}

impl Sourced<'_> {
    fn wall(&self, ts: u64) -> i128 {
        ts as i128 + self.boot_to_wall_ns as i128
    }
    fn start(&self) -> i128 {
        self.wall(self.session.start_ts_ns)
    }
    /// When the device left RUNNING.
    fn stopped_at(&self) -> i128 {
        self.wall(
            self.session
                .end_ts_ns
                .saturating_sub(self.session.stopped_ns),
        )
    }
    fn end(&self) -> i128 {
        self.wall(self.session.end_ts_ns)
    }
}

/// What paired two sessions.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum MatchedBy {
    /// Both sides' QEMU had the same `-name guest=`.
    GuestName,
    /// A side had no guest name: the same number of bytes moved, nearest in time.
    BytesAndTime,
}

impl MatchedBy {
    pub fn name(self) -> &'static str {
        match self {
            MatchedBy::GuestName => "guest name",
            MatchedBy::BytesAndTime => "bytes and time",
        }
    }
}

/// One side of a paired migration.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Side {
    /// Index of the source among the inputs.
    pub source: usize,
    /// The session's id within its source.
    pub session: u64,
    pub mdev: MdevRef,
    pub bytes: u64,
    pub end: SessionEnd,
}

/// A migration end to end.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Paired {
    pub guest: Option<String>,
    pub matched_by: MatchedBy,
    pub save: Side,
    pub restore: Side,
    /// The bytes the destination took equal the bytes the source gave.
    pub bytes_agree: bool,
    /// From the first of the two devices leaving RUNNING to the last session's end.
    #[serde(with = "dec_opt")]
    pub total_ns: Option<u64>,
    /// From the source's device stopping to the destination's running again: the guest's
    /// device downtime. None when the destination did not end running.
    #[serde(with = "dec_opt")]
    pub downtime_ns: Option<u64>,
}

/// A possible pair: its rank (not by name, not the same bytes, distance in time: lowest
/// first), the save's and the restore's index, and what matched them.
type Candidate = ((bool, bool, u128), usize, usize, MatchedBy);

fn nonneg(ns: i128) -> Option<u64> {
    u64::try_from(ns).ok()
}

/// Pairs save sessions with restore sessions: first those whose guest names are equal,
/// then, where a side has no name, those that moved the same number of bytes (never 0); among
/// equals the nearest in time. With several sources, only sessions of different sources
/// pair (each host's recording holds its own side); with one, any two do (a migration
/// within one host).
pub fn pair(sessions: &[Sourced<'_>]) -> Vec<Paired> {
    let sources = {
        let mut v: Vec<usize> = sessions.iter().map(|s| s.source).collect();
        v.sort_unstable();
        v.dedup();
        v.len()
    };
    let saves: Vec<&Sourced> = sessions
        .iter()
        .filter(|s| s.session.direction == Direction::Save)
        .collect();
    let restores: Vec<&Sourced> = sessions
        .iter()
        .filter(|s| s.session.direction == Direction::Restore)
        .collect();
    let mut candidates: Vec<Candidate> = Vec::new();
    for (i, s) in saves.iter().enumerate() {
        for (j, r) in restores.iter().enumerate() {
            if sources > 1 && s.source == r.source {
                continue;
            }
            let same_bytes = s.session.bytes == r.session.bytes && s.session.bytes > 0;
            let by = match (s.session.guest_name(), r.session.guest_name()) {
                (Some(a), Some(b)) if a == b => MatchedBy::GuestName,
                (Some(_), Some(_)) => continue,
                _ if same_bytes => MatchedBy::BytesAndTime,
                _ => continue,
            };
            let distance = (s.start() - r.start()).unsigned_abs();
            candidates.push((
                (by != MatchedBy::GuestName, !same_bytes, distance),
                i,
                j,
                by,
            ));
        }
    }
    candidates.sort_by_key(|c| (c.0, c.1, c.2));
    let (mut used_s, mut used_r) = (vec![false; saves.len()], vec![false; restores.len()]);
    let mut out = Vec::new();
    for (_, i, j, by) in candidates {
        if used_s[i] || used_r[j] {
            continue;
        }
        used_s[i] = true;
        used_r[j] = true;
        let (s, r) = (saves[i], restores[j]);
        let side = |x: &Sourced| Side {
            source: x.source,
            session: x.session.id,
            mdev: x.session.mdev.clone(),
            bytes: x.session.bytes,
            end: x.session.end,
        };
        let first = s.stopped_at().min(r.stopped_at());
        let last = s.end().max(r.end());
        out.push(Paired {
            guest: s
                .session
                .guest_name()
                .or(r.session.guest_name())
                .map(String::from),
            matched_by: by,
            save: side(s),
            restore: side(r),
            bytes_agree: s.session.bytes == r.session.bytes,
            total_ns: nonneg(last - first),
            downtime_ns: (r.session.end == SessionEnd::Running)
                .then(|| nonneg(r.end() - s.stopped_at()))
                .flatten(),
        });
    }
    out.sort_by_key(|p| (p.save.source, p.save.session));
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::audit::migration::session::Sessions;
    use crate::audit::migration::MigState::*;
    use crate::audit::TaskRef;
    use std::sync::Arc;

    fn mdev(ptr: u64) -> MdevRef {
        MdevRef {
            ptr,
            uuid: None,
            incarnation: 1,
        }
    }

    fn guest(name: Option<&str>) -> TaskRef {
        TaskRef {
            pid: 9,
            tid: 9,
            comm: Arc::from("qemu"),
            guest: name.map(Arc::from),
        }
    }

    /// One save (stop at `t`, STOP_COPY, `bytes` read, STOP) or one restore (stop at `t`,
    /// RESUMING, `bytes` written, STOP, RUNNING), 100 ns per step.
    fn one(dir: Direction, name: Option<&str>, bytes: i64, t: u64) -> Session {
        let mut s = Sessions::default();
        let (m, g) = (mdev(0xa000 + t), guest(name));
        s.set_state(&m, Some(&g), Stop, 0, t);
        s.set_state(&m, Some(&g), dir.state(), 0xf00, t + 100);
        s.transfer(0xf00, bytes);
        s.set_state(&m, Some(&g), Stop, 0, t + 200);
        if dir == Direction::Restore {
            s.set_state(&m, Some(&g), Running, 0, t + 300);
        }
        s.view(t + 400).remove(0)
    }

    fn at(source: usize, s: &Session) -> Sourced<'_> {
        Sourced {
            source,
            boot_to_wall_ns: 0,
            session: s,
        }
    }

    #[test]
    fn same_guest_name_pairs_across_sources_with_downtime() {
        let save = one(Direction::Save, Some("vm1"), 72, 1_000);
        let restore = one(Direction::Restore, Some("vm1"), 72, 1_150);
        let other = one(Direction::Restore, Some("vm2"), 72, 1_000);
        let p = pair(&[at(0, &save), at(1, &other), at(1, &restore)]);
        assert_eq!(p.len(), 1, "{p:#?}");
        let p = &p[0];
        assert_eq!(p.guest.as_deref(), Some("vm1"));
        assert_eq!(p.matched_by, MatchedBy::GuestName);
        assert_eq!((p.save.source, p.restore.source), (0, 1));
        assert_eq!(p.restore.mdev.ptr, 0xa000 + 1_150);
        assert!(p.bytes_agree);
        // The source stopped at 1000; the destination ran again at 1450.
        assert_eq!((p.downtime_ns, p.total_ns), (Some(450), Some(450)));
    }

    #[test]
    fn without_names_bytes_then_time_decide_and_zero_bytes_never_pair() {
        let save = one(Direction::Save, None, 72, 1_000);
        let far = one(Direction::Restore, None, 72, 90_000);
        let near = one(Direction::Restore, None, 72, 1_200);
        let wrong = one(Direction::Restore, None, 64, 1_000);
        let p = pair(&[at(0, &save), at(1, &far), at(1, &wrong), at(1, &near)]);
        assert_eq!(p.len(), 1);
        assert_eq!(p[0].matched_by, MatchedBy::BytesAndTime);
        assert_eq!(p[0].restore.mdev.ptr, 0xa000 + 1_200);
        let empty = one(Direction::Save, None, 0, 1_000);
        let empty_r = one(Direction::Restore, None, 0, 1_000);
        assert!(pair(&[at(0, &empty), at(1, &empty_r)]).is_empty());
    }

    #[test]
    fn one_source_pairs_within_and_two_sources_never_within_one() {
        let save = one(Direction::Save, Some("vm1"), 72, 1_000);
        let restore = one(Direction::Restore, Some("vm1"), 72, 1_100);
        assert_eq!(pair(&[at(0, &save), at(0, &restore)]).len(), 1);
        let unrelated = one(Direction::Save, Some("vm9"), 8, 1_000);
        assert!(pair(&[at(0, &save), at(0, &restore), at(1, &unrelated)]).is_empty());
    }

    #[test]
    fn different_names_never_pair_even_with_equal_bytes() {
        let save = one(Direction::Save, Some("vm1"), 72, 1_000);
        let restore = one(Direction::Restore, Some("vm2"), 72, 1_100);
        assert!(pair(&[at(0, &save), at(1, &restore)]).is_empty());
    }
}
