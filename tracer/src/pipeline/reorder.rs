//! Restores kernel-timestamp order across CPUs: per-CPU ring buffer order is not global order.
//!
//! A bounded window: an event leaves when a newer event is `window_ns` ahead of it, when the
//! buffer is full, or when the source has been idle (the caller says how long; no clock here),
//! so the last event before a task hangs still reaches the auditor.

use std::collections::VecDeque;

use crate::model::Event;

/// Released keys at the front of [`Keys`] are dropped in one move once there are this many
/// (and at least as many as live keys): a few key moves per event, amortized.
const COMPACT_AFTER: usize = 4096;

/// The held keys, (timestamp, slot), sorted; ties keep arrival order.
///
/// A vector read from `head`: releasing is a step of `head`, and inserting a displaced key
/// moves only the few keys after it (a `VecDeque` paid its wrap-around bookkeeping on every
/// insert, about half the window's cost per event).
struct Keys {
    v: Vec<(u64, u32)>,
    head: usize,
}

impl Keys {
    fn with_capacity(cap: usize) -> Keys {
        Keys {
            v: Vec::with_capacity(cap),
            head: 0,
        }
    }

    #[inline]
    fn live(&self) -> &[(u64, u32)] {
        &self.v[self.head..]
    }

    #[inline]
    fn len(&self) -> usize {
        self.v.len() - self.head
    }

    #[inline]
    fn front(&self) -> Option<(u64, u32)> {
        self.v.get(self.head).copied()
    }

    #[inline]
    fn pop_front(&mut self) -> Option<(u64, u32)> {
        let k = self.front()?;
        self.head += 1;
        if self.head == self.v.len() {
            self.v.clear();
            self.head = 0;
        }
        Some(k)
    }

    /// Inserts after every key not newer than `ts`.
    #[inline]
    fn insert(&mut self, ts: u64, slot: u32) {
        if self.head >= COMPACT_AFTER && self.head >= self.len() {
            self.v.drain(..self.head);
            self.head = 0;
        }
        let live = self.live();
        let len = live.len();
        let at = if live.last().is_none_or(|&(t, _)| t <= ts) {
            len
        } else {
            // Galloping from the newest end: a key displaced by d places costs about
            // 2 log2(d) comparisons, where a linear walk paid d.
            let mut step = 1;
            while step < len && live[len - 1 - step].0 > ts {
                step *= 2;
            }
            let lo = len.saturating_sub(step + 1);
            let hi = len - 1 - step / 2;
            lo + live[lo..hi].partition_point(|&(t, _)| t <= ts)
        };
        if at == len {
            self.v.push((ts, slot));
        } else {
            self.v.insert(self.head + at, (ts, slot));
        }
    }
}

/// How many places ahead of the released event its successor's fetch is asked for.
const PREFETCH_AHEAD: usize = 16;

/// Asks the CPU to bring the first `lines` cache lines of `x` into its cache (a hint: no
/// effect on what the program does).
#[inline(always)]
fn prefetch<T: ?Sized>(x: &T, lines: usize) {
    #[cfg(target_arch = "x86_64")]
    {
        use std::arch::x86_64::{_mm_prefetch, _MM_HINT_T0};
        let p = x as *const T as *const i8;
        for i in 0..lines {
            // SAFETY: a prefetch reads nothing the program sees and cannot fault.
            unsafe { _mm_prefetch::<_MM_HINT_T0>(p.wrapping_add(64 * i)) };
        }
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = (x, lines);
}

/// The reorder window.
///
/// Events arrive nearly in order, so a vector of small keys kept sorted, (timestamp, slot),
/// costs a few comparisons and a short shift per event where a heap paid ~16 levels per
/// push and per pop; the events themselves wait in a slab and move only in and out. Free
/// slots are reused oldest first, so the slab is written and read in turn, nearly in
/// address order, as events arrive and leave (reusing the newest free slot instead sent
/// every release to a slot written a whole window earlier, at a cache miss each).
pub struct Reorder {
    keys: Keys,
    /// Events wait boxed: a box moves as a pointer, where an event was copied whole into
    /// the slab and out again, and the held window is a few bytes per event.
    slab: Vec<Option<Box<Event>>>,
    free: VecDeque<u32>,
    window_ns: u64,
    capacity: usize,
    newest: u64,
    next_seq: u64,
    /// Last timestamp released: an event older than it arrived too late.
    released_ts: u64,
    pub late: u64,
}

impl Reorder {
    pub fn new(window_ns: u64, capacity: usize) -> Reorder {
        let cap = capacity.min(1 << 16);
        Reorder {
            keys: Keys::with_capacity(cap + COMPACT_AFTER),
            slab: Vec::with_capacity(cap),
            free: VecDeque::with_capacity(cap),
            window_ns,
            capacity: capacity.max(1),
            newest: 0,
            next_seq: 1,
            released_ts: 0,
            late: 0,
        }
    }

    /// Takes an event; hands to `out`, by value, every event that is now safe to release, in
    /// order, with its final sequence number.
    #[inline]
    pub fn push(&mut self, ev: Box<Event>, out: &mut impl FnMut(Box<Event>)) {
        let ts = ev.ts_ns;
        self.newest = self.newest.max(ts);
        if ts < self.released_ts {
            self.late += 1;
        }
        let slot = match self.free.pop_front() {
            Some(i) => {
                self.slab[i as usize] = Some(ev);
                i
            }
            None => {
                self.slab.push(Some(ev));
                (self.slab.len() - 1) as u32
            }
        };
        self.keys.insert(ts, slot);
        let horizon = self.newest.saturating_sub(self.window_ns);
        while let Some((front_ts, _)) = self.keys.front() {
            if front_ts <= horizon || self.keys.len() > self.capacity {
                self.release_front(out);
            } else {
                break;
            }
        }
    }

    #[inline]
    fn release_front(&mut self, out: &mut impl FnMut(Box<Event>)) {
        // An event leaves a whole window after it came: asking for the one a few places
        // behind this one now lets its fetch overlap the auditor's work on this one.
        // Its argument list, behind a second pointer, is asked for when the event itself
        // should be in (half as far ahead).
        let live = self.keys.live();
        if let Some(&(_, ahead)) = live.get(PREFETCH_AHEAD) {
            if let Some(ev) = &self.slab[ahead as usize] {
                prefetch(&**ev, 3);
            }
        }
        if let Some(&(_, ahead)) = live.get(PREFETCH_AHEAD / 2) {
            if let Some(ev) = &self.slab[ahead as usize] {
                if let crate::model::Body::Enter { args, .. } = &ev.body {
                    prefetch(args.as_slice(), 1);
                }
            }
        }
        if let Some((_, slot)) = self.keys.pop_front() {
            let Some(mut ev) = self.slab[slot as usize].take() else {
                // Every key names a held event; a missing one is a bug here, not in the data.
                debug_assert!(false, "reorder key without its event");
                return;
            };
            self.free.push_back(slot);
            self.released_ts = self.released_ts.max(ev.ts_ns);
            ev.seq = self.next_seq;
            self.next_seq += 1;
            out(ev);
        }
    }

    /// The source has been idle: release everything held.
    pub fn flush(&mut self, out: &mut impl FnMut(Box<Event>)) {
        while self.keys.len() > 0 {
            self.release_front(out);
        }
    }

    pub fn len(&self) -> usize {
        self.keys.len()
    }

    pub fn is_empty(&self) -> bool {
        self.keys.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::synth::{Generator, Rng};

    #[test]
    fn shuffled_within_the_window_comes_out_in_order() {
        let evs = Generator::new(5).stream(5000);
        // Shuffle locally: each event moves by up to 30 positions (as per-CPU buffers do).
        let mut shuffled = evs.clone();
        let mut rng = Rng::new(99);
        for i in 0..shuffled.len() {
            let j = (i + rng.below(30) as usize).min(shuffled.len() - 1);
            shuffled.swap(i, j);
        }
        assert_ne!(shuffled, evs);
        let span = 30 * 3200; // 30 events at most 3.2 µs apart
        let mut r = Reorder::new(span * 4, 1 << 20);
        let mut out = Vec::new();
        for e in shuffled {
            r.push(Box::new(e), &mut |e| out.push(*e));
        }
        assert!(out.len() < evs.len(), "the window holds the newest events");
        r.flush(&mut |e| out.push(*e));
        assert_eq!(out.len(), evs.len());
        let ts: Vec<u64> = out.iter().map(|e| e.ts_ns).collect();
        assert_eq!(ts, evs.iter().map(|e| e.ts_ns).collect::<Vec<_>>());
        assert!(out.windows(2).all(|w| w[1].seq == w[0].seq + 1));
        assert_eq!(r.late, 0);
    }

    /// The window against the plainest statement of its rule (a list kept sorted by
    /// timestamp, newcomers after their equals, released from the front while older than
    /// the horizon or over capacity), on arrival orders with ties, stragglers far behind,
    /// late events and a small capacity; long enough that released keys are compacted.
    #[test]
    fn the_window_agrees_with_a_sorted_list() {
        let base = Generator::new(9).stream(1);
        let mut rng = Rng::new(4242);
        for (window, capacity) in [(200, 1 << 20), (5_000, 1 << 20), (2_000, 50), (0, 1)] {
            let mut r = Reorder::new(window, capacity);
            let mut model: Vec<(u64, u64)> = Vec::new(); // (ts, arrival)
            let (mut newest, mut released, mut late) = (0u64, 0u64, 0u64);
            let (mut got, mut want) = (Vec::new(), Vec::new());
            let mut clock = 1_000u64;
            for arrival in 0..30_000u64 {
                clock += rng.below(4);
                let ts = match rng.below(100) {
                    0 => clock.saturating_sub(rng.below(3_000)), // far behind
                    1..=20 => clock.saturating_sub(rng.below(40)),
                    _ => clock,
                };
                let mut e = base[0].clone();
                e.ts_ns = ts;
                e.cpu = arrival as u32; // the arrival's identity: the window renumbers `seq`
                r.push(Box::new(e), &mut |e| {
                    got.push((e.ts_ns, u64::from(e.cpu), e.seq))
                });
                newest = newest.max(ts);
                if ts < released {
                    late += 1;
                }
                let at = model.partition_point(|&(t, _)| t <= ts);
                model.insert(at, (ts, arrival));
                let horizon = newest.saturating_sub(window);
                while model
                    .first()
                    .is_some_and(|&(t, _)| t <= horizon || model.len() > capacity)
                {
                    let (t, a) = model.remove(0);
                    released = released.max(t);
                    want.push((t, a));
                }
                assert_eq!(r.len(), model.len());
            }
            r.flush(&mut |e| got.push((e.ts_ns, u64::from(e.cpu), e.seq)));
            want.append(&mut model);
            assert_eq!(r.late, late, "window {window}, capacity {capacity}");
            let order: Vec<(u64, u64)> = got.iter().map(|&(t, a, _)| (t, a)).collect();
            assert_eq!(order, want, "window {window}, capacity {capacity}");
            assert!(got.iter().enumerate().all(|(i, g)| g.2 == i as u64 + 1));
        }
    }

    #[test]
    fn the_window_is_bounded_in_size() {
        let evs = Generator::new(6).stream(1000);
        let mut r = Reorder::new(u64::MAX, 64);
        let mut n = 0;
        for e in evs {
            r.push(Box::new(e), &mut |_| n += 1);
            assert!(r.len() <= 64);
        }
    }

    /// Equal timestamps leave in arrival order, and an event far behind the newest (past
    /// every step of the gallop) still finds its place.
    #[test]
    fn ties_keep_arrival_order_and_far_stragglers_find_their_place() {
        let base = Generator::new(7).stream(1);
        let at = |ts: u64, cpu: u32| {
            let mut e = base[0].clone();
            e.ts_ns = ts;
            e.cpu = cpu;
            e
        };
        let mut r = Reorder::new(1_000_000, 1 << 20);
        let mut out = Vec::new();
        for ts in (100..200).step_by(2) {
            r.push(Box::new(at(ts, 0)), &mut |e| out.push(*e));
        }
        // 3 is older than all 50 held events; 150 ties with one held in the middle.
        r.push(Box::new(at(3, 1)), &mut |e| out.push(*e));
        r.push(Box::new(at(150, 2)), &mut |e| out.push(*e));
        r.push(Box::new(at(150, 3)), &mut |e| out.push(*e));
        r.flush(&mut |e| out.push(*e));
        let ts: Vec<u64> = out.iter().map(|e| e.ts_ns).collect();
        let mut sorted = ts.clone();
        sorted.sort();
        assert_eq!(ts, sorted);
        assert_eq!(out[0].ts_ns, 3);
        let ties: Vec<u32> = out
            .iter()
            .filter(|e| e.ts_ns == 150)
            .map(|e| e.cpu)
            .collect();
        assert_eq!(ties, [0, 2, 3], "ties leave in the order they arrived");
        assert_eq!(out.len(), 53);
        assert_eq!(r.late, 0);
    }

    #[test]
    fn an_event_older_than_one_released_is_counted_late_and_still_delivered() {
        let base = Generator::new(7).stream(1);
        let at = |ts: u64| {
            let mut e = base[0].clone();
            e.ts_ns = ts;
            e
        };
        let mut r = Reorder::new(10, 1 << 10);
        let mut out = Vec::new();
        r.push(Box::new(at(100)), &mut |e| out.push(*e));
        r.push(Box::new(at(200)), &mut |e| out.push(*e));
        assert_eq!(out.len(), 1, "100 is past the window");
        r.push(Box::new(at(50)), &mut |e| out.push(*e));
        r.flush(&mut |e| out.push(*e));
        assert_eq!(r.late, 1);
        assert_eq!(out.len(), 3);
        assert_eq!(out.iter().map(|e| e.seq).collect::<Vec<_>>(), [1, 2, 3]);
    }

    #[test]
    fn idle_flush_releases_the_last_event() {
        let mut evs = Generator::new(8).stream(10);
        let last = evs.pop().unwrap();
        let mut r = Reorder::new(1_000_000_000, 1000);
        let mut out = Vec::new();
        r.push(Box::new(last.clone()), &mut |e| out.push(*e));
        assert!(out.is_empty(), "held in the window");
        r.flush(&mut |e| out.push(*e));
        assert_eq!(out.len(), 1);
        assert_eq!(out[0].body, last.body);
    }
}
