//! `cargo xtask bench [--quick] [--no-kernel] [--kernels LIST] [--kernel-runs N]`: runs the
//! benchmarks of the `tracer` package and the kernel-side benchmark of the testbed, and prints
//! every ratio of issue 7 (BENCHMARKS.md says how each is measured).
//!
//! Full: the benches are built first, and the run waits (up to 150 s) for the build's load
//! to fall; then the criterion throughput benches (one million events per stage), the ratio bench
//! (ingest rate, (a), (f)) and the memory bench (1 M and 10 M events), then the kernel-side
//! figures (b)–(e), measured in the same run by the testbed's benchmark
//! (`cargo xtask testbed --bench`: QEMU guests on x86_64-6.12 and s390x-6.12 unless
//! `--kernels` says otherwise), then a summary.
//! `--quick` (CI): every userspace bench compiles and runs once on a small input; nothing is a
//! figure, and no guest boots. `--no-kernel`: the userspace figures only.

mod targets;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use anyhow::{bail, Context, Result};

use targets::{Goal, Load, LoadWatch, Target, Unit};

/// The criterion groups of `tracer/benches/throughput.rs`, in pipeline order.
const STAGES: &[(&str, &str)] = &[
    (
        "abi_decode",
        "ABI decode (model::decode_record, s390x big-endian records)",
    ),
    (
        "reorder",
        "reorder (pipeline::reorder::Reorder, 50 ms window)",
    ),
    (
        "audit_ingest",
        "auditor ingest (audit::Auditor::ingest_all)",
    ),
    (
        "pipeline",
        "whole pipeline, one core (decode -> reorder -> audit)",
    ),
    ("recording_write", "recording write (recording::Writer)"),
    (
        "recording_read",
        "recording read (Recording::parse + decode)",
    ),
    ("report", "report (FileReport::new + to_text / to_json)"),
];

/// The kernels `cargo xtask bench` measures (b)–(e) on unless `--kernels` is given.
pub const DEFAULT_KERNELS: &str = "x86_64-6.12,s390x-6.12";

/// The options of `cargo xtask bench`.
#[derive(clap::Args, Debug)]
pub struct BenchArgs {
    /// Compile and run each userspace bench once on a small input (CI); no guest boots.
    #[arg(long)]
    pub quick: bool,
    /// Skip the testbed's guests: (b)-(e) are not measured.
    #[arg(long)]
    pub no_kernel: bool,
    /// Kernels for (b)-(e), as `cargo xtask testbed --kernels`.
    #[arg(long, default_value = DEFAULT_KERNELS)]
    pub kernels: String,
    /// Runs per kernel figure (medians), as `cargo xtask testbed --bench-runs`.
    #[arg(long, default_value_t = 5)]
    pub kernel_runs: u32,
}

/// The benches whose figures a full run prints.
const FIGURE_BENCHES: [&str; 3] = ["throughput", "ratios", "memory"];

/// Builds the benches, then waits for the machine to settle before the first figure: on a
/// fresh clone the build takes minutes, and a bench started at once measured its tail.
fn settle_after_build(root: &Path) -> Result<()> {
    let mut build = Command::new(env!("CARGO"));
    build
        .current_dir(root)
        .args(["bench", "-p", "tracer", "--no-run"]);
    for b in FIGURE_BENCHES {
        build.args(["--bench", b]);
    }
    crate::cmd::run(&mut build)?;
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    // A quarter of a core each: 0.5 on the 2-core machines the targets were set on.
    let mark = 0.25 * cores as f64;
    let max = Duration::from_secs(150);
    if let Some(l) = targets::one_minute_load().filter(|&l| l >= mark) {
        println!(
            "waiting for the machine to settle after the build: one-minute load {l:.2}, below {mark:.2} is quiet (at most {} s)",
            max.as_secs()
        );
    }
    let s = targets::settle(
        mark,
        max,
        Duration::from_secs(5),
        targets::one_minute_load,
        std::thread::sleep,
    );
    if s.waited > Duration::ZERO || !s.quiet {
        let load = s.load.map_or("unknown".into(), |l| format!("{l:.2}"));
        if s.quiet {
            println!(
                "settled: one-minute load {load} after {} s",
                s.waited.as_secs()
            );
        } else {
            println!(
                "not settled after {} s (one-minute load {load}): measuring anyway; the summary gives the load during the run",
                s.waited.as_secs()
            );
        }
    }
    Ok(())
}

/// What became of (b)–(e) in this run.
enum Kernel {
    Measured(Vec<crate::testbed::bench::Figures>),
    /// why not (the line to print)
    NotMeasured(String),
    /// the testbed's benchmark failed
    Failed(anyhow::Error),
}

pub fn run(a: BenchArgs) -> Result<()> {
    let quick = a.quick;
    // Checked before minutes of benches run.
    let kernels = crate::testbed::parse_kernels(&a.kernels)?;
    let root = crate::root();
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| root.join("target"));
    if !quick {
        settle_after_build(&root)?;
    }
    let load = LoadWatch::start(Duration::from_secs(10));
    let out = target.join("aptrace-bench");
    let _ = std::fs::remove_dir_all(&out);
    std::fs::create_dir_all(&out)?;
    let cargo_bench = |bench: &str, args: &[&str]| -> Result<()> {
        crate::cmd::run(
            Command::new(env!("CARGO"))
                .current_dir(&root)
                .args(["bench", "-p", "tracer", "--bench", bench, "--"])
                .args(args)
                .env("APTRACE_BENCH_OUT", &out),
        )
    };
    if quick {
        for b in FIGURE_BENCHES {
            cargo_bench(b, &["--test"])?;
        }
    } else {
        for b in FIGURE_BENCHES {
            cargo_bench(b, &[])?;
        }
    }
    let kernel = if quick {
        Kernel::NotMeasured(
            "not measured (--quick: they need the testbed's QEMU guests, minutes per kernel)"
                .into(),
        )
    } else if a.no_kernel {
        Kernel::NotMeasured(
            "not measured (--no-kernel: the testbed's QEMU guests were skipped; `cargo xtask bench` without it measures them)"
                .into(),
        )
    } else if kernels.is_empty() {
        Kernel::NotMeasured("not measured (--kernels named no kernel)".into())
    } else {
        eprintln!(
            "xtask: cargo xtask testbed --bench --kernels {} --bench-runs {}",
            a.kernels, a.kernel_runs
        );
        match crate::testbed::kernel_figures(kernels, a.kernel_runs) {
            Ok(f) => Kernel::Measured(f),
            Err(e) => Kernel::Failed(e),
        }
    };
    let load = load.finish();
    summary(&target, &out, quick, &kernel, &load)?;
    match kernel {
        Kernel::Failed(e) => Err(e.context("the kernel benchmark (b)-(e) failed")),
        Kernel::Measured(f) => {
            let missing: Vec<String> = f
                .iter()
                .flat_map(|f| {
                    f.missing()
                        .into_iter()
                        .map(move |m| format!("{} {}: {m}", f.arch, f.kernel))
                })
                .collect();
            if missing.is_empty() {
                Ok(())
            } else {
                bail!("kernel figures without a number: {}", missing.join("; "))
            }
        }
        Kernel::NotMeasured(_) => Ok(()),
    }
}

fn read(path: &Path) -> Result<String> {
    std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))
}

/// Every number that follows `"key":` in a small JSON text, in order.
fn numbers(text: &str, key: &str) -> Vec<f64> {
    let pat = format!("\"{key}\":");
    text.match_indices(&pat)
        .filter_map(|(i, _)| {
            let rest = text[i + pat.len()..].trim_start();
            let end = rest
                .find(|c: char| !(c.is_ascii_digit() || "+-.eE".contains(c)))
                .unwrap_or(rest.len());
            rest[..end].parse().ok()
        })
        .collect()
}

fn number(text: &str, key: &str) -> Option<f64> {
    numbers(text, key).first().copied()
}

fn bool_field(text: &str, key: &str) -> bool {
    text.contains(&format!("\"{key}\": true")) || text.contains(&format!("\"{key}\":true"))
}

/// (id, events per iteration, median ns per iteration) of each function of a criterion
/// group, from its newest run.
fn criterion_group(target: &Path, group: &str) -> Vec<(String, f64, f64)> {
    let dir = target.join("criterion").join(group);
    let Ok(entries) = std::fs::read_dir(&dir) else {
        return Vec::new();
    };
    let mut rows = Vec::new();
    for e in entries.flatten() {
        let new = e.path().join("new");
        let (Ok(est), Ok(bench)) = (
            std::fs::read_to_string(new.join("estimates.json")),
            std::fs::read_to_string(new.join("benchmark.json")),
        ) else {
            continue;
        };
        let median = est
            .find("\"median\"")
            .and_then(|i| number(&est[i..], "point_estimate"));
        let elements = number(&bench, "Elements");
        if let (Some(m), Some(n)) = (median, elements) {
            rows.push((e.file_name().to_string_lossy().into_owned(), n, m));
        }
    }
    rows.sort_by(|a, b| a.0.cmp(&b.0));
    rows
}

/// The events per second of a criterion group's first function, from its newest run.
fn criterion_rate(target: &Path, group: &str) -> Option<f64> {
    criterion_group(target, group)
        .first()
        .map(|(_, n, ns)| n / (ns / 1e9))
}

/// Every target of the performance issue's table, with this run's figures.
fn targets(target: &Path, ratios: &str, memory: &str, quick: bool, kernel: &Kernel) -> Vec<Target> {
    let criterion = |group| {
        if quick {
            None
        } else {
            criterion_rate(target, group)
        }
    };
    let mut t = vec![
        Target::new(
            "reorder, 1 M-event mix",
            criterion("reorder"),
            Unit::EventsPerSec,
            Goal::AtLeast(20e6),
        ),
        Target::new(
            "auditor ingest, one core, 1 M-event mix (criterion)",
            criterion("audit_ingest"),
            Unit::EventsPerSec,
            Goal::AtLeast(20e6),
        ),
        Target::new(
            "whole pipeline (decode -> reorder -> audit), one core",
            criterion("pipeline"),
            Unit::EventsPerSec,
            Goal::AtLeast(5e6),
        ),
        Target::new(
            "(a) audit a recording end to end / read+CRC+decode floor",
            number(ratios, "a_ratio"),
            Unit::Ratio,
            Goal::AtMost(1.5),
        ),
    ];
    let absent = match kernel {
        Kernel::Measured(_) => "not measured in this run (the guest printed no number)".into(),
        Kernel::NotMeasured(why) => format!(
            "not measured in this run{}",
            why.strip_prefix("not measured").unwrap_or(why)
        ),
        Kernel::Failed(e) => {
            format!("not measured in this run (the testbed's benchmark failed: {e})")
        }
    };
    let figures = |arch: &str| match kernel {
        Kernel::Measured(f) => f.iter().find(|f| f.arch == arch),
        _ => None,
    };
    let ratio = |arch: &str, a: &str, b: &str| {
        let f = figures(arch)?;
        Some(f.med(a)? / f.med(b)?)
    };
    // (e): half the issue's per-function attach in instruction time (1.9 s and 0.8 s for 13
    // functions on x86_64 and s390x)
    for (arch, c_goal, b_goal, b_what, e_goal) in [
        ("x86_64", 1.1, 0.8, "(JIT)", 1.9 / 13.0 / 2.0),
        (
            "s390x",
            1.5,
            2.0,
            "(no JIT in Debian's kernels)",
            0.8 / 13.0 / 2.0,
        ),
    ] {
        t.push(
            Target::new(
                format!("(c) --all-allocations / do-nothing floor on the same tracepoints, {arch}"),
                ratio(arch, "alloc aptrace-all", "alloc noop"),
                Unit::Ratio,
                Goal::AtMost(c_goal),
            )
            .absent_because(absent.clone()),
        );
        t.push(
            Target::new(
                format!("(b) traced call / ftrace events fetching the same data, {arch} {b_what}"),
                ratio(arch, "call aptrace", "call ftrace-args"),
                Unit::Ratio,
                Goal::AtMost(b_goal),
            )
            .absent_because(absent.clone()),
        );
        t.push(
            Target::new(
                format!("(b) traced call with the lock reads / --lock-reads off, {arch}"),
                ratio(
                    arch,
                    "call aptrace-lock-reads-on",
                    "call aptrace-lock-reads-off",
                ),
                Unit::Ratio,
                Goal::AtMost(1.1),
            )
            .absent_because(absent.clone()),
        );
        t.push(
            Target::new(
                format!("(e) attach per function, instruction time, {arch}"),
                figures(arch).and_then(|f| f.attach_per_function("default")),
                Unit::Seconds,
                Goal::AtMost(e_goal),
            )
            .absent_because(absent.clone()),
        );
    }
    let ev = numbers(memory, "events");
    let peak = numbers(memory, "peak_heap_bytes");
    let growth = (ev.len() == 2 && peak.len() == 2 && peak[0] > 0.0).then(|| peak[1] / peak[0]);
    t.push(Target::new(
        "peak memory, 10 M events / 1 M events (flat)",
        growth,
        Unit::Ratio,
        Goal::AtMost(1.1),
    ));
    t
}

fn summary(target: &Path, out: &Path, quick: bool, kernel: &Kernel, load: &Load) -> Result<()> {
    let ratios = read(&out.join("ratios.json"))?;
    let memory = read(&out.join("memory.json"))?;
    let q = |v: Option<f64>| v.unwrap_or(f64::NAN);
    println!();
    println!("== aptrace benchmarks: userspace ==");
    if quick || bool_field(&ratios, "quick") {
        println!("(--quick: every bench compiled and ran once on a small input; the numbers below are not figures)");
    }
    let events = q(number(&ratios, "events"));
    println!("machine: {}", machine());
    if !quick {
        println!("throughput per stage (criterion, median of 10 samples, {events:.0}-event mix):");
        for (group, what) in STAGES {
            for (id, n, ns) in criterion_group(target, group) {
                if *group == "report" {
                    // Its cost follows mdevs and findings, not events: a time per report.
                    println!("  {group:<16} {:>7.1} ms/report   {what} [{id}]", ns / 1e6);
                } else {
                    println!(
                        "  {group:<16} {:>7.2} M events/s  {what} [{id}]",
                        n / (ns / 1e9) / 1e6
                    );
                }
            }
        }
    }
    let ingest = q(number(&ratios, "ingest_events_per_s"));
    println!(
        "auditor ingest, one core, timed rounds (ratios bench): {:.2} M events/s; one `ingest` call per event: {:.2} M events/s",
        ingest / 1e6,
        q(number(&ratios, "ingest_one_by_one_events_per_s")) / 1e6
    );
    let a = q(number(&ratios, "a_ratio"));
    println!(
        "(a) audit a recording end to end / read + CRC + decode floor: {a:.2}x, decoded ahead on a second thread; on one thread: {:.2}x; `aptrace report`'s own path: {:.2}x",
        q(number(&ratios, "a_one_thread_ratio")),
        q(number(&ratios, "a_report_command_ratio"))
    );
    // (b)-(e) need kernels: measured in this run in the testbed's guests.
    match kernel {
        Kernel::Measured(figures) => {
            println!("(b)-(e), measured in this run in the testbed's guests (Debian kernels under QEMU TCG):");
            for f in figures {
                print!("{}", f.render());
            }
        }
        Kernel::NotMeasured(why) => println!("(b)-(e): {why}"),
        Kernel::Failed(e) => {
            println!("(b)-(e): not measured: the testbed's benchmark failed: {e:#}")
        }
    }
    let f = q(number(&ratios, "f_recording_bytes_per_event"));
    let j = q(number(&ratios, "f_jsonl_bytes_per_event"));
    println!(
        "(f) recording {f:.2} bytes/event (header excluded) vs JSON lines {j:.1} bytes/event: JSON is {:.1}x larger",
        j / f
    );
    let ev = numbers(&memory, "events");
    let peak = numbers(&memory, "peak_heap_bytes");
    if ev.len() == 2 && peak.len() == 2 {
        println!(
            "memory (reorder + recorder + auditor, counting allocator): peak heap {:.1} MiB at {:.0} events, {:.1} MiB at {:.0} events: {:.2}x for {:.0}x the events",
            peak[0] / 1048576.0,
            ev[0],
            peak[1] / 1048576.0,
            ev[1],
            peak[1] / peak[0],
            ev[1] / ev[0]
        );
    }
    println!("raw results: {}", out.display());
    println!();
    println!("== targets: one line per target of the table, figure (target): verdict ==");
    for t in targets(target, &ratios, &memory, quick, kernel) {
        println!("{}", t.line(quick));
    }
    println!("{}", load.line());
    Ok(())
}

/// CPU model and count, for the record.
fn machine() -> String {
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|t| {
            t.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split(':').nth(1))
                .map(|s| s.trim().to_string())
        })
        .unwrap_or_else(|| std::env::consts::ARCH.to_string());
    let n = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1);
    format!("{cpu}, {n} cores visible")
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Without kernels, every kernel target says it was not measured, none is met, and the
    /// userspace targets are judged on this run's numbers.
    #[test]
    fn every_target_of_the_table_gets_a_line_and_absent_kernel_figures_are_not_met() {
        let dir = tempfile_dir();
        let ratios = r#"{"a_ratio": 1.4, "ingest_events_per_s": 1e7}"#;
        let memory = r#"[{"events": 1000000, "peak_heap_bytes": 100}, {"events": 10000000, "peak_heap_bytes": 105}]"#;
        let kernel = Kernel::NotMeasured("not measured (--no-kernel: skipped)".into());
        let lines: Vec<String> = targets(&dir, ratios, memory, false, &kernel)
            .iter()
            .map(|t| t.line(false))
            .collect();
        assert_eq!(lines.len(), 13, "{lines:#?}");
        let kernel_lines: Vec<&String> = lines
            .iter()
            .filter(|l| l.starts_with("(b)") || l.starts_with("(c)") || l.starts_with("(e)"))
            .collect();
        assert_eq!(kernel_lines.len(), 8);
        for l in kernel_lines {
            assert!(
                l.ends_with("not measured in this run (--no-kernel: skipped)"),
                "{l}"
            );
        }
        // No criterion results in an empty target directory: not measured, not met.
        assert!(lines[0]
            .starts_with("reorder, 1 M-event mix: - (target >= 20.00 M events/s): not measured"));
        assert!(lines.contains(
            &"(a) audit a recording end to end / read+CRC+decode floor: 1.40x (target <= 1.50x): met".to_string()
        ));
        assert!(lines
            .last()
            .unwrap()
            .ends_with("1.05x (target <= 1.10x): met"));
    }

    fn tempfile_dir() -> PathBuf {
        let d = std::env::temp_dir().join(format!("xtask-bench-test-{}", std::process::id()));
        std::fs::create_dir_all(&d).unwrap();
        d
    }
}
