//! `aptrace live --tui` without a kernel: synthetic events go through the pipeline the agent
//! builds (reorder, recorder, auditor) with the screen as its sink, on their own thread, as
//! the agent's ring-buffer reader would push them; the App draws what it is sent.

mod common;

use std::path::Path;
use std::sync::mpsc::{self, Receiver, Sender};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use ratatui::backend::TestBackend;
use ratatui::Terminal;
use tracer::audit::{Auditor, Finding};
use tracer::live::cancel::Cancel;
use tracer::model::Event;
use tracer::pipeline::Pipeline;
use tracer::profile::Profile;
use tracer::recording::{Recording, Writer};
use tracer::synth::{Fault, Generator};
use tracer::tui::app::{FINDINGS_CAP, LOG_CAP};
use tracer::tui::engine::LogLine;
use tracer::tui::live::screen_sinks;
use tracer::tui::{App, AppEvent, Control, View};

/// Events as the ring buffer yields them: no sequence numbers, and the two CPUs' records
/// interleaved out of timestamp order.
fn from_the_kernel(mut events: Vec<Event>) -> Vec<Event> {
    for e in &mut events {
        e.seq = 0;
    }
    for pair in events.chunks_mut(2) {
        if pair.len() == 2 && pair[0].cpu != pair[1].cpu {
            pair.swap(0, 1);
        }
    }
    events
}

fn faulty(n: usize) -> Vec<Event> {
    let mut g = Generator::new(5);
    g.fault_every = 50;
    g.faults = vec![Fault::Leak, Fault::LockNotHeld, Fault::InvalidArc];
    g.stream(n)
}

/// The agent's side: its pipeline with the screen's sinks, fed in batches with an idle
/// after each (the agent's timer), then cancelled and finished. Returns the findings of
/// the agent's own auditor.
fn agent(
    events: Vec<Event>,
    batch: usize,
    record: Option<&Path>,
    app: Sender<AppEvent>,
    controls: Receiver<Control>,
) -> JoinHandle<Vec<Finding>> {
    let profile = Profile::vfio_ap();
    let cancel = Cancel::new();
    let mut pipeline: Pipeline = tracer::live::options::pipeline(
        &profile,
        None,
        screen_sinks(&profile, app, controls, cancel.clone()),
    );
    if let Some(path) = record {
        let header = common::sample_header();
        pipeline.set_recorder(Writer::create(path, &header, false).unwrap());
    }
    std::thread::spawn(move || {
        for chunk in events.chunks(batch) {
            for e in chunk {
                pipeline.push(e.clone());
            }
            pipeline.idle();
        }
        cancel.cancel();
        let (auditor, err) = pipeline.finish();
        assert!(err.is_none(), "{err:?}");
        auditor.findings().to_vec()
    })
}

fn draw(app: &App) -> String {
    let mut t = Terminal::new(TestBackend::new(160, 50)).unwrap();
    t.draw(|f| f.render_widget(app, f.area())).unwrap();
    t.backend().to_string()
}

/// Takes updates until the run has ended.
fn until_ended(app: &mut App, rx: &Receiver<AppEvent>) {
    let deadline = Instant::now() + Duration::from_secs(120);
    while !app.ended {
        let left = deadline.saturating_duration_since(Instant::now());
        let ev = rx.recv_timeout(left).expect("the run ends on screen");
        app.handle_event(ev);
    }
}

/// What the screen shows of a live run is what the recording of the same run holds: the
/// same sequence numbers for the same events, and the same findings.
#[test]
fn the_screen_shows_the_sequence_numbers_and_findings_of_the_recording() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("run.aptr");
    let events = from_the_kernel(faulty(3_000));
    let n = events.len();
    let (tx, rx) = mpsc::channel();
    let (ctl_tx, ctl_rx) = mpsc::channel();
    let thread = agent(events, 97, Some(&path), tx, ctl_rx);
    let mut app = App::new(Default::default(), Some(ctl_tx));
    until_ended(&mut app, &rx);
    let agents_findings = thread.join().unwrap();

    let rec = Recording::open(&path).unwrap();
    assert!(rec.intact(), "{:?}", rec.damage);
    let mut warnings = Vec::new();
    let recorded = rec.events(&mut warnings);
    assert_eq!(recorded.len(), n);
    assert!(recorded.windows(2).all(|w| w[1].seq == w[0].seq + 1));

    // Every line on screen is the recorded event of that sequence number; none is missing
    // unaccounted, and the newest is the recording's last.
    assert_eq!(app.snapshot.events as usize, n);
    assert_eq!(app.log.len() as u64 + app.log_dropped, n as u64);
    let sigs = tracer::calls::show::Signatures::of(&tracer::profile::Profile::vfio_ap());
    for line in &app.log {
        let ev = &recorded[line.seq as usize - 1];
        assert_eq!(*line, LogLine::from_event(ev, &sigs));
    }
    assert_eq!(
        app.log.back().map(|l| l.seq),
        recorded.last().map(|e| e.seq)
    );

    // The findings on screen are those of the recording, audited again, event numbers and
    // all; and those of the agent's own auditor.
    let mut again = Pipeline::new(Auditor::new(Profile::vfio_ap()), None);
    for e in &recorded {
        again.push_ordered(e.clone());
    }
    let (replayed, _) = again.finish();
    assert!(!replayed.findings().is_empty());
    assert_eq!(app.findings_dropped, 0);
    let shown: Vec<Finding> = app.findings.iter().cloned().collect();
    assert_eq!(shown, replayed.findings());
    assert_eq!(shown, agents_findings);

    // On screen, drawn: the newest sequence number in the event log, a finding's events.
    app.view = View::Events;
    let last = format!("{}", recorded.last().unwrap().seq);
    assert!(draw(&app).contains(&last), "{}", draw(&app));
    app.view = View::Findings;
    assert!(draw(&app).contains("■ ended"));
}

/// A run that stops before its pipeline ever idles still ends on screen.
#[test]
fn a_run_that_never_started_ends_on_screen() {
    let (tx, rx) = mpsc::channel();
    let (_ctl_tx, ctl_rx) = mpsc::channel();
    let sinks = screen_sinks(&Profile::vfio_ap(), tx, ctl_rx, Cancel::new());
    drop(sinks);
    let mut app = App::new(Default::default(), None);
    until_ended(&mut app, &rx);
    assert!(app.snapshot.mdevs.is_empty());
}

/// A live stream pushed as fast as the agent's pipeline takes it: updates keep coming while
/// it is busy, each draw is quick, and what the App holds stays bounded.
#[test]
fn a_live_stream_over_100k_events_per_second_stays_responsive() {
    let events = from_the_kernel(faulty(300_000));
    let n = events.len();
    let (tx, rx) = mpsc::channel();
    let (ctl_tx, ctl_rx) = mpsc::channel();
    let started = Instant::now();
    // The agent idles its pipeline every 100 ms; a batch of this size takes about that.
    let thread = agent(events, 8_192, None, tx, ctl_rx);
    let mut app = App::new(Default::default(), Some(ctl_tx));
    let mut term = Terminal::new(TestBackend::new(160, 50)).unwrap();
    let mut last = Instant::now();
    let mut max_gap = Duration::ZERO;
    let mut max_draw = Duration::ZERO;
    let mut updates = 0;
    let deadline = Instant::now() + Duration::from_secs(240);
    while !app.ended {
        assert!(
            Instant::now() < deadline,
            "ingest did not finish: {} of {n}",
            app.snapshot.events
        );
        let ev = rx
            .recv_timeout(Duration::from_secs(5))
            .expect("updates keep coming");
        if matches!(ev, AppEvent::Data(_)) {
            updates += 1;
            max_gap = max_gap.max(last.elapsed());
            last = Instant::now();
        }
        app.handle_event(ev);
        let t = Instant::now();
        term.draw(|f| f.render_widget(&app, f.area())).unwrap();
        max_draw = max_draw.max(t.elapsed());
        assert!(app.log.len() <= LOG_CAP && app.findings.len() <= FINDINGS_CAP);
    }
    let findings = thread.join().unwrap();
    let total = started.elapsed();
    let rate = n as f64 / total.as_secs_f64();
    eprintln!(
        "live load: {n} events in {total:?} ({rate:.0}/s), {updates} updates, \
         largest gap between updates {max_gap:?}, slowest draw {max_draw:?}"
    );
    assert_eq!(app.snapshot.events as usize, n);
    assert!(
        max_gap < Duration::from_secs(2),
        "the screen went {max_gap:?} without an update"
    );
    let raised: u64 = app.snapshot.findings_by_kind.values().sum();
    assert!(raised > 0);
    assert_eq!(raised, findings.len() as u64);
    assert_eq!(app.findings.len() as u64 + app.findings_dropped, raised);
    if !cfg!(debug_assertions) {
        assert!(rate > 100_000.0, "only {rate:.0} events/s");
        assert!(
            max_draw < Duration::from_millis(50),
            "a draw took {max_draw:?}"
        );
    }
}

/// Pause freezes the display of a live run (the auditor goes on); resuming shows what came
/// meanwhile, nothing lost.
#[test]
fn a_frozen_display_gets_no_updates_until_resumed() {
    let profile = Profile::vfio_ap();
    let (tx, rx) = mpsc::channel();
    let (ctl_tx, ctl_rx) = mpsc::channel();
    let mut p = tracer::live::options::pipeline(
        &profile,
        None,
        screen_sinks(&profile, tx, ctl_rx, Cancel::new()),
    );
    let events = from_the_kernel(faulty(600));
    let data = |rx: &Receiver<AppEvent>| -> Vec<Box<tracer::tui::Update>> {
        rx.try_iter()
            .filter_map(|e| match e {
                AppEvent::Data(u) => Some(u),
                _ => None,
            })
            .collect()
    };
    ctl_tx.send(Control::Hold).unwrap();
    p.idle();
    let first = data(&rx);
    assert_eq!(first.len(), 1);
    assert!(first[0].playback.paused());
    drop(first);
    for e in &events[..300] {
        p.push(e.clone());
    }
    std::thread::sleep(Duration::from_millis(150));
    p.idle();
    assert!(data(&rx).is_empty(), "frozen");
    ctl_tx.send(Control::TogglePause).unwrap();
    p.idle();
    let resumed = data(&rx);
    assert_eq!(resumed.len(), 1);
    assert!(!resumed[0].playback.paused());
    assert_eq!(resumed[0].new_log.len(), 300);
    assert_eq!(resumed[0].snapshot.events, 300);
}
