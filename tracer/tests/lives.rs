//! One pointer, two devices one after the other (a leak in the first life only, a migration
//! in each): every view keeps both lives apart.

mod common;

use std::process::Command;
use std::sync::mpsc;

use tracer::audit::Auditor;
use tracer::model::Event;
use tracer::profile::Profile;
use tracer::synth::{Fault, Generator};
use tracer::tui::{source_info, App, AppEvent, Engine, Playback};

/// The generator's lives 4096 and 0 share their object pointer; 4096 comes first and leaks.
fn two_lives() -> Vec<Event> {
    let mut g = Generator::new(7);
    g.migrations = 1;
    g.fault_every = 4097;
    g.faults = vec![Fault::Leak];
    assert_eq!(g.life(4096, 1), Some(Fault::Leak));
    assert_eq!(g.life(0, 1), None);
    g.into_events()
}

fn jsonl_file(dir: &tempfile::TempDir) -> String {
    let path = dir.path().join("two-lives.jsonl");
    let mut out = Vec::new();
    tracer::jsonl::write_jsonl(&mut out, &common::sample_header(), two_lives()).unwrap();
    std::fs::write(&path, out).unwrap();
    path.display().to_string()
}

fn report(file: &str, format: &str) -> String {
    let out = Command::new(env!("CARGO_BIN_EXE_aptrace"))
        .args(["report", "--format", format, file])
        .env("RUST_LOG", "warn")
        .output()
        .expect("run aptrace");
    assert_eq!(
        out.status.code(),
        Some(1),
        "a leak: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

#[test]
fn the_json_report_keeps_both_lives_and_gives_the_leak_to_the_first() {
    let dir = tempfile::tempdir().unwrap();
    let v: serde_json::Value = serde_json::from_str(&report(&jsonl_file(&dir), "json")).unwrap();
    let findings = v["findings"].as_array().unwrap();
    assert_eq!(findings.len(), 1, "{findings:#?}");
    assert_eq!(findings[0]["kind"], "leak");
    assert_eq!(findings[0]["mdev"]["incarnation"], 0);
    assert_eq!(findings[0]["mdev"]["uuid"], common::uuid_of(4096));
    let mdevs = v["sources"][0]["mdevs"].as_array().unwrap();
    assert_eq!(mdevs.len(), 2, "{mdevs:#?}");
    assert_eq!(mdevs[0]["ptr"], mdevs[1]["ptr"]);
    assert_eq!(mdevs[0]["incarnation"], 0);
    assert_eq!(mdevs[1]["incarnation"], 1);
    assert_eq!(mdevs[0]["uuid"], common::uuid_of(4096));
    assert_eq!(mdevs[1]["uuid"], common::uuid_of(0));
    assert_eq!(mdevs[0]["findings"], 1);
    assert_eq!(mdevs[1]["findings"], 0);
    assert_eq!(v["summary"]["mdevs_seen"], 2);
}

#[test]
fn text_and_markdown_group_by_life_and_show_each_lifes_migration() {
    let dir = tempfile::tempdir().unwrap();
    let file = jsonl_file(&dir);
    for format in ["text", "markdown"] {
        // Markdown escapes the underscores of state names.
        let r = report(&file, format).replace("\\_", "_");
        let first = common::uuid_of(4096);
        let second = common::uuid_of(0);
        let group = r
            .lines()
            .find(|l| l.contains("mdev ") && l.contains(&first) && !l.contains(':'))
            .unwrap_or_else(|| panic!("{format}: no group of the first life:\n{r}"));
        assert!(group.contains("life 0"), "{format}: {group}");
        assert!(
            !r.lines()
                .any(|l| l.contains(&second) && l.contains("life 0")),
            "{format}: the second device is never shown as life 0:\n{r}"
        );
        let timelines = r.split("Migration timelines").nth(1).unwrap();
        for (uuid, life) in [(&first, 0), (&second, 1)] {
            assert!(
                timelines
                    .lines()
                    .any(|l| l.contains(uuid.as_str()) && l.contains(&format!("life {life}"))),
                "{format}: no migration timeline for life {life}:\n{timelines}"
            );
        }
        assert_eq!(
            timelines.matches("STOP → STOP_COPY").count(),
            2,
            "{format}: one migration in each life:\n{timelines}"
        );
    }
}

#[test]
fn the_tui_lists_both_lives_and_zooms_into_each() {
    let events = two_lives();
    let total = events.len();
    let profile = Profile::vfio_ap();
    let info = source_info("two lives".into(), common::sample_header().probes, &profile);
    let mut engine = Engine::new(Auditor::new(profile));
    for e in events {
        engine.push_ordered(e);
    }
    let (tx, _rx) = mpsc::channel();
    let mut app = App::new(info, Some(tx));
    let paused = Playback::Replay {
        paused: true,
        speed: 1.0,
        position: total,
        total,
        seeking: false,
    };
    app.handle_event(AppEvent::Data(Box::new(engine.update(
        None,
        paused.clone(),
        true,
    ))));
    assert_eq!(app.snapshot.mdevs.len(), 2);
    let first = app.mdev_sel.expect("the first row is selected");
    assert_eq!(first.1, 0);
    // Down to the second life: a different selection, with its own detail and timeline.
    app.handle_event(AppEvent::Key(ratatui::crossterm::event::KeyEvent::from(
        ratatui::crossterm::event::KeyCode::Down,
    )));
    let second = app.mdev_sel.expect("selected");
    assert_eq!((second.0, second.1), (first.0, 1));
    let u = engine.update(app.mdev_sel, paused, true);
    let detail = u.detail.as_ref().expect("the detail of the selection");
    assert_eq!(detail.key, second);
    let second_began = u
        .snapshot
        .mdevs
        .iter()
        .find(|m| m.id.key() == second)
        .and_then(|m| m.timeline.first())
        .map(|t| t.seq)
        .expect("a timeline");
    assert!(!detail.lock_checks.is_empty());
    assert!(
        detail.lock_checks.iter().all(|c| c.seq + 10 > second_began),
        "only the second life's lock checks (its probe's entry just before init_dev): {:?}",
        detail.lock_checks
    );
    app.handle_event(AppEvent::Data(Box::new(u)));
    let (_, m) = app.selected_mdev().expect("the second life is a row");
    assert_eq!(m.id.uuid.as_deref(), Some(common::uuid_of(0).as_str()));
    assert_eq!(m.findings, 0, "the first life's leak is not the second's");
    assert!(m.timeline.iter().any(|t| t.what == "STOP → STOP_COPY"));
    let mut t = ratatui::Terminal::new(ratatui::backend::TestBackend::new(130, 40)).unwrap();
    t.draw(|f| f.render_widget(&app, f.area())).unwrap();
    let screen = t.backend().to_string();
    assert!(screen.contains(&common::uuid_of(4096)), "{screen}");
    assert!(
        screen.contains(&format!("{} life 1", common::uuid_of(0))),
        "{screen}"
    );
}

#[test]
fn the_chrome_trace_has_one_process_per_life_and_the_leak_on_the_first() {
    let doc = tracer::export::chrome::chrome_trace(&two_lives(), &Profile::vfio_ap(), "two lives");
    let evs = doc["traceEvents"].as_array().unwrap();
    let pid_named = |needle: &str| {
        evs.iter()
            .find(|e| {
                e["name"] == "process_name"
                    && e["args"]["name"]
                        .as_str()
                        .is_some_and(|n| n.contains(needle))
            })
            .and_then(|e| e["pid"].as_u64())
            .unwrap_or_else(|| panic!("no process for {needle}"))
    };
    let first = pid_named(&common::uuid_of(4096));
    let second = pid_named(&common::uuid_of(0));
    assert_ne!(first, second);
    let leaks: Vec<u64> = evs
        .iter()
        .filter(|e| e["cat"] == "finding" && e["name"] == "leak")
        .map(|e| e["pid"].as_u64().unwrap())
        .collect();
    assert_eq!(leaks, vec![first]);
}

#[test]
fn the_testbed_sample_of_two_lives_keeps_the_first_lifes_migrations() {
    // samples/clean.aptr: the model reuses the object of its first mdev for the second.
    let file = concat!(env!("CARGO_MANIFEST_DIR"), "/../samples/clean.aptr");
    let out = Command::new(env!("CARGO_BIN_EXE_aptrace"))
        .args(["report", "--format", "json", file])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let mdevs = v["sources"][0]["mdevs"].as_array().unwrap();
    let lives: Vec<(String, u64)> = mdevs
        .iter()
        .map(|m| {
            (
                m["ptr"].as_str().unwrap().to_string(),
                m["incarnation"].as_u64().unwrap(),
            )
        })
        .collect();
    assert_eq!(lives.len(), 2, "{lives:?}");
    assert_eq!(lives[0].0, lives[1].0, "one pointer");
    assert_eq!((lives[0].1, lives[1].1), (0, 1));
    for m in mdevs {
        let steps = m["timeline"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|t| t["what"].as_str().unwrap().contains('→'))
            .count();
        assert!(steps > 0, "life {} lost its migrations", m["incarnation"]);
    }
}
