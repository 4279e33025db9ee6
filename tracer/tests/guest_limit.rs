//! `live --guest` kept in the recording (format 1.3, header field 12; JSON lines carry it in
//! the header line): a report of the recording lists that guest's devices only, export and
//! import keep the limit, and a recording without it lists every guest.

mod common;

use std::path::Path;

use serde_json::Value;
use tracer::recording::{Header, Writer};

/// One recording of both hosts' events (the destination's a second later), limited to
/// `guest` when given.
fn both_guests(path: &Path, guest: Option<&str>) {
    let dir = common::root().join("tracer/tests/scenarios");
    let mut events = tracer::input::load(&dir.join("migration-source.jsonl"))
        .unwrap()
        .events;
    let later = tracer::input::load(&dir.join("migration-destination.jsonl"))
        .unwrap()
        .events;
    let last_seq = events.last().unwrap().seq;
    events.extend(later.into_iter().map(|mut e| {
        e.ts_ns += 1_000_000_000;
        e.seq += last_seq;
        e
    }));
    let header = Header {
        guest: guest.map(String::from),
        ..common::sample_header()
    };
    let mut w = Writer::create(path, &header, true).unwrap();
    for e in &events {
        w.push(e).unwrap();
    }
    w.finish().unwrap();
}

fn report(path: &Path) -> Value {
    let out = common::aptrace(&["report", "--format", "json", path.to_str().unwrap()]);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

fn directions(v: &Value) -> Vec<String> {
    v["sources"][0]["migrations"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|s| format!("{} {}", s["direction"].as_str().unwrap(), s["guest"]["pid"]))
        .collect()
}

#[test]
fn a_recording_limited_to_one_guest_reports_its_devices_only() {
    let dir = tempfile::tempdir().unwrap();
    let all = dir.path().join("all.aptr");
    both_guests(&all, None);
    let v = report(&all);
    assert_eq!(directions(&v), vec!["save 4242", "restore 5151"]);
    assert_eq!(v["sources"][0]["mdevs"].as_array().unwrap().len(), 2);
    assert!(v["sources"][0].get("guest").is_none());
    // One recording holding both sides pairs them within itself.
    assert_eq!(v["migrations"].as_array().map(Vec::len), Some(1));

    let limited = dir.path().join("dst.aptr");
    both_guests(&limited, Some("5151"));
    let v = report(&limited);
    assert_eq!(v["sources"][0]["format_version"], "1.4");
    assert_eq!(v["sources"][0]["guest"], "5151");
    assert_eq!(directions(&v), vec!["restore 5151"]);
    let mdevs = v["sources"][0]["mdevs"].as_array().unwrap();
    assert_eq!(mdevs.len(), 1);
    assert_eq!(mdevs[0]["guest"]["pid"], 5151);
    assert!(
        v.get("migrations").is_none(),
        "nothing to pair within one side"
    );
    let text = common::aptrace(&["report", limited.to_str().unwrap()]);
    let text = String::from_utf8_lossy(&text.stdout);
    assert!(
        text.contains("limited to guest 5151 (live --guest)"),
        "{text}"
    );

    // Export and import keep the limit.
    let jsonl = dir.path().join("dst.jsonl");
    let back = dir.path().join("back.aptr");
    for args in [
        vec![
            "export",
            limited.to_str().unwrap(),
            "--format",
            "jsonl",
            "-o",
            jsonl.to_str().unwrap(),
        ],
        vec![
            "import",
            jsonl.to_str().unwrap(),
            "-o",
            back.to_str().unwrap(),
        ],
    ] {
        let out = common::aptrace(&args);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let first = std::fs::read_to_string(&jsonl).unwrap();
    let header: Value = serde_json::from_str(first.lines().next().unwrap()).unwrap();
    assert_eq!(header["guest"], "5151");
    assert_eq!(report(&back)["sources"][0]["guest"], "5151");
    assert_eq!(directions(&report(&jsonl)), vec!["restore 5151"]);
}

/// Two hosts' recordings, each limited to its own QEMU (the same `-name` on both hosts,
/// as a real migration has): the report pairs the source's save with the destination's
/// restore across the files.
#[test]
fn two_limited_recordings_pair_across_the_files() {
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("src.aptr");
    let dst = dir.path().join("dst.aptr");
    both_guests(&src, Some("4242"));
    both_guests(&dst, Some("5151"));
    let out = common::aptrace(&[
        "report",
        "--format",
        "json",
        src.to_str().unwrap(),
        dst.to_str().unwrap(),
    ]);
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    let m = v["migrations"].as_array().unwrap();
    assert_eq!(m.len(), 1, "{m:#?}");
    assert_eq!(
        (
            m[0]["save"]["source"].as_u64(),
            m[0]["restore"]["source"].as_u64()
        ),
        (Some(0), Some(1))
    );
    assert_eq!(m[0]["guest"], "vm1");
    assert_eq!(m[0]["bytes_agree"], true);
}
