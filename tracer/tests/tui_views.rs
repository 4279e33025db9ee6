//! TestBackend snapshots of every view of the App, fed directly by an Engine (no kernel,
//! no terminal, no threads), plus the App's key handling and bounds.

mod common;

use std::sync::mpsc;

use ratatui::backend::TestBackend;
use ratatui::crossterm::event::{KeyCode, KeyEvent};
use ratatui::Terminal;
use tracer::audit::Auditor;
use tracer::model::{Body, Event, LossSource, Task};
use tracer::profile::Profile;
use tracer::tui::app::LOG_CAP;
use tracer::tui::engine::{LogLine, Update};
use tracer::tui::{source_info, App, AppEvent, Control, Engine, Playback, View};

fn paused(total: usize) -> Playback {
    Playback::Replay {
        paused: true,
        speed: 1.0,
        position: total,
        total,
        seeking: false,
    }
}

/// An App and its engine after the leak sample, with a lost-events record in the middle.
fn loaded() -> (App, Engine, mpsc::Receiver<Control>) {
    let mut events = common::leak_events();
    let at = events.len() / 2;
    let ts = events[at].ts_ns;
    events.insert(
        at,
        Event {
            seq: 0,
            ts_ns: ts,
            cpu: 0,
            task: Task {
                pid: 0,
                tid: 0,
                comm: "".into(),
            },
            body: Body::Lost {
                count: 3,
                source: LossSource::RingBuffer,
            },
        },
    );
    for (i, e) in events.iter_mut().enumerate() {
        e.seq = i as u64 + 1;
    }
    let profile = Profile::vfio_ap();
    let info = source_info(
        "replay of leak.aptr".into(),
        common::sample_header().probes,
        &profile,
    );
    let mut engine = Engine::new(Auditor::new(profile));
    let (tx, rx) = mpsc::channel();
    let mut app = App::new(info, Some(tx));
    let total = events.len();
    for (i, e) in events.into_iter().enumerate() {
        engine.push_ordered(e);
        if i % 40 == 39 {
            engine.roll_rate();
        }
    }
    app.handle_event(AppEvent::Data(Box::new(engine.update(
        None,
        paused(total),
        true,
    ))));
    refresh(&mut app, &mut engine);
    (app, engine, rx)
}

/// One more update, with the detail of the App's selected mdev.
fn refresh(app: &mut App, engine: &mut Engine) {
    let total = app.snapshot.events as usize;
    let u = engine.update(app.mdev_sel, paused(total), true);
    app.handle_event(AppEvent::Data(Box::new(u)));
}

fn key(app: &mut App, code: KeyCode) {
    app.handle_event(AppEvent::Key(KeyEvent::from(code)));
}

fn keys(app: &mut App, s: &str) {
    for c in s.chars() {
        key(app, KeyCode::Char(c));
    }
}

fn draw(app: &App) -> String {
    let mut t = Terminal::new(TestBackend::new(130, 40)).unwrap();
    t.draw(|f| f.render_widget(app, f.area())).unwrap();
    t.backend().to_string()
}

#[test]
fn view_mdevs_table_and_detail() {
    let (app, _e, _rx) = loaded();
    assert_eq!(app.view, View::Mdevs);
    insta::assert_snapshot!(draw(&app));
}

#[test]
fn view_findings_with_evidence_after_n() {
    let (mut app, _e, _rx) = loaded();
    keys(&mut app, "n");
    assert_eq!(app.view, View::Findings);
    let s = draw(&app);
    assert!(s.contains(&common::uuid_of(common::LEAKING_LIFE)));
    insta::assert_snapshot!(s);
}

#[test]
fn view_leaking_mdev_detail_zoomed() {
    let (mut app, mut e, _rx) = loaded();
    keys(&mut app, "nn");
    key(&mut app, KeyCode::Enter);
    refresh(&mut app, &mut e);
    assert_eq!((app.view, app.zoom), (View::Mdevs, true));
    insta::assert_snapshot!(draw(&app));
}

#[test]
fn view_event_log_filtered() {
    let (mut app, _e, _rx) = loaded();
    keys(&mut app, "/Release_Dev");
    let editing = draw(&app);
    assert!(editing.contains("filter: /Release_Dev"), "{editing}");
    key(&mut app, KeyCode::Enter);
    assert_eq!(app.filter, "release_dev");
    insta::assert_snapshot!(draw(&app));
}

#[test]
fn view_event_log_scrolled_back() {
    let (mut app, _e, _rx) = loaded();
    keys(&mut app, "3");
    for _ in 0..5 {
        key(&mut app, KeyCode::Up);
    }
    assert_eq!(app.log_scroll, 5);
    insta::assert_snapshot!(draw(&app));
}

#[test]
fn view_probes() {
    let (mut app, _e, _rx) = loaded();
    key(&mut app, KeyCode::Tab);
    key(&mut app, KeyCode::Tab);
    key(&mut app, KeyCode::Tab);
    assert_eq!(app.view, View::Probes);
    insta::assert_snapshot!(draw(&app));
}

#[test]
fn view_help() {
    let (mut app, _e, _rx) = loaded();
    keys(&mut app, "?");
    insta::assert_snapshot!(draw(&app));
    keys(&mut app, "x");
    assert!(!app.help);
}

#[test]
fn view_live_before_any_event() {
    let profile = Profile::vfio_ap();
    let mut app = App::new(
        source_info("live on lpar1".into(), Vec::new(), &profile),
        None,
    );
    app.handle_event(AppEvent::Data(Box::new(Update {
        playback: Playback::Live { frozen: false },
        rate: vec![0],
        lost_rate: vec![0],
        ..Update::default()
    })));
    insta::assert_snapshot!(draw(&app));
}

#[test]
fn keys_send_controls_and_q_quits() {
    let (mut app, _e, rx) = loaded();
    while rx.try_recv().is_ok() {}
    keys(&mut app, "p+-s");
    let got: Vec<Control> = rx.try_iter().collect();
    assert_eq!(
        got,
        vec![
            Control::TogglePause,
            Control::Faster,
            Control::Slower,
            Control::Step
        ]
    );
    // Past the last finding, n asks the source to run on to the next one (not after the end).
    keys(&mut app, "nn");
    assert!(
        rx.try_iter().all(|c| c != Control::SeekFinding),
        "the replay has ended"
    );
    keys(&mut app, "jk");
    assert!(!app.quit);
    keys(&mut app, "q");
    assert!(app.quit);
}

#[test]
fn n_seeks_when_no_finding_is_known_yet() {
    let (tx, rx) = mpsc::channel();
    let mut app = App::new(Default::default(), Some(tx));
    keys(&mut app, "n");
    assert_eq!(rx.try_recv(), Ok(Control::SeekFinding));
    // The finding the seek stops on is selected when it arrives.
    let (full, mut e, _rx) = loaded();
    let finding = full.findings[0].clone();
    let _ = &mut e;
    app.handle_event(AppEvent::Data(Box::new(Update {
        new_findings: vec![finding],
        ..Update::default()
    })));
    assert_eq!((app.view, app.finding_sel), (View::Findings, Some(0)));
}

#[test]
fn the_event_log_is_a_bounded_ring() {
    let mut app = App::new(Default::default(), None);
    let line = |seq| LogLine {
        seq,
        ts_ns: seq,
        cpu: 0,
        pid: 1,
        comm: "x".into(),
        text: "t".into(),
    };
    for round in 0..5u64 {
        let new_log = (0..4_000).map(|i| line(round * 4_000 + i)).collect();
        app.handle_event(AppEvent::Data(Box::new(Update {
            new_log,
            log_dropped: 10,
            ..Update::default()
        })));
    }
    assert_eq!(app.log.len(), LOG_CAP);
    assert_eq!(app.log.back().unwrap().seq, 19_999);
    assert_eq!(app.log_dropped, 50 + (20_000 - LOG_CAP as u64));
}

/// The lock-order scenario (the built-in profile has the VFIO core's rows): the mdev's
/// detail shows the order graph, each lock with the edges out of it, cycles marked.
#[test]
fn view_mdev_detail_lists_the_lock_order_edges() {
    let root = common::root();
    let profile = Profile::vfio_ap();
    let file = root.join("tracer/tests/scenarios/lock-order-abba.jsonl");
    let j = tracer::jsonl::read_jsonl_ordered(
        std::io::BufReader::new(std::fs::File::open(&file).unwrap()),
        "lock-order-abba.jsonl",
    )
    .unwrap();
    let info = source_info("lock-order-abba.jsonl".into(), Vec::new(), &profile);
    let mut engine = Engine::new(Auditor::new(profile));
    let mut app = App::new(info, None);
    let total = j.events.len();
    for e in j.events {
        engine.push_ordered(e);
    }
    app.handle_event(AppEvent::Data(Box::new(engine.update(
        None,
        paused(total),
        true,
    ))));
    refresh(&mut app, &mut engine);
    key(&mut app, KeyCode::Enter);
    refresh(&mut app, &mut engine);
    let s = draw(&app);
    assert!(s.contains("Lock order (every task; ⟳ on a cycle)"), "{s}");
    // Each lock with the locks taken under it; both edges of the AB-BA on the cycle.
    assert!(
        s.contains("→ dev_set_lock ⟳") && s.contains("by vfio_register_emulated_iommu_dev"),
        "{s}"
    );
    assert!(s.contains("→ mdevs_lock ⟳"), "{s}");
    assert!(!s.contains("→ guests_lock ⟳"), "{s}");
    insta::assert_snapshot!(s);
}
