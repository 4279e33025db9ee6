//! Every file aptrace writes (report -o, export -o, import -o): mode 0600, no overwrite
//! without --force, no symlink followed, and with --force no write into a file that is
//! shared (hard links), readable by others, or not a regular file.
#![cfg(unix)]

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_path_buf()
}

fn sample() -> String {
    root()
        .join("samples/synthetic-leak.aptr")
        .display()
        .to_string()
}

/// Runs aptrace, killing it if it blocks (a FIFO with no reader must not hang it).
fn aptrace(args: &[&str]) -> Output {
    let mut child = Command::new(env!("CARGO_BIN_EXE_aptrace"))
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run aptrace");
    let start = Instant::now();
    while child.try_wait().unwrap().is_none() {
        if start.elapsed() > Duration::from_secs(60) {
            child.kill().unwrap();
            panic!("aptrace {args:?} blocked");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    child.wait_with_output().unwrap()
}

/// The three commands that write a file, each writing to `out`.
fn writers(out: &str) -> Vec<Vec<String>> {
    let dir = tempfile::tempdir().unwrap().keep();
    let jsonl = dir.join("in.jsonl");
    std::fs::copy(
        root().join("tracer/tests/scenarios/double-free.jsonl"),
        &jsonl,
    )
    .unwrap();
    let s = |x: &str| x.to_string();
    vec![
        vec![s("report"), sample(), s("-o"), s(out)],
        vec![
            s("export"),
            sample(),
            s("--format"),
            s("jsonl"),
            s("-o"),
            s(out),
        ],
        vec![s("import"), jsonl.display().to_string(), s("-o"), s(out)],
    ]
}

fn run(args: &[String], force: bool) -> Output {
    let mut a: Vec<&str> = args.iter().map(|s| s.as_str()).collect();
    if force {
        a.push("--force");
    }
    aptrace(&a)
}

fn mode(p: &Path) -> u32 {
    std::fs::metadata(p).unwrap().permissions().mode() & 0o7777
}

#[test]
fn every_output_is_0600_and_not_overwritten_without_force() {
    let dir = tempfile::tempdir().unwrap();
    for (i, args) in writers(&dir.path().join("out").display().to_string())
        .into_iter()
        .enumerate()
    {
        let out = dir.path().join(format!("out{i}"));
        let args: Vec<String> = args
            .into_iter()
            .map(|a| {
                if a.ends_with("/out") {
                    out.display().to_string()
                } else {
                    a
                }
            })
            .collect();
        let first = run(&args, false);
        assert!(
            out.exists(),
            "{args:?}: {}",
            String::from_utf8_lossy(&first.stderr)
        );
        assert_eq!(mode(&out), 0o600, "{args:?}");
        let written = std::fs::read(&out).unwrap();
        assert!(!written.is_empty());

        let again = run(&args, false);
        assert_eq!(again.status.code(), Some(2), "{args:?}");
        assert!(String::from_utf8_lossy(&again.stderr).contains("pass --force"));
        assert_eq!(std::fs::read(&out).unwrap(), written, "{args:?}: untouched");
    }
}

#[test]
fn force_over_a_readable_file_makes_it_private_first() {
    let dir = tempfile::tempdir().unwrap();
    for (i, args) in writers("OUT").into_iter().enumerate() {
        let out = dir.path().join(format!("shared{i}"));
        std::fs::write(&out, "old contents, much longer than nothing at all").unwrap();
        std::fs::set_permissions(&out, std::fs::Permissions::from_mode(0o644)).unwrap();
        let args: Vec<String> = args
            .into_iter()
            .map(|a| {
                if a == "OUT" {
                    out.display().to_string()
                } else {
                    a
                }
            })
            .collect();
        let r = run(&args, true);
        assert_ne!(
            r.status.code(),
            Some(2),
            "{args:?}: {}",
            String::from_utf8_lossy(&r.stderr)
        );
        assert_eq!(mode(&out), 0o600, "{args:?}");
        let text = std::fs::read(&out).unwrap();
        assert!(
            !text.starts_with(b"old contents"),
            "{args:?}: rewritten from the start"
        );
    }
}

#[test]
fn force_refuses_symlinks_hard_links_and_fifos() {
    let dir = tempfile::tempdir().unwrap();
    let victim = dir.path().join("victim");
    std::fs::write(&victim, "keep").unwrap();
    let link = dir.path().join("link");
    std::os::unix::fs::symlink(&victim, &link).unwrap();
    let dangling = dir.path().join("dangling");
    std::os::unix::fs::symlink(dir.path().join("created-through-link"), &dangling).unwrap();
    let hard = dir.path().join("hard");
    std::fs::hard_link(&victim, &hard).unwrap();
    let fifo = dir.path().join("fifo");
    assert!(Command::new("mkfifo")
        .arg(&fifo)
        .status()
        .unwrap()
        .success());

    for target in [&link, &dangling, &hard, &fifo] {
        for args in writers("OUT") {
            let args: Vec<String> = args
                .into_iter()
                .map(|a| {
                    if a == "OUT" {
                        target.display().to_string()
                    } else {
                        a
                    }
                })
                .collect();
            for force in [false, true] {
                let r = run(&args, force);
                let err = String::from_utf8_lossy(&r.stderr);
                assert_eq!(r.status.code(), Some(2), "{args:?} force={force}: {err}");
                assert!(err.contains(&*target.display().to_string()), "{err}");
            }
        }
    }
    assert_eq!(std::fs::read_to_string(&victim).unwrap(), "keep");
    assert_eq!(
        mode(&victim) & 0o777,
        0o666 & !umask(),
        "victim's mode untouched"
    );
    assert!(!dir.path().join("created-through-link").exists());
}

fn umask() -> u32 {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("probe");
    std::fs::write(&p, "").unwrap();
    0o666 & !mode(&p)
}
