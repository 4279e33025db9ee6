//! The `aptrace` binary as a user runs it: exit codes, reports, damaged files, file safety.

mod common;

use common::{aptrace, root};

use std::process::Command;

fn path(rel: &str) -> String {
    root().join(rel).display().to_string()
}

fn json_report(file: &str) -> (i32, serde_json::Value) {
    let out = aptrace(&["report", "--format", "json", file]);
    let v: serde_json::Value = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(&out.stderr)));
    (out.status.code().unwrap(), v)
}

fn kinds(v: &serde_json::Value) -> Vec<String> {
    let mut k: Vec<String> = v["findings"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["kind"].as_str().unwrap().to_string())
        .collect();
    k.sort();
    k
}

#[test]
fn hand_written_scenarios_yield_exactly_their_finding() {
    for (file, kind) in [
        ("double-free", "double-free"),
        ("unknown-free", "unknown-free"),
        ("self-deadlock", "self-deadlock"),
    ] {
        let (code, v) = json_report(&path(&format!("tracer/tests/scenarios/{file}.jsonl")));
        assert_eq!(kinds(&v), vec![kind.to_string()], "{file}");
        assert_eq!(code, 1, "{file}: findings → exit 1");
        let f = &v["findings"][0];
        for key in [
            "kind",
            "severity",
            "uncertain",
            "mdev",
            "function",
            "message",
            "events",
        ] {
            assert!(!f[key].is_null(), "{file}: finding lacks {key}");
        }
        assert!(
            f["mdev"]["ptr"].as_str().unwrap().starts_with("0x"),
            "pointers are strings"
        );
        assert!(f["ts_ns"].is_string(), "nanoseconds are strings");
    }
}

/// The series' migration files and configuration buffers (hand-written from the model's
/// runs): each planted bug gives exactly its finding, with its function and a stack or
/// evidence; the clean migration none.
#[test]
fn series_object_scenarios_yield_exactly_their_findings() {
    for (file, kind, function) in [
        ("series-clean-migration", None, ""),
        (
            "file-after-release",
            Some("file-after-release"),
            "vfio_ap_stop_copy_read",
        ),
        (
            "buffer-held-at-close",
            Some("buffer-held-at-close"),
            "vfio_ap_get_config",
        ),
        (
            "partial-resume-double-free",
            Some("double-free"),
            "vfio_ap_release_resuming_file",
        ),
        ("partial-resume-leak", Some("leak"), "allocate_ap_config"),
    ] {
        let (code, v) = json_report(&path(&format!("tracer/tests/scenarios/{file}.jsonl")));
        let want: Vec<String> = kind.iter().map(|k| k.to_string()).collect();
        assert_eq!(kinds(&v), want, "{file}");
        assert_eq!(code, if kind.is_some() { 1 } else { 0 }, "{file}");
        if kind.is_some() {
            let f = &v["findings"][0];
            assert_eq!(f["function"], function, "{file}");
            assert_eq!(f["severity"], "error", "{file}");
            assert_eq!(
                f["mdev"]["uuid"], "5e1c0000-0000-4000-8000-000000000001",
                "{file}"
            );
            assert!(f["evidence"].as_array().unwrap().len() >= 2, "{file}");
        }
    }
}

fn builtin_profile_report(file: &str) -> (i32, serde_json::Value) {
    let out = aptrace(&[
        "report",
        "--format",
        "json",
        &path(&format!("tracer/tests/scenarios/{file}.jsonl")),
    ]);
    let v: serde_json::Value = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(&out.stderr)));
    (out.status.code().unwrap(), v)
}

/// The series' probe holding mdevs_lock across the core's registration, and the core's
/// open path under dev_set->lock taking it: one lock-order with both edges, though no
/// deadlock happened. The fixed probe: none.
#[test]
fn the_lock_order_scenarios_show_the_ab_ba_and_its_fix() {
    let (code, v) = builtin_profile_report("lock-order-abba");
    assert_eq!(kinds(&v), ["lock-order"]);
    assert_eq!(code, 1);
    let f = &v["findings"][0];
    let msg = f["message"].as_str().unwrap();
    for part in [
        "dev_set_lock -> mdevs_lock -> dev_set_lock",
        "vfio_register_emulated_iommu_dev entered by pid 100 holding mdevs_lock",
        "vfio_ap_mdev_open_device entered by pid 200 inside vfio_df_open, which asserts dev_set_lock held",
    ] {
        assert!(msg.contains(part), "{part}: {msg}");
    }
    assert_eq!(f["function"], "vfio_ap_mdev_open_device");
    assert_eq!(f["uncertain"], false);
    let edges = v["sources"][0]["lock_order"].as_array().unwrap();
    assert!(edges
        .iter()
        .any(|e| e["held"] == "mdevs_lock" && e["taken"] == "dev_set_lock"));

    let out = aptrace(&[
        "report",
        &path("tracer/tests/scenarios/lock-order-abba.jsonl"),
    ]);
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(
        text.contains("[error] lock-order in vfio_ap_mdev_open_device"),
        "{text}"
    );
    assert!(
        text.contains("\nLock order\n----------\n")
            && text.contains(
                "  mdevs_lock before dev_set_lock: vfio_register_emulated_iommu_dev entered by pid 100 (mdevctl) holding it"
            ),
        "{text}"
    );

    let (code, v) = builtin_profile_report("lock-order-clean");
    assert!(kinds(&v).is_empty(), "{v:#}");
    assert_eq!(code, 0);
    let edges = v["sources"][0]["lock_order"].as_array().unwrap();
    assert!(edges.iter().all(|e| e["held"] == "dev_set_lock"));
}

#[test]
fn the_self_deadlock_report_names_probe_and_the_stack() {
    let out = aptrace(&[
        "report",
        &path("tracer/tests/scenarios/self-deadlock.jsonl"),
    ]);
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(
        text.contains("[error] self-deadlock in vfio_ap_mdev_release_dev"),
        "{text}"
    );
    assert!(text.contains("called from vfio_ap_mdev_probe"), "{text}");
    assert!(
        text.contains("still inside vfio_ap_mdev_release_dev at the end"),
        "{text}"
    );
    assert!(text.contains("kobject_put+0x9a"), "{text}");
}

#[test]
fn clean_exits_0_and_leak_exits_1() {
    let (code, v) = json_report(&path("samples/synthetic-clean.aptr"));
    assert_eq!((code, kinds(&v).len()), (0, 0));
    assert_eq!(v["complete"], true);
    let (code, v) = json_report(&path("samples/synthetic-leak.aptr"));
    assert_eq!(code, 1);
    assert!(kinds(&v).iter().all(|k| k == "leak"));
}

#[test]
fn bad_input_exits_2_with_a_message_naming_the_file() {
    let out = aptrace(&["report", "/nonexistent/x.aptr"]);
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("/nonexistent/x.aptr"), "{err}");
    assert_eq!(
        err.matches("os error 2").count(),
        1,
        "the OS error once: {err}"
    );
    let out = aptrace(&[
        "import",
        "/nonexistent/x.jsonl",
        "-o",
        "/nonexistent/x.aptr",
    ]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(
        err.matches("os error 2").count(),
        1,
        "the OS error once: {err}"
    );

    let dir = tempfile::tempdir().unwrap();
    let junk = dir.path().join("junk.jsonl");
    std::fs::write(&junk, "{\"type\":\"enter\"}\n").unwrap();
    let out = aptrace(&["report", junk.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("junk.jsonl:1"));

    let out = aptrace(&["report", "--format", "yaml", "x"]);
    assert_eq!(out.status.code(), Some(2));

    // An unknown major version is refused.
    let mut data = std::fs::read(path("samples/synthetic-clean.aptr")).unwrap();
    data[8] = 7;
    // keep the header CRC valid so the version is read, not treated as damage
    let len = u32::from_le_bytes(data[12..16].try_into().unwrap()) as usize;
    let crc = common::crc32(&data[8..16 + len]);
    data[16 + len..20 + len].copy_from_slice(&crc.to_le_bytes());
    let future = dir.path().join("future.aptr");
    std::fs::write(&future, data).unwrap();
    let out = aptrace(&["report", future.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("7.0") && err.contains("upgrade aptrace"),
        "{err}"
    );
}

#[test]
fn a_damaged_recording_still_reports_and_says_it_is_incomplete() {
    let data = std::fs::read(path("samples/synthetic-mixed.aptr")).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let (_, whole) = json_report(&path("samples/synthetic-mixed.aptr"));
    let whole_events = whole["summary"]["events"].as_u64().unwrap();

    // cut mid-chunk
    let cut = dir.path().join("cut.aptr");
    std::fs::write(&cut, &data[..data.len() - 100]).unwrap();
    let out = aptrace(&["report", "--format", "json", cut.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1), "findings in the recovered part");
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["complete"], false);
    assert!(String::from_utf8_lossy(&out.stderr).contains("bytes skipped"));

    // a flipped length byte in the first chunk
    let hdr_end = 16 + u32::from_le_bytes(data[12..16].try_into().unwrap()) as usize + 4;
    let mut flipped = data.clone();
    flipped[hdr_end + 9] ^= 0x40;
    let f = dir.path().join("flipped.aptr");
    std::fs::write(&f, &flipped).unwrap();
    let (_, v) = json_report(f.to_str().unwrap());
    assert_eq!(v["complete"], false);
    let got = v["summary"]["events"].as_u64().unwrap();
    assert!(
        got > 0 && got < whole_events,
        "recovered {got} of {whole_events}"
    );
}

#[test]
fn import_export_round_trip_through_the_cli() {
    let dir = tempfile::tempdir().unwrap();
    let a = dir.path().join("a.jsonl");
    let out = aptrace(&[
        "export",
        &path("samples/synthetic-mixed.aptr"),
        "--format",
        "jsonl",
        "-o",
        a.to_str().unwrap(),
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let rec = dir.path().join("b.aptr");
    let out = aptrace(&["import", a.to_str().unwrap(), "-o", rec.to_str().unwrap()]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // import finishes its recording: it ends with the end marker, so it reads complete.
    let (_, v) = json_report(rec.to_str().unwrap());
    assert_eq!(v["complete"], true);
    assert_eq!(v["sources"][0]["format_version"], "1.4");
    assert_eq!(v["sources"][0]["damage"], serde_json::json!([]));
    let b = dir.path().join("b.jsonl");
    aptrace(&[
        "export",
        rec.to_str().unwrap(),
        "--format",
        "jsonl",
        "-o",
        b.to_str().unwrap(),
    ]);
    assert_eq!(
        std::fs::read_to_string(&a).unwrap(),
        std::fs::read_to_string(&b).unwrap()
    );
}

#[cfg(unix)]
#[test]
fn outputs_are_private_not_overwritten_and_not_followed_through_symlinks() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let out_path = dir.path().join("r.json");
    let o = out_path.to_str().unwrap();
    let sample = path("samples/synthetic-leak.aptr");
    assert_eq!(
        aptrace(&["report", &sample, "-o", o]).status.code(),
        Some(1)
    );
    let mode = std::fs::metadata(&out_path).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600);
    let again = aptrace(&["report", &sample, "-o", o]);
    assert_eq!(again.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&again.stderr).contains("--force"));
    assert_eq!(
        aptrace(&["report", &sample, "-o", o, "--force"])
            .status
            .code(),
        Some(1)
    );

    let target = dir.path().join("victim");
    std::fs::write(&target, "keep").unwrap();
    let link = dir.path().join("link");
    std::os::unix::fs::symlink(&target, &link).unwrap();
    let r = aptrace(&["report", &sample, "-o", link.to_str().unwrap(), "--force"]);
    assert_eq!(r.status.code(), Some(2));
    assert_eq!(std::fs::read_to_string(&target).unwrap(), "keep");
}

#[test]
fn markdown_report_escapes_names_from_the_traced_host() {
    let dir = tempfile::tempdir().unwrap();
    let src = std::fs::read_to_string(path("tracer/tests/scenarios/double-free.jsonl")).unwrap();
    let hostile = src.replace("payroll", "<img src=x onerror=alert(1)>*pwn*");
    let f = dir.path().join("h.jsonl");
    std::fs::write(&f, hostile).unwrap();
    let out = aptrace(&["report", "--format", "markdown", f.to_str().unwrap()]);
    let md = String::from_utf8(out.stdout).unwrap();
    assert!(!md.contains("<img"), "{md}");
    assert!(md.contains("&lt;img"), "{md}");
}

/// Runs from the workspace root with a relative path, so the report is the same anywhere.
fn report_at_root(args: &[&str]) -> String {
    let out = Command::new(env!("CARGO_BIN_EXE_aptrace"))
        .current_dir(root())
        .args(args)
        .output()
        .expect("run aptrace");
    String::from_utf8(out.stdout).unwrap()
}

#[test]
fn golden_reports() {
    for (name, file) in [
        (
            "double_free_text",
            "tracer/tests/scenarios/double-free.jsonl",
        ),
        (
            "self_deadlock_markdown",
            "tracer/tests/scenarios/self-deadlock.jsonl",
        ),
        ("synthetic_leak_text", "samples/synthetic-leak.aptr"),
    ] {
        let format = if name.ends_with("markdown") {
            "markdown"
        } else {
            "text"
        };
        insta::assert_snapshot!(name, report_at_root(&["report", "--format", format, file]));
    }
    insta::assert_snapshot!(
        "double_free_json",
        report_at_root(&[
            "report",
            "--format",
            "json",
            "tracer/tests/scenarios/double-free.jsonl"
        ])
    );
}

/// The exit status a CI job gates on: 0 complete and clean, 1 a finding other than
/// `events-lost`, 2 nothing readable, 3 only incomplete.
#[test]
fn exit_status_tells_clean_findings_unreadable_and_incomplete_apart() {
    let dir = tempfile::tempdir().unwrap();
    let write = |name: &str, text: &str| {
        let p = dir.path().join(name);
        std::fs::write(&p, text).unwrap();
        p.to_str().unwrap().to_string()
    };
    let status = |file: &str| aptrace(&["report", file]).status.code();

    assert_eq!(status(&path("samples/synthetic-clean.aptr")), Some(0));
    assert_eq!(status(&path("samples/synthetic-leak.aptr")), Some(1));

    // Empty files, and a file with no readable event, are unreadable inputs.
    for name in ["empty.aptr", "empty.jsonl"] {
        let f = write(name, "");
        let out = aptrace(&["report", &f]);
        assert_eq!(out.status.code(), Some(2), "{name}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(
            err.contains(name) && err.contains("no readable event"),
            "{err}"
        );
    }
    let comments = write("comments.jsonl", "# nothing but a comment\n");
    assert_eq!(status(&comments), Some(2));

    // Events lost and nothing else wrong: incomplete (3), events-lost still reported.
    let lost = write(
        "lost.jsonl",
        "{\"type\":\"enter\",\"ts_ns\":\"1000\",\"pid\":100,\"comm\":\"sh\",\"func\":\"vfio_ap_get_state\",\"args\":[\"0x1000\"]}\n\
         {\"type\":\"exit\",\"ts_ns\":\"1100\",\"pid\":100,\"comm\":\"sh\",\"func\":\"vfio_ap_get_state\",\"ret\":\"0\",\"arg0\":\"0x1000\"}\n\
         {\"type\":\"lost\",\"ts_ns\":\"2000\",\"pid\":0,\"count\":3,\"source\":\"ring-buffer\"}\n",
    );
    let out = aptrace(&["report", "--format", "json", &lost]);
    assert_eq!(
        out.status.code(),
        Some(3),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["complete"], false);
    assert_eq!(kinds(&v), vec!["events-lost".to_string()]);

    // A recording cut between two chunks (its end marker gone), no finding in what is left.
    let data = std::fs::read(path("samples/synthetic-clean.aptr")).unwrap();
    let cut = dir.path().join("cut.aptr");
    std::fs::write(&cut, &data[..data.len() - 1]).unwrap();
    assert_eq!(status(cut.to_str().unwrap()), Some(3));
}

#[test]
fn report_dash_reads_standard_input_recordings_and_json_lines_alike() {
    use std::io::Write;
    use std::process::Stdio;
    for sample in [
        "samples/synthetic-leak.aptr",
        "tracer/tests/scenarios/double-free.jsonl",
    ] {
        let data = std::fs::read(path(sample)).unwrap();
        let mut child = Command::new(env!("CARGO_BIN_EXE_aptrace"))
            .args(["report", "--format", "json", "-"])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        child.stdin.take().unwrap().write_all(&data).unwrap();
        let out = child.wait_with_output().unwrap();
        let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        let (code, from_file) = json_report(&path(sample));
        assert_eq!(out.status.code(), Some(code), "{sample}");
        assert_eq!(kinds(&v), kinds(&from_file), "{sample}");
        assert_eq!(v["sources"][0]["path"], "-");
    }
}

#[test]
fn completions_are_printed_for_each_shell() {
    for (shell, marker) in [
        ("bash", "_aptrace()"),
        ("zsh", "#compdef aptrace"),
        ("fish", "complete -c aptrace"),
    ] {
        let out = aptrace(&["completions", shell]);
        assert_eq!(out.status.code(), Some(0), "{shell}");
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(
            text.contains(marker) && text.contains("report"),
            "{shell}: {text}"
        );
    }
    assert_eq!(aptrace(&["completions", "tcsh"]).status.code(), Some(2));
}

#[test]
fn check_off_s390_says_where_vfio_ap_exists_and_what_to_do() {
    let out = aptrace(&["check"]);
    let text = String::from_utf8_lossy(&out.stdout);
    if std::env::consts::ARCH == "s390x" {
        assert!(!text.contains("exists only on s390"), "{text}");
    } else {
        assert!(
            text.contains("vfio_ap exists only on s390") && text.contains("cargo xtask testbed"),
            "{text}"
        );
    }
}

/// `aptrace profile` writes a file that `--profile` takes back: a report with it is the report
/// with the built-in profile, and an edit to it changes what the auditor concludes.
#[test]
fn the_printed_profile_is_a_file_report_takes_back() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("p.toml");
    let out = aptrace(&["profile", "-o", file.to_str().unwrap()]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let leak = path("samples/leak.aptr");
    let with = |p: &str| aptrace(&["report", "--format", "json", "--profile", p, &leak]);
    let (code, builtin) = json_report(&leak);
    let edited = with(file.to_str().unwrap());
    assert_eq!(edited.status.code(), Some(code));
    let v: serde_json::Value = serde_json::from_slice(&edited.stdout).unwrap();
    assert_eq!(kinds(&v), kinds(&builtin));
    // With the free's role taken away the auditor never sees mig_data freed: the clean
    // sample now leaks, so the edited profile is the one in use.
    let text = std::fs::read_to_string(&file).unwrap();
    let cut = text.replace("role = \"free-field\"", "role = \"other\"");
    assert_ne!(cut, text);
    std::fs::write(&file, cut).unwrap();
    let clean = path("samples/clean.aptr");
    assert_eq!(json_report(&clean).0, 0);
    let edited = aptrace(&[
        "report",
        "--format",
        "json",
        "--profile",
        file.to_str().unwrap(),
        &clean,
    ]);
    let v: serde_json::Value = serde_json::from_slice(&edited.stdout).unwrap();
    assert_eq!(edited.status.code(), Some(1));
    assert!(kinds(&v).iter().any(|k| k == "leak"), "{:?}", kinds(&v));
    // Refused with the file named when it is not a profile.
    std::fs::write(&file, "role = 3\n").unwrap();
    let bad = with(file.to_str().unwrap());
    assert_eq!(bad.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&bad.stderr).contains("p.toml"));
}

/// The README's exit-status table says what the code returns: one row per status, in the
/// order of the constants, each meaning matching the report's verdict.
#[test]
fn the_readme_exit_status_table_matches_the_code() {
    use tracer::report::{EXIT_CLEAN, EXIT_FINDINGS, EXIT_INCOMPLETE, EXIT_UNREADABLE};
    let readme = std::fs::read_to_string(root().join("README.md")).unwrap();
    let rows: Vec<(u8, String)> = readme
        .lines()
        .skip_while(|l| !l.starts_with("| status | meaning |"))
        .skip(2)
        .take_while(|l| l.starts_with('|'))
        .map(|l| {
            let cells: Vec<&str> = l.split('|').map(str::trim).collect();
            (cells[1].parse().unwrap(), cells[2].to_string())
        })
        .collect();
    let statuses: Vec<u8> = rows.iter().map(|(s, _)| *s).collect();
    assert_eq!(
        statuses,
        [EXIT_CLEAN, EXIT_FINDINGS, EXIT_UNREADABLE, EXIT_INCOMPLETE]
    );
    assert!(rows[1].1.contains("events-lost"), "{:?}", rows[1]);
    assert!(rows[2].1.contains("empty file"), "{:?}", rows[2]);
    assert!(rows[3].1.contains("incomplete"), "{:?}", rows[3]);
    // The samples behave as the table says.
    assert_eq!(
        aptrace(&["report", &path("samples/clean.aptr")])
            .status
            .code(),
        Some(EXIT_CLEAN.into())
    );
    assert_eq!(
        aptrace(&["report", &path("samples/leak.aptr")])
            .status
            .code(),
        Some(EXIT_FINDINGS.into())
    );
}

/// A long recording's text report counts its migrations and lists the latest; the JSON
/// report keeps every session. (A day of migrations printed megabytes of timelines.)
#[test]
fn a_long_recording_lists_its_latest_migrations_and_counts_the_rest() {
    let mut g = tracer::synth::Generator::new(5);
    g.migrations = 5;
    for i in 0..30 {
        g.life(i, 1);
    }
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("long.aptr");
    common::write_recording(&file, &g.into_events());
    let file = file.display().to_string();

    let (_, v) = json_report(&file);
    let sessions = v["sources"][0]["migrations"].as_array().unwrap().len();
    assert_eq!(sessions, 150, "the JSON report lists every session");

    for format in ["text", "markdown"] {
        let out = aptrace(&["report", "--format", format, &file]);
        let r = String::from_utf8(out.stdout).unwrap().replace("\\_", "_");
        let (timelines, rest) = r
            .split_once("Migration timelines")
            .unwrap()
            .1
            .split_once("Migrations")
            .unwrap();
        assert!(
            timelines.contains(
                "30 mdev lives migrated; the last 20 are shown, each with its last 16 steps"
            ),
            "{format}:\n{timelines}"
        );
        let lives: Vec<&str> = timelines
            .lines()
            .filter(|l| l.contains(" life ") && l.ends_with(':'))
            .collect();
        assert_eq!(lives.len(), 20, "{format}: the last 20 lives:\n{timelines}");
        assert!(
            lives[0].contains(&common::uuid_of(10)),
            "{format}: {}",
            lives[0]
        );
        assert!(
            lives[19].contains(&common::uuid_of(29)),
            "{format}: {}",
            lives[19]
        );
        // Five migrations of four steps each: the first four steps are counted, not listed.
        assert_eq!(
            timelines.matches("… 4 earlier step(s) not shown").count(),
            20,
            "{format}"
        );
        assert_eq!(timelines.matches(" → ").count(), 20 * 16, "{format}");

        assert!(
            rest.contains("150 sessions, ended: running 150; 0 with failed transfers; the last 50 are listed (--format json lists every one)"),
            "{format}:\n{rest}"
        );
        let listed: Vec<&str> = rest
            .lines()
            .filter(|l| l.contains(" save of mdev "))
            .collect();
        assert_eq!(listed.len(), 50, "{format}");
        assert!(listed[0].contains("#101 save"), "{format}: {}", listed[0]);
        assert!(listed[49].contains("#150 save"), "{format}: {}", listed[49]);
    }
}
