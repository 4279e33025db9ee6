//! `cargo xtask soak --minutes N`: replays a recording at full speed in a loop through the
//! agent's own path (pipeline: reorder window → auditor) for N minutes, sampling the
//! resident memory, and fails if it grows. Not part of CI; results go to BENCHMARKS.md.
//!
//! Each loop shifts sequence numbers and timestamps past the previous loop, so the auditor
//! sees one endless stream of new mdev lives (the same pointers come back as new
//! incarnations after release, as they do on a real host).

use std::io::{BufRead, BufReader, Write};
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use tracer::audit::Auditor;
use tracer::model::Event;
use tracer::pipeline::Pipeline;
use tracer::profile::Profile;
use tracer::recording::Recording;

use crate::{cmd, root};

#[derive(clap::Args)]
pub struct SoakArgs {
    /// How long to replay.
    #[arg(long, default_value_t = 10)]
    pub minutes: u64,
    /// The recording to replay.
    #[arg(long, default_value = "samples/synthetic-clean.aptr")]
    pub input: PathBuf,
    /// Seconds between memory samples.
    #[arg(long, default_value_t = 10)]
    pub sample_seconds: u64,
    /// Allowed growth of RSS from the end of the first tenth to the end, in percent.
    #[arg(long, default_value_t = 10)]
    pub max_growth_percent: u64,
    /// CSV of the samples.
    #[arg(long, default_value = "target/soak/rss.csv")]
    pub csv: PathBuf,
    /// Internal: the replay loop itself (run by the command above, built in release).
    #[arg(long, hide = true)]
    pub worker: bool,
}

fn rss_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|v| v.parse().ok())
        })
        .unwrap_or(0)
}

/// The replay loop; prints `elapsed_s,events,loops,rss_kib,findings` lines.
fn worker(args: &SoakArgs) -> Result<()> {
    let path = root().join(&args.input);
    let rec = Recording::open(&path).map_err(|e| anyhow::anyhow!("{e}"))?;
    let mut warnings = Vec::new();
    let events: Vec<Event> = rec.events(&mut warnings);
    if events.is_empty() {
        bail!("{}: no events to replay", path.display());
    }
    let profile = if rec.header.profile.is_empty() {
        Profile::vfio_ap()
    } else {
        Profile::from_toml(&rec.header.profile, "embedded profile")
            .unwrap_or_else(|_| Profile::vfio_ap())
    };
    let seq_span = events.iter().map(|e| e.seq).max().unwrap() + 1;
    let first_ts = events.iter().map(|e| e.ts_ns).min().unwrap();
    let ts_span = events.iter().map(|e| e.ts_ns).max().unwrap() - first_ts + 1_000_000;

    let mut pipeline = Pipeline::new(Auditor::new(profile), None);
    let start = Instant::now();
    let end = start + Duration::from_secs(args.minutes * 60);
    let every = Duration::from_secs(args.sample_seconds.max(1));
    let mut next_sample = start;
    let (mut total, mut loops) = (0u64, 0u64);
    let out = std::io::stdout();
    loop {
        let now = Instant::now();
        if now >= next_sample {
            let findings = pipeline.auditor.findings().len();
            writeln!(
                out.lock(),
                "{:.1},{total},{loops},{},{findings}",
                now.duration_since(start).as_secs_f64(),
                rss_kib()
            )?;
            next_sample += every;
        }
        if now >= end {
            break;
        }
        for e in &events {
            let mut e = e.clone();
            e.seq += loops * seq_span;
            e.ts_ns = e.ts_ns - first_ts + 1 + loops * ts_span;
            pipeline.push(e);
        }
        pipeline.idle();
        total += events.len() as u64;
        loops += 1;
    }
    Ok(())
}

pub fn run(args: SoakArgs) -> Result<()> {
    if args.worker {
        return worker(&args);
    }
    let root = root();
    cmd::run(Command::new(env!("CARGO")).current_dir(&root).args([
        "build",
        "--release",
        "--package",
        "xtask",
    ]))?;
    let csv_path = root.join(&args.csv);
    if let Some(d) = csv_path.parent() {
        std::fs::create_dir_all(d)?;
    }
    eprintln!(
        "xtask: soak: replaying {} at full speed for {} min, sampling RSS every {} s",
        args.input.display(),
        args.minutes,
        args.sample_seconds
    );
    let mut child = Command::new(root.join("target/release/xtask"))
        .current_dir(&root)
        .args(["soak", "--worker", "--minutes"])
        .arg(args.minutes.to_string())
        .arg("--input")
        .arg(&args.input)
        .arg("--sample-seconds")
        .arg(args.sample_seconds.to_string())
        .stdout(Stdio::piped())
        .spawn()
        .context("starting the soak worker")?;
    let mut samples: Vec<(f64, u64, u64, u64, u64)> = Vec::new();
    let mut csv = String::from("elapsed_s,events,loops,rss_kib,findings\n");
    for line in BufReader::new(child.stdout.take().unwrap()).lines() {
        let line = line?;
        let f: Vec<&str> = line.split(',').collect();
        if f.len() != 5 {
            continue;
        }
        let s = (
            f[0].parse().unwrap_or(0.0),
            f[1].parse().unwrap_or(0),
            f[2].parse().unwrap_or(0),
            f[3].parse().unwrap_or(0),
            f[4].parse().unwrap_or(0),
        );
        eprintln!(
            "  {:>6.0} s  {:>12} events  {:>8} loops  RSS {:>7} KiB  findings {}",
            s.0, s.1, s.2, s.3, s.4
        );
        csv.push_str(&line);
        csv.push('\n');
        samples.push(s);
    }
    let status = child.wait()?;
    std::fs::write(&csv_path, &csv)?;
    if !status.success() || samples.len() < 3 {
        bail!("the soak worker failed ({status})");
    }
    let last = samples.last().unwrap();
    // Baseline: the first sample after a tenth of the run (allocator and maps warmed up).
    let warm = samples
        .iter()
        .find(|s| s.0 >= last.0 / 10.0)
        .unwrap_or(&samples[1]);
    let peak = samples.iter().map(|s| s.3).max().unwrap();
    let growth = last.3 as f64 / warm.3.max(1) as f64 * 100.0 - 100.0;
    println!("\n| time | events replayed | RSS (KiB) | findings |\n|---:|---:|---:|---:|");
    let step = (samples.len() / 12).max(1);
    for (i, s) in samples.iter().enumerate() {
        if i % step == 0 || i == samples.len() - 1 {
            println!("| {:.0} s | {} | {} | {} |", s.0, s.1, s.3, s.4);
        }
    }
    println!(
        "\n{} events in {:.0} s ({:.0} events/s); RSS {} KiB at {:.0} s, {} KiB at the end \
         ({growth:+.1}%), peak {} KiB; samples in {}",
        last.1,
        last.0,
        last.1 as f64 / last.0.max(1.0),
        warm.3,
        warm.0,
        last.3,
        peak,
        args.csv.display()
    );
    if growth > args.max_growth_percent as f64 {
        bail!(
            "memory grew {growth:.1}% (more than {}%) while replaying",
            args.max_growth_percent
        );
    }
    Ok(())
}
