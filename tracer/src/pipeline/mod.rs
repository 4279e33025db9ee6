//! The one path for live and replay: source → reorder → recorder and auditor → sinks.

pub mod reorder;

use std::fs::File;
use std::io;

use crate::audit::{Auditor, Finding};
use crate::calls::Step;
use crate::model::{Body, Event};
use crate::recording::Writer;
use crate::report::GuestFilter;
use reorder::Reorder;

/// Something that watches the stream: the TUI, metrics, printing findings as they happen.
/// Sinks read; they decide nothing.
pub trait Sink {
    /// An event, after the auditor took it, with what it was as a call.
    fn on_event(&mut self, _ev: &Event, _step: &Step<'_>, _auditor: &Auditor) {}
    /// A finding, the moment the auditor raised it.
    fn on_finding(&mut self, _finding: &Finding) {}
    /// The source is idle: a chance to catch up with the auditor's state.
    fn on_idle(&mut self, _auditor: &Auditor) {}
    /// The probes (re)attached: what each could attach, and what a degraded one cannot see.
    fn on_probes(&mut self, _probes: &[crate::recording::ProbeStatus]) {}
}

/// Where events go once ordered.
pub struct Pipeline {
    reorder: Reorder,
    pub auditor: Auditor,
    recorder: Option<Writer<File>>,
    sinks: Vec<Box<dyn Sink + Send>>,
    /// A recorder error, kept so the agent can say it (and stop recording) without panicking.
    pub record_error: Option<io::Error>,
    /// `--guest`: the one filter between the auditor and every sink (the recorder and the
    /// auditor still take every event).
    guest: Option<GuestFilter>,
}

/// Default reorder window: per-CPU buffers are drained every few milliseconds.
pub const REORDER_WINDOW_NS: u64 = 50_000_000;
pub const REORDER_CAPACITY: usize = 1 << 16;

impl Pipeline {
    pub fn new(mut auditor: Auditor, recorder: Option<Writer<File>>) -> Pipeline {
        auditor.stream_findings();
        Pipeline {
            reorder: Reorder::new(REORDER_WINDOW_NS, REORDER_CAPACITY),
            auditor,
            recorder,
            sinks: Vec::new(),
            record_error: None,
            guest: None,
        }
    }

    /// Limits what the sinks get to one guest (`live --guest`): its findings, the events of
    /// its devices and of its own tasks (and losses, which may hide anyone's), and the
    /// auditor's snapshots (devices, finding counts, migrations) they read when idle.
    pub fn limit_to_guest(&mut self, guest: Option<GuestFilter>) {
        self.auditor.limit_views(guest.clone());
        self.guest = guest;
    }

    /// Starts recording from the next delivered event (the live agent creates the file when
    /// the module is first attached, so the header carries its symbols and probes).
    pub fn set_recorder(&mut self, w: Writer<File>) {
        self.recorder = Some(w);
    }

    /// Tells the auditor and the sinks which probes attached, and how.
    pub fn probes_attached(&mut self, probes: &[crate::recording::ProbeStatus]) {
        self.auditor.probes_attached(probes);
        for s in &mut self.sinks {
            s.on_probes(probes);
        }
    }

    pub fn has_recorder(&self) -> bool {
        self.recorder.is_some()
    }

    pub fn add_sink(&mut self, s: Box<dyn Sink + Send>) {
        self.sinks.push(s);
    }

    /// An event straight from a source (not yet ordered).
    pub fn push(&mut self, ev: Event) {
        let b = self.auditor.boxed(ev);
        self.push_boxed(b)
    }

    /// A box to decode the next event into, then [`Pipeline::push_boxed`]: one the
    /// auditor gave back when there is one, so that an event is written once, in place.
    pub fn spare_box(&mut self) -> Box<Event> {
        self.auditor.spare_box()
    }

    /// [`Pipeline::push`] of a boxed event: boxed it stays, through the window into the
    /// auditor (an entry's box becomes its call's), without a copy of the event.
    pub fn push_boxed(&mut self, ev: Box<Event>) {
        // The window hands each released event straight to the next stages: no vector
        // between them.
        let (reorder, mut next) = self.split();
        reorder.push(ev, &mut |e| next.deliver(e));
    }

    /// An event already in order with its sequence number (a replayed recording).
    pub fn push_ordered(&mut self, ev: Event) {
        let b = self.auditor.boxed(ev);
        self.split().1.deliver(b);
    }

    fn split(&mut self) -> (&mut Reorder, Next<'_>) {
        let Pipeline {
            reorder,
            auditor,
            recorder,
            sinks,
            record_error,
            guest,
        } = self;
        (
            reorder,
            Next {
                auditor,
                recorder,
                sinks,
                record_error,
                guest,
            },
        )
    }

    /// The source has been idle: release the reorder window and flush the recording.
    pub fn idle(&mut self) {
        let (reorder, mut next) = self.split();
        reorder.flush(&mut |e| next.deliver(e));
        if let Some(w) = &mut self.recorder {
            if let Err(e) = w.tick() {
                self.record_error = Some(e);
                self.recorder = None;
            }
        }
        for s in &mut self.sinks {
            s.on_idle(&self.auditor);
        }
    }

    /// Drains everything and closes the recording.
    pub fn finish(mut self) -> (Auditor, Option<io::Error>) {
        self.idle();
        let mut err = self.record_error.take();
        if let Some(w) = self.recorder.take() {
            if let Err(e) = w.finish() {
                err = Some(e);
            }
        }
        (self.auditor, err)
    }
}

/// The stages after the window, borrowed apart from it so that it can deliver into them.
struct Next<'a> {
    auditor: &'a mut Auditor,
    recorder: &'a mut Option<Writer<File>>,
    sinks: &'a mut Vec<Box<dyn Sink + Send>>,
    record_error: &'a mut Option<io::Error>,
    guest: &'a Option<GuestFilter>,
}

impl Next<'_> {
    // Inlined into the window's release: the event then goes from the slab to the auditor
    // without a copy into this call's argument.
    #[inline]
    fn deliver(&mut self, ev: Box<Event>) {
        if let Some(w) = self.recorder.as_mut() {
            if let Err(e) = w.push(&ev) {
                *self.record_error = Some(e);
                *self.recorder = None;
            }
        }
        // By value: an entry's box becomes its call's instead of being copied there.
        let back = self.auditor.ingest_boxed(ev);
        self.show(back.as_deref());
        if let Some(b) = back {
            self.auditor.recycle(b);
        }
    }

    /// What the sinks are told of the event just audited (`back`, or the entry the auditor
    /// kept).
    #[inline]
    fn show(&mut self, back: Option<&Event>) {
        if self.sinks.is_empty() {
            // What the auditor raised stays in its findings; no sink is waiting for it.
            self.auditor.clear_raised();
            return;
        }
        for f in self.auditor.take_raised() {
            if self.guest.as_ref().is_some_and(|g| !g.matches(&f)) {
                continue;
            }
            for s in self.sinks.iter_mut() {
                s.on_finding(&f);
            }
        }
        let step = self.auditor.step();
        let Some(ev) = back.or_else(|| self.auditor.last_entry()) else {
            return;
        };
        if let Some(g) = self.guest {
            let concerns = matches!(ev.body, Body::Lost { .. })
                || self
                    .auditor
                    .event_tasks(ev, &step)
                    .iter()
                    .any(|t| g.matches_task(t));
            if !concerns {
                return;
            }
        }
        for s in self.sinks.iter_mut() {
            s.on_event(ev, &step, self.auditor);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::profile::Profile;
    use crate::recording::{Header, Recording};

    /// What a sink was given.
    #[derive(Default)]
    struct Seen {
        event_pids: Vec<u32>,
        findings: Vec<Finding>,
        /// guest pids of the mdevs in the snapshots it was shown when idle
        snapshot_guests: std::collections::BTreeSet<Option<u32>>,
        snapshot_mdevs: usize,
    }

    struct Watch(std::sync::Arc<std::sync::Mutex<Seen>>);

    impl Sink for Watch {
        fn on_event(&mut self, ev: &Event, _step: &Step<'_>, _auditor: &Auditor) {
            self.0.lock().unwrap().event_pids.push(ev.task.pid);
        }
        fn on_finding(&mut self, f: &Finding) {
            self.0.lock().unwrap().findings.push(f.clone());
        }
        fn on_idle(&mut self, auditor: &Auditor) {
            let snap = auditor.snapshot();
            let mut s = self.0.lock().unwrap();
            s.snapshot_mdevs = snap.mdevs.len();
            s.snapshot_guests = snap
                .mdevs
                .iter()
                .map(|m| m.guest.as_ref().map(|g| g.pid))
                .collect();
        }
    }

    /// Two sinks (standing for the TUI and the metrics) behind one pipeline, fed the
    /// devices of many guests (the synthetic stream: guest pids 2000-2096, mdevctl 300-349):
    /// limited to one guest, both get exactly that guest's findings, no event of another
    /// guest's task, and snapshots holding only its devices.
    #[test]
    fn a_guest_limit_is_one_filter_for_every_sink() {
        let mut g = crate::synth::Generator::new(3);
        g.fault_every = 2;
        g.faults = vec![crate::synth::Fault::Leak];
        let events = g.stream(3000);
        let run = |guest: Option<GuestFilter>| {
            let seen: Vec<_> = (0..2)
                .map(|_| std::sync::Arc::new(std::sync::Mutex::new(Seen::default())))
                .collect();
            let mut p = Pipeline::new(Auditor::new(Profile::vfio_ap()), None);
            p.limit_to_guest(guest);
            for s in &seen {
                p.add_sink(Box::new(Watch(s.clone())));
            }
            for e in &events {
                p.push_ordered(e.clone());
            }
            p.idle();
            let all = p.auditor.findings().to_vec();
            (seen, all)
        };
        let (_, all) = run(None);
        let guest_of = |f: &Finding| f.guest.as_ref().map(|g| g.pid);
        let mut by_guest: std::collections::BTreeMap<u32, usize> = Default::default();
        for f in &all {
            if let Some(p) = guest_of(f) {
                *by_guest.entry(p).or_default() += 1;
            }
        }
        assert!(
            by_guest.len() >= 2,
            "findings of several guests: {by_guest:?}"
        );
        let (&pid, &n) = by_guest.iter().next().unwrap();

        let (seen, audited) = run(Some(GuestFilter::Pid(pid)));
        // the audit itself still sees every guest
        assert_eq!(audited.len(), all.len());
        let a = seen[0].lock().unwrap();
        let b = seen[1].lock().unwrap();
        assert_eq!(
            a.findings, b.findings,
            "one filter: every sink gets the same"
        );
        assert_eq!(a.event_pids, b.event_pids);
        assert_eq!(a.findings.len(), n);
        assert!(a.findings.iter().all(|f| guest_of(f) == Some(pid)));
        assert!(a.event_pids.contains(&pid), "the guest's own events");
        let others: Vec<u32> = a
            .event_pids
            .iter()
            .copied()
            .filter(|&p| p != pid && (2000..2097).contains(&p))
            .collect();
        assert!(others.is_empty(), "events of other guests: {others:?}");
        assert!(a.snapshot_mdevs > 0);
        assert_eq!(
            a.snapshot_guests,
            [Some(pid)].into_iter().collect(),
            "the snapshot shows the guest's devices only"
        );
    }

    /// The live agent's recorder: a pipeline that finishes leaves a recording with its end
    /// marker; one that never finishes (the agent SIGKILLed) leaves one that says so.
    #[test]
    fn the_recorder_ends_the_recording_only_when_the_pipeline_finishes() {
        let dir = tempfile::tempdir().unwrap();
        let events = crate::synth::Generator::new(5).stream(300);
        let record = |name: &str, finish: bool| {
            let path = dir.path().join(name);
            let w = Writer::create(&path, &Header::default(), false).unwrap();
            let mut p = Pipeline::new(Auditor::new(Profile::vfio_ap()), Some(w));
            for e in &events {
                p.push_ordered(e.clone());
            }
            // What the agent has written when it is killed: every chunk flushed so far.
            p.recorder.as_mut().unwrap().flush_chunk().unwrap();
            if finish {
                let (_, err) = p.finish();
                assert!(err.is_none(), "{err:?}");
            } else {
                drop(p);
            }
            Recording::open(&path).unwrap()
        };

        let finished = record("finished.aptr", true);
        assert!(finished.intact(), "{:?}", finished.damage);
        let end = finished.end.clone().expect("an end marker");
        assert_eq!(end.events, events.len() as u64);

        let killed = record("killed.aptr", false);
        assert!(killed.end.is_none());
        assert!(!killed.intact());
        let mut w = Vec::new();
        assert_eq!(killed.events(&mut w), events, "every flushed event is kept");
        assert!(
            killed
                .warnings
                .iter()
                .any(|w| w.contains("has no end marker")),
            "{:?}",
            killed.warnings
        );
    }
}
