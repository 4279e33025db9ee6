//! What a user builds on when moving events between formats: JSON lines in arrival order
//! report as the ordered file does, and export → import keeps what a recording says about
//! itself (damage, a missing end marker, every loss counted once).

mod common;

use common::{aptrace, root};

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

fn ok(out: Output) -> Output {
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

fn json_report(file: &Path) -> (i32, serde_json::Value) {
    let out = aptrace(&["report", "--format", "json", s(file)]);
    let v: serde_json::Value = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(&out.stderr)));
    (out.status.code().unwrap(), v)
}

fn export(from: &Path, to: &Path) {
    ok(aptrace(&[
        "export",
        s(from),
        "--format",
        "jsonl",
        "-o",
        s(to),
    ]));
}

fn import(from: &Path, to: &Path) {
    ok(aptrace(&["import", s(from), "-o", s(to)]));
}

/// Findings as a user compares them between two reports of the same events: kind, device,
/// certainty and message.
fn findings(v: &serde_json::Value) -> Vec<String> {
    v["findings"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| {
            format!(
                "{} {} {} {}",
                f["kind"], f["mdev"], f["uncertain"], f["message"]
            )
        })
        .collect()
}

/// Whole findings (sequence numbers included), without the path of the source they cite.
fn whole_findings(v: &serde_json::Value) -> String {
    let mut f = v["findings"].clone();
    for x in f.as_array_mut().unwrap() {
        x.as_object_mut().unwrap().remove("source");
    }
    serde_json::to_string_pretty(&f).unwrap()
}

/// Tiny deterministic generator: the test must not depend on the code under test.
struct Lcg(u64);
impl Lcg {
    fn below(&mut self, n: u64) -> u64 {
        self.0 = self
            .0
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        (self.0 >> 33) % n
    }
}

/// `text` (a header line, then events) as another tool writing in arrival order would leave
/// it: each event moved by up to 12 places (a few µs: far inside the 50 ms window), without
/// its seq.
fn arrival_order(text: &str) -> String {
    let mut lines: Vec<&str> = text.lines().collect();
    let mut rng = Lcg(42);
    for i in 1..lines.len() {
        let j = (i + rng.below(13) as usize).min(lines.len() - 1);
        lines.swap(i, j);
    }
    lines
        .iter()
        .map(|l| {
            let mut v: serde_json::Value = serde_json::from_str(l).unwrap();
            v.as_object_mut().unwrap().remove("seq");
            format!("{v}\n")
        })
        .collect()
}

#[test]
fn a_jsonl_in_arrival_order_and_its_import_report_as_the_ordered_file() {
    let dir = tempfile::tempdir().unwrap();
    let ordered = dir.path().join("ordered.jsonl");
    export(&root().join("samples/synthetic-mixed.aptr"), &ordered);
    let text = std::fs::read_to_string(&ordered).unwrap();
    let shuffled_text = arrival_order(&text);
    assert_ne!(shuffled_text, text);
    let shuffled = dir.path().join("shuffled.jsonl");
    std::fs::write(&shuffled, shuffled_text).unwrap();
    let imported = dir.path().join("shuffled.aptr");
    import(&shuffled, &imported);

    let (code, want) = json_report(&ordered);
    assert_eq!(code, 1);
    assert!(!findings(&want).is_empty());
    for f in [&shuffled, &imported] {
        let (c, got) = json_report(f);
        assert_eq!(c, code, "{}", f.display());
        // Whole findings, sequence numbers included: the order and numbering are the same.
        assert!(
            whole_findings(&got) == whole_findings(&want),
            "{}: findings differ",
            f.display()
        );
        assert_eq!(got["complete"], true, "{}", f.display());
    }
}

#[test]
fn gaps_in_a_jsonl_files_seq_are_not_losses() {
    let dir = tempfile::tempdir().unwrap();
    let src = root().join("tracer/tests/scenarios/double-free.jsonl");
    let gappy: String = std::fs::read_to_string(&src)
        .unwrap()
        .lines()
        .enumerate()
        .map(|(i, l)| {
            if l.starts_with('{') {
                let mut v: serde_json::Value = serde_json::from_str(l).unwrap();
                v["seq"] = (100 + 10 * i as u64).into();
                format!("{v}\n")
            } else {
                format!("{l}\n")
            }
        })
        .collect();
    let f = dir.path().join("gappy.jsonl");
    std::fs::write(&f, gappy).unwrap();
    let (code, v) = json_report(&f);
    let (want_code, want) = json_report(&src);
    assert_eq!(code, want_code);
    assert_eq!(v["complete"], true);
    assert_eq!(v["sources"][0]["summary"]["lost_events"], 0);
    assert!(whole_findings(&v) == whole_findings(&want));
}

#[test]
fn disorder_beyond_the_window_is_refused_naming_the_file_and_line() {
    let dir = tempfile::tempdir().unwrap();
    let f = dir.path().join("late.jsonl");
    std::fs::write(
        &f,
        concat!(
            r#"{"type":"guest-name","ts_ns":"1000","pid":0,"guest_pid":5,"name":"a"}"#,
            "\n",
            r#"{"type":"guest-name","ts_ns":"9000000000","pid":0,"guest_pid":5,"name":"b"}"#,
            "\n",
            r#"{"type":"guest-name","ts_ns":"10","pid":0,"guest_pid":5,"name":"c"}"#,
            "\n"
        ),
    )
    .unwrap();
    for args in [
        vec!["report", s(&f)],
        vec!["import", s(&f), "-o", "/nonexistent/never.aptr"],
    ] {
        let out = aptrace(&args);
        assert_eq!(out.status.code(), Some(2), "{args:?}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains("late.jsonl:3"), "{args:?}: {err}");
        assert!(err.contains("reorder window"), "{err}");
    }
}

/// A finished recording of the current format in chunks of 50 events (the samples are 1.0,
/// without end marker, and an import writes one chunk for so few events).
fn finished_recording(dir: &Path) -> PathBuf {
    let loaded = tracer::input::load(&root().join("samples/synthetic-mixed.aptr")).unwrap();
    let rec = dir.join("base.aptr");
    let mut w = tracer::recording::Writer::create(&rec, &loaded.header, false).unwrap();
    for (i, e) in loaded.events.iter().enumerate() {
        w.push(e).unwrap();
        if i % 50 == 49 {
            w.flush_chunk().unwrap();
        }
    }
    w.finish().unwrap();
    let (code, v) = json_report(&rec);
    assert_eq!((code, &v["complete"]), (1, &serde_json::json!(true)));
    rec
}

/// `data` with its end marker (the last chunk: 20 bytes of framing, 24 of payload) cut off.
fn without_end_marker(data: &[u8]) -> Vec<u8> {
    data[..data.len() - 44].to_vec()
}

/// `data` with one byte flipped in the middle (a damaged chunk).
fn with_damage(data: &[u8]) -> Vec<u8> {
    let mut d = data.to_vec();
    let mid = d.len() / 2;
    d[mid] ^= 0x55;
    d
}

fn damage_without_offsets(v: &serde_json::Value) -> Vec<(String, u64)> {
    v["sources"][0]["damage"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| {
            (
                d["reason"].as_str().unwrap().to_string(),
                d["bytes"].as_u64().unwrap(),
            )
        })
        .collect()
}

#[test]
fn export_then_import_keeps_damage_a_missing_end_marker_and_every_loss_once() {
    let dir = tempfile::tempdir().unwrap();
    let whole = std::fs::read(finished_recording(dir.path())).unwrap();
    for (name, data) in [
        ("unfinished", without_end_marker(&whole)),
        ("damaged", with_damage(&whole)),
        ("both", without_end_marker(&with_damage(&whole))),
    ] {
        let orig = dir.path().join(format!("{name}.aptr"));
        std::fs::write(&orig, data).unwrap();
        let jl = dir.path().join(format!("{name}.jsonl"));
        export(&orig, &jl);
        let copy = dir.path().join(format!("{name}-copy.aptr"));
        import(&jl, &copy);

        let (code, want) = json_report(&orig);
        assert_eq!(want["complete"], false, "{name}");
        let reasons = format!("{:?}", damage_without_offsets(&want));
        assert_eq!(
            reasons.contains("no end marker"),
            name != "damaged",
            "{name}: {reasons}"
        );
        assert_ne!(code, 0, "{name}");
        let lost = want["sources"][0]["summary"]["lost_events"]
            .as_u64()
            .unwrap();
        assert_eq!(lost > 0, name != "unfinished", "{name}: {lost} lost");
        for f in [&jl, &copy] {
            let (c, got) = json_report(f);
            let what = format!("{name}: {}", f.display());
            assert_eq!(c, code, "{what}");
            assert_eq!(got["complete"], false, "{what}");
            assert_eq!(
                got["sources"][0]["summary"]["lost_events"],
                want["sources"][0]["summary"]["lost_events"],
                "{what}: every loss, once"
            );
            assert_eq!(
                damage_without_offsets(&got),
                damage_without_offsets(&want),
                "{what}"
            );
            assert_eq!(findings(&got), findings(&want), "{what}");
        }
        // Exporting the copy gives the first export back, but for sequence numbers: the
        // import numbers events consecutively (the gap a damaged region left is the `lost`
        // event that stands for it).
        let again = dir.path().join(format!("{name}-again.jsonl"));
        export(&copy, &again);
        assert!(
            without_seq(&again) == without_seq(&jl),
            "{name}: the second export differs from the first"
        );
    }
}

fn without_seq(p: &Path) -> Vec<serde_json::Value> {
    std::fs::read_to_string(p)
        .unwrap()
        .lines()
        .map(|l| {
            let mut v: serde_json::Value = serde_json::from_str(l).unwrap();
            v.as_object_mut().unwrap().remove("seq");
            v
        })
        .collect()
}

#[test]
fn import_writes_an_end_marker_only_when_the_source_had_one() {
    let dir = tempfile::tempdir().unwrap();
    let whole = finished_recording(dir.path());
    let cut = dir.path().join("cut.aptr");
    std::fs::write(&cut, without_end_marker(&std::fs::read(&whole).unwrap())).unwrap();
    for (src, marked) in [(whole, true), (cut, false)] {
        let jl = dir.path().join("x.jsonl");
        let copy = dir.path().join("x.aptr");
        let _ = std::fs::remove_file(&jl);
        let _ = std::fs::remove_file(&copy);
        export(&src, &jl);
        import(&jl, &copy);
        let data = std::fs::read(&copy).unwrap();
        let tail = &data[data.len() - 28..data.len() - 4];
        assert_eq!(
            &tail[..8] == b"APTR-END",
            marked,
            "{}: end marker",
            src.display()
        );
    }
}

#[test]
fn a_jsonl_written_before_the_source_line_reads_as_complete() {
    // The hand-written scenarios predate the source line.
    let (code, v) = json_report(&root().join("tracer/tests/scenarios/unknown-free.jsonl"));
    assert_eq!(code, 1);
    assert_eq!(v["complete"], true);
}

#[test]
fn the_readme_says_on_its_first_screen_where_the_samples_come_from() {
    let readme = std::fs::read_to_string(root().join("README.md")).unwrap();
    let first: String = readme.lines().take(40).collect::<Vec<_>>().join(" ");
    let first = first.split_whitespace().collect::<Vec<_>>().join(" ");
    assert!(first.contains("not from real IBM Z hardware"), "{first}");
    assert!(first.contains("model of the vfio_ap driver"), "{first}");
    assert!(first.contains("Debian's s390x"), "{first}");
}

/// `report -`: JSON lines in arrival order on standard input are ordered as a file is.
#[test]
fn report_dash_orders_json_lines_in_arrival_order_as_a_file() {
    use std::io::Write;
    use std::process::Stdio;
    let dir = tempfile::tempdir().unwrap();
    let ordered = dir.path().join("ordered.jsonl");
    export(&root().join("samples/synthetic-mixed.aptr"), &ordered);
    let shuffled = arrival_order(&std::fs::read_to_string(&ordered).unwrap());
    let mut child = Command::new(env!("CARGO_BIN_EXE_aptrace"))
        .args(["report", "--format", "json", "-"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(shuffled.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    let got: serde_json::Value = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(&out.stderr)));
    let (code, want) = json_report(&ordered);
    assert_eq!(out.status.code(), Some(code));
    assert!(!findings(&want).is_empty());
    assert!(
        whole_findings(&got) == whole_findings(&want),
        "findings differ"
    );
    assert_eq!(got["complete"], true);
}

/// `tui` and `replay` load JSON lines through the same window: the events they play are the
/// ordered file's, numbered alike.
#[test]
fn tui_and_replay_load_json_lines_in_arrival_order_as_the_ordered_file() {
    let dir = tempfile::tempdir().unwrap();
    let ordered = dir.path().join("ordered.jsonl");
    export(&root().join("samples/synthetic-mixed.aptr"), &ordered);
    let shuffled = dir.path().join("shuffled.jsonl");
    std::fs::write(
        &shuffled,
        arrival_order(&std::fs::read_to_string(&ordered).unwrap()),
    )
    .unwrap();
    let want = tracer::input::load(&ordered).unwrap().events;
    let got = tracer::input::load(&shuffled).unwrap().events;
    assert!(want.len() > 100);
    assert!(got == want, "the loaded events differ");
}

/// A source that lost only its end marker, nothing found: exit status 3 from its JSON lines
/// and from their import, which has no end marker either.
#[test]
fn a_clean_source_without_end_marker_exits_3_after_export_and_import() {
    let dir = tempfile::tempdir().unwrap();
    let loaded = tracer::input::load(&root().join("samples/synthetic-clean.aptr")).unwrap();
    let whole = dir.path().join("clean.aptr");
    let mut w = tracer::recording::Writer::create(&whole, &loaded.header, false).unwrap();
    for e in &loaded.events {
        w.push(e).unwrap();
    }
    w.finish().unwrap();
    assert_eq!(json_report(&whole).0, 0);
    let cut = dir.path().join("cut.aptr");
    std::fs::write(&cut, without_end_marker(&std::fs::read(&whole).unwrap())).unwrap();
    let jl = dir.path().join("cut.jsonl");
    export(&cut, &jl);
    let copy = dir.path().join("cut-copy.aptr");
    import(&jl, &copy);
    for f in [&cut, &jl, &copy] {
        let (code, v) = json_report(f);
        assert_eq!(code, 3, "{}", f.display());
        assert_eq!(v["complete"], false, "{}", f.display());
        assert!(
            findings(&v).is_empty(),
            "{}: {:?}",
            f.display(),
            findings(&v)
        );
    }
}
