//! A recording of vfio_ap without the live-migration series (mainline): the series' functions
//! were absent when the agent attached. Its report finds nothing, exits 0, names the absent
//! functions once, on one line, and says no finding kind went undetected because of them.

mod common;

use common::aptrace;

#[test]
fn a_mainline_driver_reports_clean_with_the_series_absent_on_one_line() {
    let file = common::root().join("tracer/tests/scenarios/mainline-driver.jsonl");
    let out = aptrace(&["report", file.to_str().unwrap()]);
    let text = String::from_utf8(out.stdout).unwrap();
    assert_eq!(out.status.code(), Some(0), "{text}");
    let lines: Vec<&str> = text
        .lines()
        .filter(|l| l.contains("no live-migration series"))
        .collect();
    assert_eq!(lines.len(), 1, "{text}");
    assert!(
        lines[0]
            .contains("probes vfio_ap_init_migration_capabilities, vfio_ap_init_migration_data,"),
        "{}",
        lines[0]
    );
    assert!(
        lines[0].contains(", vfio_ap_set_new_guest_config missing: absent"),
        "{}",
        lines[0]
    );
    assert!(!text.contains("could not detect"), "{text}");
    assert!(text.contains("mdevs seen: 1"), "{text}");

    let out = aptrace(&["report", "--format", "json", file.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(0));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["findings"].as_array().unwrap().len(), 0);
    assert!(v["cannot_detect"].as_array().is_none_or(|a| a.is_empty()));
    assert_eq!(v["sources"][0]["probes"].as_array().unwrap().len(), 20);
}
