//! A degraded source on screen: the header says which finding kinds cannot be detected, and
//! the probes view says, probe by probe, why. A source without degraded probes shows neither.

mod common;

use ratatui::backend::TestBackend;
use ratatui::crossterm::event::{KeyCode, KeyEvent};
use ratatui::Terminal;
use tracer::live::resolve::degradation;
use tracer::profile::Profile;
use tracer::recording::{ProbeState, ProbeStatus};
use tracer::tui::engine::Update;
use tracer::tui::{source_info, App, AppEvent, Playback, View};

/// The sample's probes as a run without BTF and without `--offset` attaches them: the probe
/// that reads mig_data and the two that check mdevs_lock are degraded, for the reasons the
/// agent gives.
fn degraded_probes() -> Vec<ProbeStatus> {
    let profile = Profile::vfio_ap();
    let mut probes = common::sample_header().probes;
    for p in &mut probes {
        let Some(spec) = profile.functions.iter().find(|f| f.name == p.name) else {
            continue;
        };
        let field = (spec.name == "vfio_ap_init_migration_data")
            .then_some("offset of ap_matrix_mdev.mig_data unknown: module vfio_ap has no BTF");
        if let Some(why) = degradation(spec, field, true) {
            p.state = ProbeState::Degraded;
            p.detail = why;
        }
    }
    probes
}

fn app(probes: Vec<ProbeStatus>) -> App {
    let mut app = App::new(
        source_info("replay of blind.aptr".into(), probes, &Profile::vfio_ap()),
        None,
    );
    app.handle_event(AppEvent::Data(Box::new(Update {
        playback: Playback::Replay {
            paused: true,
            speed: 1.0,
            position: 0,
            total: 0,
            seeking: false,
        },
        rate: vec![0],
        lost_rate: vec![0],
        ..Update::default()
    })));
    app
}

fn draw(app: &App) -> String {
    let mut t = Terminal::new(TestBackend::new(130, 40)).unwrap();
    t.draw(|f| f.render_widget(app, f.area())).unwrap();
    t.backend().to_string()
}

fn to_probes(app: &mut App) {
    app.handle_event(AppEvent::Key(KeyEvent::from(KeyCode::Char('4'))));
    assert_eq!(app.view, View::Probes);
}

#[test]
fn a_degraded_source_says_what_it_cannot_detect_under_the_header_in_every_view() {
    let probes = degraded_probes();
    let n = probes
        .iter()
        .filter(|p| p.state == ProbeState::Degraded)
        .count();
    assert!(n >= 2, "the fixture degrades several probes: {probes:?}");
    let mut app = app(probes);
    let mdevs = draw(&app);
    let second = mdevs.lines().nth(1).unwrap();
    assert!(second.contains(" degraded "), "{mdevs}");
    assert!(
        second.contains(
            "cannot detect: leak, overwrite-leak, lock-not-held, self-deadlock, error-path-leak"
        ),
        "{mdevs}"
    );
    assert!(
        second.contains(&format!("({n} probes; 4 Probes says why)")),
        "{mdevs}"
    );
    // The tabs moved down a line, nothing else was lost.
    assert!(mdevs.lines().nth(2).unwrap().contains("1 Mdevs"), "{mdevs}");
    to_probes(&mut app);
    assert!(draw(&app).lines().nth(1).unwrap().contains(" degraded "));
}

#[test]
fn the_probes_view_lists_each_degraded_probe_with_what_it_cannot_detect_and_why() {
    let mut app = app(degraded_probes());
    to_probes(&mut app);
    let screen = draw(&app);
    // The panel's text with its rows joined, as a reader reads wrapped lines.
    let panel: Vec<String> = screen
        .lines()
        .skip_while(|l| !l.contains("Degraded: attached, but these findings cannot be detected"))
        .skip(1)
        .take_while(|l| l.starts_with("\"│"))
        .map(|l| l.trim_matches('"').trim_matches('│').trim_end().to_string())
        .collect();
    assert!(!panel.is_empty(), "{screen}");
    let panel = panel.join(" ");
    // One line a reason, naming the probes it applies to: the missing offset in the probe
    // that reads it, the lock checks in every probe with a lock contract.
    let field = panel
        .find("ap_matrix_mdev.mig_data not read (offset of ap_matrix_mdev.mig_data unknown")
        .unwrap_or_else(|| panic!("{panel}"));
    assert!(
        panel[field..].contains("cannot detect leak, overwrite-leak, error-path-leak"),
        "{panel}"
    );
    let lock = panel
        .find("mdevs_lock not checked (lock checks off): cannot detect self-deadlock · in ")
        .unwrap_or_else(|| panic!("{panel}"));
    assert!(
        panel[lock..].contains("vfio_ap_mdev_release_dev"),
        "{panel}"
    );
    assert_eq!(
        panel.matches("cannot detect self-deadlock").count(),
        1,
        "said once: {panel}"
    );
    // The table still shows the state of each probe.
    assert!(screen.contains("degraded"), "{screen}");
    insta::assert_snapshot!(screen);
}

#[test]
fn a_source_without_degraded_probes_shows_neither_line_nor_panel() {
    let mut app = app(common::sample_header().probes);
    let mdevs = draw(&app);
    assert!(mdevs.lines().nth(1).unwrap().contains("1 Mdevs"), "{mdevs}");
    to_probes(&mut app);
    let probes = draw(&app);
    assert!(!probes.contains("cannot detect"), "{probes}");
    assert!(!probes.contains("Degraded:"), "{probes}");
}

/// `live --tui`: the agent tells its pipeline which probes attached; the screen's sink passes
/// that to the App, whose header then says what the run cannot detect.
#[test]
fn live_the_screen_learns_the_probes_from_the_agents_pipeline() {
    use tracer::audit::Auditor;
    use tracer::live::cancel::Cancel;
    use tracer::pipeline::Pipeline;
    use tracer::tui::live::screen_sinks;

    let profile = Profile::vfio_ap();
    let (tx, rx) = std::sync::mpsc::channel();
    let (_ctl_tx, ctl_rx) = std::sync::mpsc::channel();
    let mut pipeline = Pipeline::new(Auditor::new(profile.clone()), None);
    for s in screen_sinks(&profile, tx, ctl_rx, Cancel::new()) {
        pipeline.add_sink(s);
    }
    // Before the module is attached the App knows no probe.
    let mut app = app(Vec::new());
    assert!(!draw(&app).contains("cannot detect"));
    pipeline.probes_attached(&degraded_probes());
    let ev = rx
        .try_iter()
        .find(|e| matches!(e, AppEvent::Probes(_)))
        .expect("the screen sink passes the probes on");
    app.handle_event(ev);
    let screen = draw(&app);
    assert!(
        screen
            .lines()
            .nth(1)
            .unwrap()
            .contains("cannot detect: leak"),
        "{screen}"
    );
    to_probes(&mut app);
    let probes = draw(&app);
    let row = probes
        .lines()
        .find(|l| l.contains("│vfio_ap_init_migration_data "))
        .unwrap_or_else(|| panic!("{probes}"));
    assert!(row.contains(" degraded "), "{row}");
}
