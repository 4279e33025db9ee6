//! Restores kernel-timestamp order across CPUs: per-CPU ring buffer order is not global order.
//!
//! A bounded window: an event leaves when a newer event is `window_ns` ahead of it, when the
//! buffer is full, or when the source has been idle (the caller says how long; no clock here),
//! so the last event before a task hangs still reaches the auditor.

use std::cmp::Reverse;
use std::collections::BinaryHeap;

use crate::model::Event;

/// The heap orders small keys, (timestamp, arrival, slot); the events wait in a slab. Moving
/// 24-byte keys through the heap's levels instead of whole events is what makes the window
/// cheap (ties on the timestamp keep arrival order, as before).
type Key = (u64, u64, u32);

/// The reorder window.
pub struct Reorder {
    heap: BinaryHeap<Reverse<Key>>,
    slab: Vec<Option<Event>>,
    free: Vec<u32>,
    window_ns: u64,
    capacity: usize,
    newest: u64,
    arrivals: u64,
    next_seq: u64,
    /// Last timestamp released: an event older than it arrived too late.
    released_ts: u64,
    pub late: u64,
}

impl Reorder {
    pub fn new(window_ns: u64, capacity: usize) -> Reorder {
        let cap = capacity.min(1 << 16);
        Reorder {
            heap: BinaryHeap::with_capacity(cap),
            slab: Vec::with_capacity(cap),
            free: Vec::new(),
            window_ns,
            capacity: capacity.max(1),
            newest: 0,
            arrivals: 0,
            next_seq: 1,
            released_ts: 0,
            late: 0,
        }
    }

    /// Takes an event; pushes to `out` every event that is now safe to release, in order,
    /// with its final sequence number.
    pub fn push(&mut self, ev: Event, out: &mut impl FnMut(Event)) {
        self.newest = self.newest.max(ev.ts_ns);
        self.arrivals += 1;
        if ev.ts_ns < self.released_ts {
            self.late += 1;
        }
        let ts = ev.ts_ns;
        let slot = match self.free.pop() {
            Some(i) => {
                self.slab[i as usize] = Some(ev);
                i
            }
            None => {
                self.slab.push(Some(ev));
                (self.slab.len() - 1) as u32
            }
        };
        self.heap.push(Reverse((ts, self.arrivals, slot)));
        let horizon = self.newest.saturating_sub(self.window_ns);
        while let Some(Reverse((top_ts, _, _))) = self.heap.peek() {
            if *top_ts <= horizon || self.heap.len() > self.capacity {
                self.release_one(out);
            } else {
                break;
            }
        }
    }

    fn release_one(&mut self, out: &mut impl FnMut(Event)) {
        if let Some(Reverse((_, _, slot))) = self.heap.pop() {
            let mut ev = self.slab[slot as usize].take().expect("a held event");
            self.free.push(slot);
            self.released_ts = self.released_ts.max(ev.ts_ns);
            ev.seq = self.next_seq;
            self.next_seq += 1;
            out(ev);
        }
    }

    /// The source has been idle: release everything held.
    pub fn flush(&mut self, out: &mut impl FnMut(Event)) {
        while !self.heap.is_empty() {
            self.release_one(out);
        }
    }

    pub fn len(&self) -> usize {
        self.heap.len()
    }

    pub fn is_empty(&self) -> bool {
        self.heap.is_empty()
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
            r.push(e, &mut |e| out.push(e));
        }
        assert!(out.len() < evs.len(), "the window holds the newest events");
        r.flush(&mut |e| out.push(e));
        assert_eq!(out.len(), evs.len());
        let ts: Vec<u64> = out.iter().map(|e| e.ts_ns).collect();
        assert_eq!(ts, evs.iter().map(|e| e.ts_ns).collect::<Vec<_>>());
        assert!(out.windows(2).all(|w| w[1].seq == w[0].seq + 1));
        assert_eq!(r.late, 0);
    }

    #[test]
    fn the_window_is_bounded_in_size() {
        let evs = Generator::new(6).stream(1000);
        let mut r = Reorder::new(u64::MAX, 64);
        let mut n = 0;
        for e in evs {
            r.push(e, &mut |_| n += 1);
            assert!(r.len() <= 64);
        }
    }

    #[test]
    fn idle_flush_releases_the_last_event() {
        let mut evs = Generator::new(8).stream(10);
        let last = evs.pop().unwrap();
        let mut r = Reorder::new(1_000_000_000, 1000);
        let mut out = Vec::new();
        r.push(last.clone(), &mut |e| out.push(e));
        assert!(out.is_empty(), "held in the window");
        r.flush(&mut |e| out.push(e));
        assert_eq!(out.len(), 1);
        assert_eq!(out[0].body, last.body);
    }
}
