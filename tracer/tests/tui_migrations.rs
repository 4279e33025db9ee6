//! The Migrations view: TestBackend snapshots of one migration's two hosts (the source's
//! recording replayed, the destination's audited as the peer, as `aptrace tui SRC DST`
//! does), the selection keys, and the view of a source with no session.

mod common;

use ratatui::backend::TestBackend;
use ratatui::crossterm::event::{KeyCode, KeyEvent};
use ratatui::Terminal;
use tracer::audit::Auditor;
use tracer::profile::Profile;
use tracer::tui::migrations::Peer;
use tracer::tui::{source_info, App, AppEvent, Engine, Playback, View};

fn scenario(name: &str) -> std::path::PathBuf {
    common::root().join("tracer/tests/scenarios").join(name)
}

/// An App that replayed `file` to its end, with `peer`'s sessions when given.
fn replayed(file: &str, peer: Option<&str>) -> App {
    let profile = Profile::vfio_ap();
    let mut info = source_info(format!("replay of {file}"), Vec::new(), &profile);
    info.peer = peer.map(|p| {
        let path = scenario(p);
        let r = tracer::offline::audit_opened(
            &path.display().to_string(),
            tracer::input::open(&path).unwrap(),
            None,
        );
        Peer {
            title: p.to_string(),
            boot_to_wall_ns: r.source.boot_to_wall_ns,
            first_ts_ns: r.summary.first_ts_ns,
            sessions: r.migrations,
        }
    });
    let mut engine = Engine::new(Auditor::new(profile));
    let events = tracer::input::load(&scenario(file)).unwrap().events;
    let total = events.len();
    for e in events {
        engine.push_ordered(e);
    }
    let mut app = App::new(info, None);
    let playback = Playback::Replay {
        paused: true,
        speed: 1.0,
        position: total,
        total,
        seeking: false,
    };
    app.handle_event(AppEvent::Data(Box::new(
        engine.update(None, playback, true),
    )));
    app
}

fn key(app: &mut App, code: KeyCode) {
    app.handle_event(AppEvent::Key(KeyEvent::from(code)));
}

fn draw(app: &App) -> String {
    let mut t = Terminal::new(TestBackend::new(130, 40)).unwrap();
    t.draw(|f| f.render_widget(app, f.area())).unwrap();
    t.backend().to_string()
}

#[test]
fn view_migrations_of_two_hosts_paired() {
    let mut app = replayed(
        "migration-source.jsonl",
        Some("migration-destination.jsonl"),
    );
    key(&mut app, KeyCode::Char('5'));
    assert_eq!(app.view, View::Migrations);
    let s = draw(&app);
    // The source's save: its states, 72 of the 72 bytes get_data_size reported, closed.
    assert!(s.contains("72 / 72 B (data-size)"), "{s}");
    assert!(s.contains("STOP_COPY"), "{s}");
    assert!(
        s.contains("paired by guest name with restore #1 in migration-destination.jsonl"),
        "{s}"
    );
    assert!(s.contains("bytes agree"), "{s}");
    insta::assert_snapshot!(s);
    // j selects the destination's restore, which names the save it pairs with.
    key(&mut app, KeyCode::Char('j'));
    assert_eq!(app.mig_sel, 1);
    let s = draw(&app);
    assert!(s.contains("restore #1 of 8e2a1c3d"), "{s}");
    assert!(
        s.contains("paired by guest name with save #1 in this"),
        "{s}"
    );
    insta::assert_snapshot!(s);
    // The selection stops at the last row.
    key(&mut app, KeyCode::Char('j'));
    assert_eq!(app.mig_sel, 1);
}

#[test]
fn one_recording_alone_shows_its_session_unpaired() {
    let mut app = replayed("migration-source.jsonl", None);
    key(&mut app, KeyCode::Tab);
    key(&mut app, KeyCode::BackTab);
    key(&mut app, KeyCode::Char('5'));
    let s = draw(&app);
    assert!(s.contains(" Migrations (1) "), "{s}");
    assert!(s.contains("not paired (aptrace tui SRC DST"), "{s}");
}

#[test]
fn a_source_without_migrations_says_so() {
    let mut app = replayed("double-free.jsonl", None);
    key(&mut app, KeyCode::Char('5'));
    key(&mut app, KeyCode::Down);
    let s = draw(&app);
    assert!(s.contains("no migration session yet"), "{s}");
}
