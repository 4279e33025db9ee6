//! The feed thread with real sources: replay controls (play, step, seek to the next finding)
//! and a live stream at well over 100,000 events a second, with the App drawing meanwhile.

mod common;

use std::sync::mpsc::{self, Receiver};
use std::time::{Duration, Instant};

use ratatui::backend::TestBackend;
use ratatui::Terminal;
use tracer::audit::{Auditor, Kind};
use tracer::profile::Profile;
use tracer::synth::{Fault, Generator};
use tracer::tui::app::{FINDINGS_CAP, LOG_CAP};
use tracer::tui::engine::Update;
use tracer::tui::feed::{self, Live, Replay};
use tracer::tui::{App, AppEvent, Control, Engine, Playback};

fn engine() -> Engine {
    Engine::new(Auditor::new(Profile::vfio_ap()))
}

/// The next update that satisfies `ok`, within a deadline.
fn wait_update(rx: &Receiver<AppEvent>, mut ok: impl FnMut(&Update) -> bool) -> Box<Update> {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match rx.recv_timeout(left) {
            Ok(AppEvent::Data(u)) if ok(&u) => return u,
            Ok(_) => {}
            Err(e) => panic!("no such update: {e}"),
        }
    }
}

fn position(u: &Update) -> usize {
    match u.playback {
        Playback::Replay { position, .. } => position,
        _ => panic!("not a replay"),
    }
}

#[test]
fn replay_plays_to_the_end() {
    let events = common::leak_events();
    let total = events.len();
    let (tx, rx) = mpsc::channel();
    let (ctl, thread) = feed::spawn(Replay::new(events, 64.0, false), engine(), tx);
    let u = wait_update(&rx, |u| u.ended);
    assert_eq!(u.snapshot.events as usize, total);
    assert_eq!(position(&u), total);
    assert_eq!(u.snapshot.findings_by_kind[&Kind::Leak], 1);
    ctl.send(Control::Quit).unwrap();
    assert_eq!(thread.join().unwrap().findings_len(), 1);
}

#[test]
fn step_and_seek_to_the_next_finding() {
    let events = common::leak_events();
    let total = events.len();
    let (tx, rx) = mpsc::channel();
    let (ctl, _thread) = feed::spawn(Replay::new(events, 1.0, true), engine(), tx);
    for _ in 0..3 {
        ctl.send(Control::Step).unwrap();
    }
    let u = wait_update(&rx, |u| position(u) == 3);
    assert!(u.playback.paused());
    assert_eq!(u.new_log.last().map(|l| l.seq), Some(3));
    // An update held by the App counts against the two in flight: let it go, as the App does.
    drop(u);

    ctl.send(Control::SeekFinding).unwrap();
    let mut found = Vec::new();
    let u = wait_update(&rx, |u| {
        found.extend(u.new_findings.iter().map(|f| f.kind));
        !found.is_empty() && u.playback.paused()
    });
    assert_eq!(found, [Kind::Leak]);
    // Stopped on the event that raised it, not at the end.
    let leak_seq = u.new_log.last().unwrap().seq;
    assert_eq!(position(&u) as u64, leak_seq);
    assert!(position(&u) < total);
    drop(u);

    ctl.send(Control::TogglePause).unwrap();
    let u = wait_update(&rx, |u| u.ended);
    assert_eq!(position(&u), total);
}

/// A live stream pushed as fast as the producer can: updates keep coming while the engine
/// is busy, each draw is quick, and what the App holds stays bounded.
#[test]
fn a_live_stream_over_100k_events_per_second_stays_responsive() {
    const N: usize = 300_000;
    let mut g = Generator::new(5);
    g.fault_every = 50;
    g.faults = vec![Fault::Leak, Fault::LockNotHeld, Fault::InvalidArc];
    let events = g.stream(N);
    let n = events.len();

    let (ev_tx, ev_rx) = mpsc::sync_channel(65_536);
    let (tx, rx) = mpsc::channel();
    let (ctl, _thread) = feed::spawn(Live::new(ev_rx), engine(), tx);
    let mut app = App::new(Default::default(), Some(ctl));
    let mut term = Terminal::new(TestBackend::new(160, 50)).unwrap();

    let started = Instant::now();
    let producer = std::thread::spawn(move || {
        for e in events {
            ev_tx.send(e).unwrap();
        }
        started.elapsed()
    });
    let mut last = Instant::now();
    let mut max_gap = Duration::ZERO;
    let mut max_draw = Duration::ZERO;
    let mut updates = 0;
    let deadline = Instant::now() + Duration::from_secs(240);
    while (app.snapshot.events as usize) < n {
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
    let produced_in = producer.join().unwrap();
    let total = started.elapsed();
    let rate = n as f64 / total.as_secs_f64();
    eprintln!(
        "live load: {n} events in {total:?} ({rate:.0}/s; produced in {produced_in:?}), {updates} updates, \
         largest gap between updates {max_gap:?}, slowest draw {max_draw:?}"
    );
    assert!(
        max_gap < Duration::from_secs(2),
        "the screen went {max_gap:?} without an update"
    );
    let raised: u64 = app.snapshot.findings_by_kind.values().sum();
    assert!(raised > 0);
    assert_eq!(app.findings.len() as u64 + app.findings_dropped, raised);
    if !cfg!(debug_assertions) {
        assert!(rate > 100_000.0, "only {rate:.0} events/s");
        assert!(
            max_draw < Duration::from_millis(50),
            "a draw took {max_draw:?}"
        );
    }
}
