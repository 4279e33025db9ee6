//! The feed thread with a real source: replay controls (play, step, seek to the next
//! finding). Live runs have no feed thread (tests/tui_live.rs).

mod common;

use std::sync::mpsc::{self, Receiver};
use std::time::{Duration, Instant};

use tracer::audit::{Auditor, Kind};
use tracer::profile::Profile;
use tracer::tui::engine::Update;
use tracer::tui::feed::{self, Replay};
use tracer::tui::{AppEvent, Control, Engine, Playback};

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
