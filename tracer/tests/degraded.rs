//! A run whose probes attached degraded says so in every report made from it: which finding
//! kinds it could not detect and why, on the first lines when nothing was found.

mod common;

use common::aptrace;

use std::path::{Path, PathBuf};

fn scenario() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/scenarios/degraded-clean.jsonl")
}

fn report(file: &Path, format: &str) -> (i32, String) {
    let out = aptrace(&["report", "--format", format, file.to_str().unwrap()]);
    (
        out.status.code().unwrap(),
        String::from_utf8(out.stdout).unwrap(),
    )
}

const BLIND: &str =
    "leak, overwrite-leak, double-free, lock-not-held, self-deadlock, error-path-leak";

fn assert_says_it_first(file: &Path) {
    for format in ["text", "markdown"] {
        let (code, text) = report(file, format);
        assert_eq!(
            code, 0,
            "{format}: degraded is not incomplete; nothing was found"
        );
        let head: String = text.lines().take(5).collect::<Vec<_>>().join("\n");
        assert!(
            head.contains(&format!("could not detect: {BLIND} (3 probe(s) degraded")),
            "{format}: {head}"
        );
        assert!(
            head.contains("no finding does not mean none of these happened"),
            "{format}: {head}"
        );
        // And why, probe by probe, under the source.
        let line = "vfio_ap_mdev_release_dev degraded: mdevs_lock not checked";
        let line = if format == "markdown" {
            line.replace('_', "\\_")
        } else {
            line.to_string()
        };
        assert!(text.contains(&line), "{format}: {text}");
    }
    let (_, json) = report(file, "json");
    let v: serde_json::Value = serde_json::from_str(&json).unwrap();
    let blind: Vec<&str> = v["cannot_detect"]
        .as_array()
        .unwrap()
        .iter()
        .map(|k| k.as_str().unwrap())
        .collect();
    assert_eq!(blind.join(", "), BLIND);
    let per_probe = v["sources"][0]["cannot_detect"].as_array().unwrap();
    assert_eq!(per_probe.len(), 3);
    let init = per_probe
        .iter()
        .find(|u| u["probe"] == "vfio_ap_init_migration_data")
        .unwrap();
    assert_eq!(
        init["kinds"],
        serde_json::json!(["leak", "overwrite-leak", "lock-not-held", "error-path-leak"])
    );
    assert!(init["why"].as_str().unwrap().contains("has no BTF"));
    assert_eq!(v["sources"][0]["probes"][0]["state"], "degraded");
}

#[test]
fn a_clean_report_from_degraded_probes_says_what_it_could_not_see_on_its_first_lines() {
    assert_says_it_first(&scenario());
}

#[test]
fn the_recording_of_a_degraded_run_says_it_too() {
    // import writes the header's degraded probes into the recording (format 1.2).
    let dir = tempfile::tempdir().unwrap();
    let rec = dir.path().join("degraded.aptr");
    let out = aptrace(&[
        "import",
        scenario().to_str().unwrap(),
        "-o",
        rec.to_str().unwrap(),
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_says_it_first(&rec);
}

#[test]
fn a_report_without_degraded_probes_says_nothing_of_it() {
    let sample = Path::new(env!("CARGO_MANIFEST_DIR")).join("../samples/clean.aptr");
    let (code, text) = report(&sample, "text");
    assert_eq!(code, 0);
    assert!(!text.contains("could not detect"), "{text}");
    let (_, json) = report(&sample, "json");
    assert!(!json.contains("cannot_detect"));
}
