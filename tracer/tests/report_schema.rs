//! The JSON report of every shipped sample and hand-written scenario validates against
//! docs/report.schema.json, and every field it holds is documented in docs/report-schema.md.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::Value;

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn inputs() -> Vec<PathBuf> {
    let mut files = Vec::new();
    for dir in ["samples", "tracer/tests/scenarios"] {
        for e in std::fs::read_dir(root().join(dir)).unwrap() {
            let p = e.unwrap().path();
            if matches!(
                p.extension().and_then(|x| x.to_str()),
                Some("aptr" | "jsonl")
            ) {
                files.push(p);
            }
        }
    }
    files.sort();
    assert!(files.len() >= 7, "samples and scenarios: {files:?}");
    files
}

fn report(file: &Path) -> Value {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_aptrace"));
    cmd.args(["report", "--format", "json"]);
    let out = cmd.arg(file).output().unwrap();
    assert!(
        matches!(out.status.code(), Some(0 | 1 | 3)),
        "{}: {}",
        file.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

fn keys(v: &Value, out: &mut BTreeSet<String>) {
    match v {
        Value::Object(m) => {
            for (k, x) in m {
                // Kind names are values used as keys, not fields.
                if !k.contains('-') {
                    out.insert(k.clone());
                }
                keys(x, out);
            }
        }
        Value::Array(a) => a.iter().for_each(|x| keys(x, out)),
        _ => {}
    }
}

#[test]
fn every_report_validates_against_the_shipped_json_schema() {
    let schema: Value = serde_json::from_str(
        &std::fs::read_to_string(root().join("docs/report.schema.json")).unwrap(),
    )
    .unwrap();
    let validator = jsonschema::validator_for(&schema).expect("the schema compiles");
    for file in inputs() {
        let v = report(&file);
        let errors: Vec<String> = validator
            .iter_errors(&v)
            .map(|e| format!("{} at {}", e, e.instance_path()))
            .collect();
        assert!(errors.is_empty(), "{}: {errors:#?}", file.display());
    }
}

#[test]
fn the_schema_refuses_what_a_parser_using_doubles_would_round() {
    let schema: Value = serde_json::from_str(
        &std::fs::read_to_string(root().join("docs/report.schema.json")).unwrap(),
    )
    .unwrap();
    let validator = jsonschema::validator_for(&schema).unwrap();
    let mut v = report(&root().join("samples/leak.aptr"));
    assert!(v["sources"][0]["boot_to_wall_ns"].is_string());
    v["sources"][0]["boot_to_wall_ns"] = serde_json::json!(1_764_000_000_000_000_000i64);
    assert!(!validator.is_valid(&v), "a 64-bit number must be refused");
}

#[test]
fn every_field_of_the_report_is_documented() {
    let doc = std::fs::read_to_string(root().join("docs/report-schema.md")).unwrap();
    let mut seen = BTreeSet::new();
    for file in inputs() {
        keys(&report(&file), &mut seen);
    }
    let missing: Vec<&String> = seen
        .iter()
        .filter(|k| !doc.contains(&format!("`{k}`")) && !doc.contains(&format!("\"{k}\"")))
        .collect();
    assert!(missing.is_empty(), "undocumented fields: {missing:?}");
}

/// The report of the two hosts of one migration (two sources) holds the paired migration
/// and both sessions, and validates.
#[test]
fn a_two_host_report_pairs_the_migration_and_validates() {
    let schema: Value = serde_json::from_str(
        &std::fs::read_to_string(root().join("docs/report.schema.json")).unwrap(),
    )
    .unwrap();
    let validator = jsonschema::validator_for(&schema).expect("the schema compiles");
    let dir = root().join("tracer/tests/scenarios");
    let out = Command::new(env!("CARGO_BIN_EXE_aptrace"))
        .args(["report", "--format", "json"])
        .arg(dir.join("migration-source.jsonl"))
        .arg(dir.join("migration-destination.jsonl"))
        .output()
        .unwrap();
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    let errors: Vec<String> = validator
        .iter_errors(&v)
        .map(|e| format!("{} at {}", e, e.instance_path()))
        .collect();
    assert!(errors.is_empty(), "{errors:#?}");
    let m = &v["migrations"];
    assert_eq!(m.as_array().map(Vec::len), Some(1), "{m:#}");
    assert_eq!(m[0]["guest"], "vm1");
    assert_eq!(m[0]["matched_by"], "guest-name");
    assert_eq!(
        (
            m[0]["save"]["source"].as_u64(),
            m[0]["restore"]["source"].as_u64()
        ),
        (Some(0), Some(1))
    );
    assert_eq!(m[0]["bytes_agree"], true);
    assert_eq!(v["sources"][0]["migrations"][0]["size_from"], "data-size");
    assert_eq!(v["sources"][1]["migrations"][0]["end"], "running");
}
