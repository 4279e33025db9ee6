//! Restores kernel-timestamp order across CPUs: per-CPU ring buffer order is not global order.
//!
//! A bounded window: an event leaves when a newer event is `window_ns` ahead of it, when the
//! buffer is full, or when the source has been idle (the caller says how long; no clock here),
//! so the last event before a task hangs still reaches the auditor.

use crate::model::{prefetch, Event, EVENT_LINES};

/// Released entries at the front of [`Held`] are dropped in one move once there are this
/// many (and at least as many as live ones): a few moves per event, amortized.
const COMPACT_AFTER: usize = 4096;

/// One held event: its timestamp beside its box, so ordering never reads the event.
type Entry = (u64, Option<Box<Event>>);

/// The held events, (timestamp, box), sorted by timestamp; ties keep arrival order.
///
/// A vector read from `head`: releasing is a step of `head`, and inserting a displaced
/// event moves only the few entries after it (a `VecDeque` paid its wrap-around bookkeeping
/// on every insert). The box sits in the entry itself: an index into a slab of boxes, with
/// a free list beside it, cost two more arrays to touch per event.
struct Held {
    v: Vec<Entry>,
    head: usize,
}

impl Held {
    fn with_capacity(cap: usize) -> Held {
        Held {
            v: Vec::with_capacity(cap),
            head: 0,
        }
    }

    #[inline]
    fn live(&self) -> &[Entry] {
        &self.v[self.head..]
    }

    #[inline]
    fn len(&self) -> usize {
        self.v.len() - self.head
    }

    #[inline]
    fn front_ts(&self) -> Option<u64> {
        self.v.get(self.head).map(|e| e.0)
    }

    #[inline]
    fn pop_front(&mut self) -> Option<(u64, Box<Event>)> {
        let (ts, ev) = self.v.get_mut(self.head)?;
        let (ts, ev) = (*ts, ev.take());
        self.head += 1;
        if self.head == self.v.len() {
            self.v.clear();
            self.head = 0;
        }
        ev.map(|ev| (ts, ev))
    }

    /// Inserts after every entry not newer than `ts`.
    #[inline]
    fn insert(&mut self, ts: u64, ev: Box<Event>) {
        if self.head >= COMPACT_AFTER && self.head >= self.len() {
            self.v.drain(..self.head);
            self.head = 0;
        }
        let live = self.live();
        let len = live.len();
        let at = if live.last().is_none_or(|&(t, _)| t <= ts) {
            len
        } else {
            // Galloping from the newest end: an event displaced by d places costs about
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
            self.v.push((ts, Some(ev)));
        } else {
            self.v.insert(self.head + at, (ts, Some(ev)));
        }
    }
}

/// How many places ahead of the released event its successor's fetch is asked for.
const PREFETCH_AHEAD: usize = 16;

/// The reorder window.
///
/// Events arrive nearly in order, so a vector of (timestamp, box) kept sorted costs a few
/// comparisons and a short shift per event where a heap paid ~16 levels per push and per
/// pop; events wait boxed, so the window moves pointers, never an event.
pub struct Reorder {
    held: Held,
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
            held: Held::with_capacity(cap + COMPACT_AFTER),
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
        self.held.insert(ts, ev);
        let horizon = self.newest.saturating_sub(self.window_ns);
        while let Some(front_ts) = self.held.front_ts() {
            if front_ts <= horizon || self.held.len() > self.capacity {
                self.release_front(out);
            } else {
                break;
            }
        }
    }

    #[inline]
    fn release_front(&mut self, out: &mut impl FnMut(Box<Event>)) {
        // An event leaves a whole window after it came: asking for the one a few places
        // behind this one now lets its fetch overlap the auditor's work on this one. Its
        // arguments are in it (`model::Args`): the lines of the event are all there is.
        let live = self.held.live();
        if let Some((_, Some(ev))) = live.get(PREFETCH_AHEAD) {
            prefetch(&**ev, EVENT_LINES);
        }
        if let Some((ts, mut ev)) = self.held.pop_front() {
            // From the entry: the event itself may not be in the cache yet.
            self.released_ts = self.released_ts.max(ts);
            ev.seq = self.next_seq;
            self.next_seq += 1;
            out(ev);
        }
    }

    /// The source has been idle: release everything held.
    pub fn flush(&mut self, out: &mut impl FnMut(Box<Event>)) {
        while self.held.len() > 0 {
            self.release_front(out);
        }
    }

    pub fn len(&self) -> usize {
        self.held.len()
    }

    pub fn is_empty(&self) -> bool {
        self.held.len() == 0
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
