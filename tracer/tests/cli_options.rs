//! Command-line checks a user meets before any tracing: `--offset` names, man pages.

mod common;

use common::aptrace;

#[test]
fn an_offset_for_a_member_the_profile_does_not_read_is_refused_with_the_known_ones() {
    for cmd in ["check", "live"] {
        let out = aptrace(&[cmd, "--offset", "ap_matrix_dev.mdevs_lok=0x50"]);
        assert_eq!(out.status.code(), Some(2), "{cmd}");
        let err = String::from_utf8_lossy(&out.stderr);
        // `live` without live support may stop earlier, for that reason: the name check is
        // what `check` shows on every build.
        if cmd == "live" && err.contains("without live support") {
            continue;
        }
        assert!(
            err.contains("--offset ap_matrix_dev.mdevs_lok") && err.contains("no such"),
            "{cmd}: {err}"
        );
        for known in [
            "ap_matrix_dev.mdevs_lock",
            "ap_matrix_mdev.mig_data",
            "mutex.owner",
        ] {
            assert!(err.contains(known), "{cmd}: {err} lacks {known}");
        }
    }
    // A member the profile reads is accepted (check then runs: 0 or 2 by the host, but not
    // the name error).
    let out = aptrace(&["check", "--offset", "ap_matrix_dev.mdevs_lock=0x50"]);
    assert!(!String::from_utf8_lossy(&out.stderr).contains("no such struct member"));
}

#[test]
fn man_writes_a_page_per_subcommand_with_its_examples() {
    let dir = tempfile::tempdir().unwrap();
    let out = aptrace(&["man", dir.path().to_str().unwrap()]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    for page in [
        "aptrace",
        "aptrace-report",
        "aptrace-import",
        "aptrace-check",
    ] {
        let text = std::fs::read_to_string(dir.path().join(format!("{page}.1")))
            .unwrap_or_else(|e| panic!("{page}.1: {e}"));
        assert!(
            text.starts_with(".ie") || text.contains(".TH"),
            "{page}: {text}"
        );
    }
    let report = std::fs::read_to_string(dir.path().join("aptrace-report.1")).unwrap();
    assert!(report.contains("Examples"), "{report}");
}
