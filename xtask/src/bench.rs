//! `cargo xtask bench [--quick] [--no-kernel] [--kernels LIST] [--kernel-runs N]`: runs the
//! benchmarks of the `tracer` package and the kernel-side benchmark of the testbed, and prints
//! every ratio of issue 7 (BENCHMARKS.md says how each is measured).
//!
//! Full: the criterion throughput benches (one million events per stage), the ratio bench
//! (ingest rate, (a), (f)) and the memory bench (1 M and 10 M events), then the kernel-side
//! figures (b)–(e), measured in the same run by the testbed's benchmark
//! (`cargo xtask testbed --bench`: QEMU guests on x86_64-6.12 and s390x-6.12 unless
//! `--kernels` says otherwise), then a summary.
//! `--quick` (CI): every userspace bench compiles and runs once on a small input; nothing is a
//! figure, and no guest boots. `--no-kernel`: the userspace figures only.

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{bail, Context, Result};

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
    ("audit_ingest", "auditor ingest (audit::Auditor::ingest)"),
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

static QUICK: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

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
    QUICK.store(quick, std::sync::atomic::Ordering::Relaxed);
    let root = crate::root();
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| root.join("target"));
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
        for b in ["throughput", "ratios", "memory"] {
            cargo_bench(b, &["--test"])?;
        }
    } else {
        cargo_bench("throughput", &[])?;
        cargo_bench("ratios", &[])?;
        cargo_bench("memory", &[])?;
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
    summary(&target, &out, quick, &kernel)?;
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

fn summary(target: &Path, out: &Path, quick: bool, kernel: &Kernel) -> Result<()> {
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
        "auditor ingest, one core: {:.2} M events/s (target >= 5 M/s: {})",
        ingest / 1e6,
        met(ingest >= 5e6)
    );
    let a = q(number(&ratios, "a_ratio"));
    println!(
        "(a) audit a recording end to end / read + CRC + decode floor: {a:.2}x (target <= 2x: {}); `aptrace report`'s load-everything path: {:.2}x",
        met(a <= 2.0),
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
        "(f) recording {f:.2} bytes/event (header excluded) vs JSON lines {j:.1} bytes/event: JSON is {:.1}x larger (target <= 24 bytes/event: {})",
        j / f,
        met(f <= 24.0)
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
    Ok(())
}

fn met(ok: bool) -> &'static str {
    if QUICK.load(std::sync::atomic::Ordering::Relaxed) {
        "not judged in --quick"
    } else if ok {
        "met"
    } else {
        "MISSED"
    }
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
