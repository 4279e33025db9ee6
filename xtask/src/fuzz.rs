//! `cargo xtask fuzz --seconds N`: runs every cargo-fuzz target of `fuzz/` for N seconds,
//! seeded from the project's recordings, scenarios and encoded ABI records. Installs what is
//! missing (cargo-fuzz into `.cache/tools`, the pinned nightly). Fails when a target crashes,
//! hangs past `--timeout` or allocates past `--rss-limit-mb`.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

use anyhow::{bail, Context, Result};
use tracer::recording::{Recording, Writer};

use crate::{cmd, provision, root, toolchain};

const CARGO_FUZZ_VERSION: &str = "0.13.2";
pub const TARGETS: &[&str] = &["recording", "chunk", "abi", "jsonl", "jsonl_order"];

#[derive(clap::Args)]
pub struct FuzzArgs {
    /// How long each target runs.
    #[arg(long, default_value_t = 20)]
    pub seconds: u64,
    /// Run only these targets (default: all).
    #[arg(long = "target")]
    pub targets: Vec<String>,
    /// A target whose memory passes this fails (also the largest single allocation).
    #[arg(long, default_value_t = 1024)]
    pub rss_limit_mb: u64,
    /// An input that takes longer than this many seconds is a hang, and fails.
    #[arg(long, default_value_t = 10)]
    pub timeout: u64,
    /// Build without AddressSanitizer (faster; still catches panics, hangs and memory).
    #[arg(long)]
    pub no_sanitizer: bool,
}

fn tools_bin() -> PathBuf {
    root().join(".cache/tools/bin")
}

fn path_with_tools() -> std::ffi::OsString {
    let mut paths = vec![tools_bin()];
    if let Some(p) = std::env::var_os("PATH") {
        paths.extend(std::env::split_paths(&p));
    }
    std::env::join_paths(paths).expect("PATH entries have no separator")
}

fn ensure_cargo_fuzz() -> Result<()> {
    let bin = tools_bin().join("cargo-fuzz");
    let current = cmd::query(Command::new(&bin).arg("--version"))
        .is_some_and(|v| v.contains(CARGO_FUZZ_VERSION));
    if current {
        return Ok(());
    }
    eprintln!("xtask: installing cargo-fuzz {CARGO_FUZZ_VERSION} into .cache/tools");
    cmd::run(
        Command::new(env!("CARGO"))
            .current_dir(root())
            .args(["install", "cargo-fuzz", "--locked", "--version"])
            .arg(CARGO_FUZZ_VERSION)
            .arg("--root")
            .arg(root().join(".cache/tools")),
    )
}

fn write_seed(dir: &Path, name: &str, data: &[u8]) -> Result<()> {
    std::fs::write(dir.join(name), data).with_context(|| format!("writing seed {name}"))
}

fn files_in(dir: &Path, ext: &str) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(dir)
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|e| e == ext))
        .collect();
    v.sort();
    v
}

/// Every record kind, in both byte orders, with the optional fields flagged valid: the
/// records a probe would write, from the library's own encoder.
fn abi_records() -> Result<Vec<(String, Vec<u8>)>> {
    use std::sync::Arc;
    use tracer::model::{encode_record, Allocator, Body, Endian, Event, LockObs, LockSeen, Task};
    const OPEN: u64 = 0xffff_ffff_c000_1000;
    const MDEV: u64 = 0xffff_8880_1234_5600;
    let addresses = |name: &str| match name {
        "vfio_ap_mdev_open_device" => Some(OPEN),
        "vfio_ap_mdev_set_migration_state" => Some(OPEN + 0x100),
        "vfio_ap_release_mig_data" => Some(OPEN + 0x200),
        _ => None,
    };
    let func: Arc<str> = Arc::from("vfio_ap_mdev_open_device");
    let bodies = [
        (
            "entry",
            Body::Enter {
                func: func.clone(),
                args: [MDEV, 1, 2, 3].into(),
                field: Some(0xffff_8880_0000_0040),
                lock: LockObs::HeldByOther {
                    owner: 0xffff_8880_dead_0000,
                },
                locks: vec![LockSeen {
                    lock: Arc::from("lock#4"),
                    obs: LockObs::HeldByCurrent,
                }],
                untrusted: false,
                stack: Vec::new(),
            },
            Some(7),
        ),
        (
            "exit",
            Body::Exit {
                func,
                ret: (-22i64) as u64,
                arg0: MDEV,
                duration_ns: Some(12_345),
                field: Some(0),
            },
            None,
        ),
        (
            "alloc",
            Body::Alloc {
                ptr: 0xffff_8880_0000_0040,
                bytes: 96,
                site: Some(Arc::from("vfio_ap_mdev_set_migration_state")),
                allocator: Allocator::Kvmalloc,
                stack: Vec::new(),
            },
            Some(9),
        ),
        (
            "free",
            Body::Free {
                ptr: 0xffff_8880_0000_0040,
                site: Some(Arc::from("vfio_ap_release_mig_data")),
                allocator: Allocator::Kmalloc,
            },
            None,
        ),
        (
            "name",
            Body::MdevName {
                mdev: MDEV,
                uuid: Arc::from("0000000b-0000-4000-8000-00000000000b"),
            },
            None,
        ),
    ];
    let mut out = Vec::new();
    for (endian, e) in [(Endian::Little, "le"), (Endian::Big, "be")] {
        for (kind, body, stack_id) in &bodies {
            let ev = Event {
                seq: 0,
                ts_ns: 123_456_789,
                cpu: 1,
                task: Task {
                    pid: 4242,
                    tid: 4243,
                    comm: Arc::from("qemu"),
                },
                body: body.clone(),
            };
            let raw = encode_record(&ev, *stack_id, endian, &addresses)?;
            out.push((format!("{kind}-{e}"), raw));
        }
    }
    Ok(out)
}

/// Writes the seeds of every target under `dir/<target>/` (regenerated each run).
fn write_seeds(dir: &Path) -> Result<()> {
    let root = root();
    let _ = std::fs::remove_dir_all(dir);
    for t in TARGETS {
        std::fs::create_dir_all(dir.join(t))?;
    }
    let mut recordings = files_in(&root.join("samples"), "aptr");
    recordings.extend(files_in(&root.join("tracer/tests/fixtures"), "aptr"));
    for p in &recordings {
        let name = p.file_name().unwrap().to_string_lossy().to_string();
        let data = std::fs::read(p)?;
        write_seed(&dir.join("recording"), &name, &data)?;
        // 'F': the target recomputes CRCs, so mutations reach the decoders behind them.
        let mut f = b"F".to_vec();
        f.extend_from_slice(&data);
        write_seed(&dir.join("recording"), &format!("F-{name}"), &f)?;
        let r = Recording::parse(data.into(), &name)
            .map_err(|e| anyhow::anyhow!("seed {name}: {e}"))?;
        for (i, c) in r.chunks.iter().enumerate() {
            let mut seed = c.count.to_le_bytes().to_vec();
            seed.extend_from_slice(&c.payload);
            write_seed(&dir.join("chunk"), &format!("{name}-{i}"), &seed)?;
        }
        let mut w = Vec::new();
        let events = r.events(&mut w);
        // The shipped files are format 1.0: the same events written by this version's
        // writer give the recording target files that end with an end marker.
        let mut current = Writer::new(Vec::new(), &r.header)?;
        for e in &events {
            current.push(e)?;
        }
        let current = current.finish()?;
        write_seed(&dir.join("recording"), &format!("current-{name}"), &current)?;
        let mut f = b"F".to_vec();
        f.extend_from_slice(&current);
        write_seed(&dir.join("recording"), &format!("F-current-{name}"), &f)?;
        let mut jl = Vec::new();
        tracer::jsonl::write_jsonl(&mut jl, &r.header, events)?;
        write_seed(&dir.join("jsonl"), &format!("{name}.jsonl"), &jl)?;
        // The same events in the order a second CPU's buffer might deliver them: a swap of
        // each neighbouring pair, for the reorder window to put back.
        let mut swapped = Vec::new();
        let mut events = tracer::jsonl::read_jsonl(&jl[..], &name)?.events;
        events.chunks_mut(2).for_each(|p| p.reverse());
        tracer::jsonl::write_jsonl(&mut swapped, &r.header, events)?;
        write_seed(&dir.join("jsonl_order"), &format!("{name}.jsonl"), &jl)?;
        write_seed(
            &dir.join("jsonl_order"),
            &format!("swapped-{name}.jsonl"),
            &swapped,
        )?;
    }
    let mut jsonl = files_in(&root.join("tracer/tests/scenarios"), "jsonl");
    jsonl.extend(files_in(&root.join("tracer/tests/fixtures"), "jsonl"));
    for p in &jsonl {
        let name = p.file_name().unwrap().to_string_lossy().to_string();
        write_seed(&dir.join("jsonl"), &name, &std::fs::read(p)?)?;
        write_seed(&dir.join("jsonl_order"), &name, &std::fs::read(p)?)?;
    }
    for (name, data) in abi_records()? {
        write_seed(&dir.join("abi"), &name, &data)?;
    }
    Ok(())
}

/// The last `n` lines of a log, for a failure message.
fn tail(path: &Path, n: usize) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

pub fn run(args: FuzzArgs) -> Result<()> {
    let root = root();
    let fuzz_dir = root.join("fuzz");
    let targets: Vec<String> = if args.targets.is_empty() {
        TARGETS.iter().map(|s| s.to_string()).collect()
    } else {
        for t in &args.targets {
            if !TARGETS.contains(&t.as_str()) {
                bail!(
                    "unknown fuzz target {t}; the targets are {}",
                    TARGETS.join(", ")
                );
            }
        }
        args.targets.clone()
    };
    ensure_cargo_fuzz()?;
    // cargo-fuzz needs `-Zsanitizer`: the pinned nightly. Where it cannot be had (no
    // network to the toolchain server), stable with RUSTC_BOOTSTRAP=1 and no sanitizer.
    let nightly = toolchain::ebpf_nightly()?;
    let (toolchain, bootstrap) = match provision::ensure_toolchain(&nightly, &[], &[]) {
        Ok(()) => (nightly, false),
        Err(e) => {
            eprintln!(
                "xtask: warning: {nightly} cannot be installed ({e:#}); fuzzing with the \
                 stable toolchain (RUSTC_BOOTSTRAP=1) and no sanitizer"
            );
            (toolchain::stable()?, true)
        }
    };
    let sanitizer = if args.no_sanitizer || bootstrap {
        "none"
    } else {
        "address"
    };
    let cargo_fuzz = |sub: &str| {
        let mut c = Command::new("cargo");
        c.current_dir(&fuzz_dir)
            .env("PATH", path_with_tools())
            .env_remove("RUSTUP_TOOLCHAIN")
            .env_remove("CARGO")
            .arg(format!("+{toolchain}"))
            .args(["fuzz", sub, "--sanitizer", sanitizer])
            // Overflow checks on, as in the debug build `cargo run` makes: an integer
            // overflow on decoded values is a crash here too.
            .arg("--debug-assertions");
        if bootstrap {
            c.env("RUSTC_BOOTSTRAP", "1");
        }
        c
    };

    let t0 = Instant::now();
    cmd::run(&mut cargo_fuzz("build"))?;
    eprintln!("xtask: fuzz targets built in {:.0?}", t0.elapsed());

    let seeds = fuzz_dir.join("target/seeds");
    write_seeds(&seeds)?;
    let logs = fuzz_dir.join("target/logs");
    std::fs::create_dir_all(&logs)?;

    let mut failed = Vec::new();
    for t in &targets {
        let corpus = fuzz_dir.join("corpus").join(t);
        std::fs::create_dir_all(&corpus)?;
        let log = logs.join(format!("{t}.log"));
        let log_file = std::fs::File::create(&log)?;
        let mut cmd = cargo_fuzz("run");
        cmd.arg(t)
            .arg(&corpus)
            .arg(seeds.join(t))
            .arg("--")
            .arg(format!("-max_total_time={}", args.seconds))
            .arg(format!("-rss_limit_mb={}", args.rss_limit_mb))
            .arg(format!("-malloc_limit_mb={}", args.rss_limit_mb))
            .arg(format!("-timeout={}", args.timeout))
            .arg("-print_final_stats=1")
            // Whole JSON-lines seeds take ~10 ms an input under ASan: mutate short ones.
            .args(t.starts_with("jsonl").then_some("-max_len=4096"))
            .stdout(log_file.try_clone()?)
            .stderr(log_file);
        eprintln!(
            "xtask: fuzzing {t} for {} s (log: {})",
            args.seconds,
            log.display()
        );
        let status = cmd
            .status()
            .with_context(|| format!("running cargo fuzz run {t}"))?;
        let stats: Vec<String> = std::fs::read_to_string(&log)
            .unwrap_or_default()
            .lines()
            .filter(|l| {
                l.starts_with("stat::number_of_executed_units")
                    || l.starts_with("stat::peak_rss_mb")
                    || l.starts_with("stat::new_units_added")
            })
            .map(|l| l.trim_start_matches("stat::").to_string())
            .collect();
        if status.success() {
            eprintln!("xtask: fuzz {t}: clean ({})", stats.join(", "));
        } else {
            eprintln!(
                "xtask: fuzz {t}: FAILED ({status}); the input is under fuzz/artifacts/{t}/; \
                 replay it with `cd fuzz && cargo +{toolchain} fuzz run {t} <file>`\n{}",
                tail(&log, 60)
            );
            failed.push(t.clone());
        }
    }
    if !failed.is_empty() {
        bail!("fuzz targets failed: {}", failed.join(", "));
    }
    eprintln!(
        "xtask: {} fuzz target(s) ran clean for {} s each ({:.0?} in all)",
        targets.len(),
        args.seconds,
        t0.elapsed()
    );
    Ok(())
}
