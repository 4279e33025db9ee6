//! `aptrace export --format chrome-trace`: the output parses as Trace Event Format JSON with a
//! sound structure (required fields, matched B/E, time order per track), one process per
//! mdev, and the leak as an instant event on the leaking mdev's track.

mod common;

use std::collections::HashMap;
use std::process::Command;

use serde_json::Value;

fn validate(doc: &Value) -> Vec<&Value> {
    let evs = doc["traceEvents"].as_array().expect("traceEvents array");
    let mut stacks: HashMap<(u64, u64), Vec<String>> = HashMap::new();
    let mut last_ts: HashMap<(u64, u64), f64> = HashMap::new();
    for e in evs {
        let ph = e["ph"].as_str().expect("ph");
        assert!(e["name"].is_string(), "no name: {e}");
        let pid = e["pid"].as_u64().expect("pid");
        let tid = e["tid"].as_u64().expect("tid");
        if ph == "M" {
            assert!(e["args"].is_object(), "{e}");
            continue;
        }
        let ts = e["ts"].as_f64().expect("ts");
        assert!(ts >= 0.0);
        let key = (pid, tid);
        let prev = last_ts.insert(key, ts).unwrap_or(0.0);
        assert!(ts >= prev, "ts goes back on track {key:?}: {prev} then {e}");
        let name = e["name"].as_str().unwrap().to_string();
        match ph {
            "B" => stacks.entry(key).or_default().push(name),
            "E" => {
                let open = stacks.entry(key).or_default().pop();
                assert_eq!(open.as_deref(), Some(name.as_str()), "E without its B: {e}");
            }
            "X" => assert!(e["dur"].as_f64().expect("dur") >= 0.0),
            "i" => assert!(matches!(e["s"].as_str(), Some("t" | "p" | "g")), "{e}"),
            other => panic!("unexpected phase {other}: {e}"),
        }
    }
    for (k, s) in &stacks {
        assert!(s.is_empty(), "unclosed spans on {k:?}: {s:?}");
    }
    evs.iter().collect()
}

#[test]
fn chrome_trace_export_is_valid_and_shows_the_leak() {
    let dir = tempfile::tempdir().unwrap();
    let rec = dir.path().join("leak.aptr");
    common::write_recording(&rec, &common::leak_events());
    let out = dir.path().join("trace.json");
    let st = Command::new(env!("CARGO_BIN_EXE_aptrace"))
        .args(["export", "--format", "chrome-trace", "-o"])
        .arg(&out)
        .arg(&rec)
        .status()
        .unwrap();
    assert!(st.success());
    let doc: Value = serde_json::from_slice(&std::fs::read(&out).unwrap()).unwrap();
    let evs = validate(&doc);

    // One process per mdev, named by metadata, with its threads named.
    let uuid = common::uuid_of(common::LEAKING_LIFE);
    let names: Vec<(u64, String)> = evs
        .iter()
        .filter(|e| e["ph"] == "M" && e["name"] == "process_name")
        .map(|e| {
            (
                e["pid"].as_u64().unwrap(),
                e["args"]["name"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    assert_eq!(
        names.iter().filter(|(_, n)| n.starts_with("mdev ")).count(),
        6,
        "{names:?}"
    );
    let leak_pid = names
        .iter()
        .find(|(_, n)| n.contains(&uuid))
        .expect("the leaking mdev's track")
        .0;
    assert!(names
        .iter()
        .any(|(_, n)| n.contains(&uuid) && n.contains("guest 2003")));
    let thread_names: Vec<&str> = evs
        .iter()
        .filter(|e| e["name"] == "thread_name" && e["pid"] == leak_pid)
        .map(|e| e["args"]["name"].as_str().unwrap())
        .collect();
    assert_eq!(thread_names, ["lifecycle", "migration state", "calls"]);

    // Lifecycle phases and migration states as spans on that track.
    let spans = |tid: u64| -> Vec<&str> {
        evs.iter()
            .filter(|e| e["pid"] == leak_pid && e["tid"] == tid && e["ph"] == "B")
            .map(|e| e["name"].as_str().unwrap())
            .collect()
    };
    assert_eq!(
        spans(1),
        ["probing", "registered", "open", "closed", "removed"]
    );
    let mig = spans(2);
    assert_eq!(mig.first(), Some(&"RUNNING"));
    assert!(mig.contains(&"STOP_COPY"), "{mig:?}");
    assert!(evs.iter().any(|e| e["pid"] == leak_pid
        && e["ph"] == "X"
        && e["name"] == "vfio_ap_mdev_open_device"));

    // The finding: an instant event on the leaking mdev, with its evidence.
    let leaks: Vec<&&Value> = evs
        .iter()
        .filter(|e| e["ph"] == "i" && e["name"] == "leak")
        .collect();
    assert_eq!(leaks.len(), 1);
    assert_eq!(leaks[0]["pid"], leak_pid);
    assert_eq!(leaks[0]["args"]["severity"], "error");
    assert_eq!(leaks[0]["args"]["function"], "vfio_ap_init_migration_data");
    assert!(!leaks[0]["args"]["events"].as_array().unwrap().is_empty());
    assert_eq!(doc["displayTimeUnit"], "ns");
}

#[test]
fn spans_still_open_at_the_end_are_closed() {
    // A recording cut in the middle of a life: every B still gets its E.
    let mut events = common::leak_events();
    events.truncate(events.len() / 2 + 7);
    let doc =
        tracer::export::chrome::chrome_trace(&events, &tracer::profile::Profile::vfio_ap(), "cut");
    let evs = validate(&doc);
    assert!(evs
        .iter()
        .any(|e| e["ph"] == "E" && e["args"]["open_at_end_of_recording"] == true));
}
