//! The `aptrace` binary: wiring only.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use tracer::commands::{self, ReportFormat};
#[allow(unused_imports)]
use tracer::live::sink::{GuestFilter, LiveFormat};

#[derive(Parser)]
#[command(
    name = "aptrace",
    version,
    about = "eBPF tracer and leak auditor for the s390 vfio_ap driver"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
enum ExportFormat {
    Jsonl,
    /// Trace Event Format JSON for Perfetto and chrome://tracing.
    ChromeTrace,
}

#[derive(Subcommand)]
enum Command {
    /// Audit recordings (.aptr) or JSON-lines files and print a report.
    /// Exit status: 0 no findings, 1 findings, 2 usage or input error.
    Report {
        #[arg(required = true)]
        files: Vec<PathBuf>,
        #[arg(long, value_enum, default_value = "text")]
        format: ReportFormat,
        /// Write the report here (mode 0600) instead of standard output.
        #[arg(long, short)]
        output: Option<PathBuf>,
        /// Audit with this profile instead of the one stored in the recording.
        #[arg(long)]
        profile: Option<PathBuf>,
        /// Overwrite the output file if it exists.
        #[arg(long)]
        force: bool,
    },
    /// Convert a recording to another format.
    Export {
        file: PathBuf,
        #[arg(long, value_enum)]
        format: ExportFormat,
        #[arg(long, short)]
        output: Option<PathBuf>,
        #[arg(long)]
        force: bool,
    },
    /// Replay a recording headless, with its own timing, and serve Prometheus metrics.
    Replay {
        file: PathBuf,
        /// Serve /metrics here: HOST:PORT, or :PORT / PORT for 127.0.0.1.
        #[arg(long, value_name = "ADDR", required = true)]
        metrics: String,
        /// Pace: 1 = as recorded, 10 = ten times faster, 0 = as fast as possible.
        #[arg(long, default_value_t = 1.0)]
        speed: f64,
        /// Start over at the end, for ever (counters keep counting).
        #[arg(long = "loop")]
        looping: bool,
        /// Without --loop: exit at the end instead of serving the final state.
        #[arg(long, conflicts_with = "looping")]
        exit_when_done: bool,
        /// Audit with this profile instead of the one stored in the recording.
        #[arg(long)]
        profile: Option<PathBuf>,
    },
    /// Replay a recording (or JSON lines) in the terminal UI.
    Tui {
        file: PathBuf,
        /// Replay speed: 0.25 to 64 times the recorded pace.
        #[arg(long, default_value_t = 1.0)]
        speed: f64,
        /// Start paused (s steps one event, p plays).
        #[arg(long)]
        paused: bool,
        /// Audit with this profile instead of the one stored in the recording.
        #[arg(long)]
        profile: Option<PathBuf>,
        /// Write log messages here (nothing is written to the terminal while the UI is up).
        #[arg(long)]
        log: Option<PathBuf>,
        /// Serve Prometheus metrics of the replay at /metrics on this address.
        #[arg(long, value_name = "ADDR")]
        metrics: Option<String>,
    },
    /// Preflight: can live tracing run on this machine, and how degraded?
    /// Exit status: 0 it can (possibly degraded), 2 it cannot.
    Check {
        #[command(flatten)]
        target: TargetArgs,
        #[arg(long, value_enum, default_value = "text")]
        format: LiveFormat,
    },
    /// Attach to the running kernel, print findings as they happen and a summary at exit
    /// (SIGINT/SIGTERM or --duration). Exit status as `report`.
    Live(LiveArgs),
    /// Turn JSON lines (one event per line) into a recording.
    Import {
        file: PathBuf,
        #[arg(long, short, required = true)]
        output: PathBuf,
        #[arg(long)]
        force: bool,
    },
}

#[derive(clap::Args)]
struct LiveArgs {
    /// Write a recording (.aptr) as events arrive.
    #[arg(long)]
    record: Option<PathBuf>,
    /// Also write the final JSON report to this file.
    #[arg(long)]
    json: Option<PathBuf>,
    #[arg(long, value_enum, default_value = "text")]
    format: LiveFormat,
    /// Stop after this long (30s, 500ms, 5m).
    #[arg(long, value_parser = commands::parse_duration)]
    duration: Option<std::time::Duration>,
    /// Only report mdevs opened by this guest (QEMU pid or `-name guest=` name).
    #[arg(long)]
    guest: Option<String>,
    /// Hook the allocator too (kmalloc/kmem_cache raw tracepoints, kvmalloc, vfree).
    #[arg(long)]
    all_allocations: bool,
    /// Ring buffer size in bytes (rounded up to a power of two).
    #[arg(long, default_value_t = 4 << 20)]
    ring_buffer_size: u32,
    /// Overwrite the recording if it exists.
    #[arg(long)]
    force: bool,
    /// Show the terminal UI instead of printing findings (the summary is printed at exit).
    #[arg(long)]
    tui: bool,
    /// Write log messages here while the terminal UI is up.
    #[arg(long, requires = "tui")]
    log: Option<PathBuf>,
    /// Serve Prometheus metrics at /metrics on this address (HOST:PORT, or :PORT for 127.0.0.1).
    #[arg(long, value_name = "ADDR")]
    metrics: Option<String>,
    #[command(flatten)]
    target: TargetArgs,
    /// Benchmark floor: only a do-nothing program on the allocator tracepoints, until
    /// SIGINT (`cargo xtask bench`, figure (c)).
    #[arg(long, hide = true)]
    noop_floor: bool,
}

/// Which module and profile, and values that replace what BTF or kallsyms cannot give.
#[derive(clap::Args, Clone, Debug)]
struct TargetArgs {
    /// Kernel module to trace (default: the profile's, vfio_ap).
    #[arg(long)]
    module: Option<String>,
    /// Profile file (TOML) instead of the built-in vfio_ap profile.
    #[arg(long)]
    profile: Option<PathBuf>,
    /// Struct member offset where BTF is absent: ap_matrix_dev.mdevs_lock=N,
    /// ap_matrix_mdev.mig_data=N, mutex.owner=N (repeatable; N decimal or 0x hex).
    #[arg(long = "offset", value_name = "STRUCT.MEMBER=N", value_parser = parse_offset)]
    offsets: Vec<(String, u64)>,
    /// Address of the `matrix_dev` pointer variable (when kallsyms lists no module variables
    /// and the module file cannot be found).
    #[arg(long, value_parser = parse_hex)]
    matrix_dev_addr: Option<u64>,
    /// Mask of the mutex owner word (default 0xfffffffffffffff8; PREEMPT_RT 0xfffffffffffffffe).
    #[arg(long, value_parser = parse_hex)]
    owner_mask: Option<u64>,
    /// The module's .ko (for its symbol table), when not under /lib/modules/$(uname -r).
    #[arg(long)]
    module_file: Option<PathBuf>,
    /// Self-test: treat START-END as the module's text (allocator probes attach without
    /// the module; use with --all-allocations).
    #[arg(long, hide = true, value_parser = tracer::live::resolve::parse_text_range)]
    text_range: Option<(u64, u64)>,
}

fn parse_offset(s: &str) -> Result<(String, u64), String> {
    tracer::live::resolve::parse_offset_override(s)
}

fn parse_hex(s: &str) -> Result<u64, String> {
    tracer::model::hex_u64::parse(s)
}

impl TargetArgs {
    fn options(&self) -> commands::TargetOptions {
        commands::TargetOptions {
            module: self.module.clone(),
            profile: self.profile.clone(),
            overrides: tracer::live::resolve::Overrides {
                offsets: self.offsets.iter().cloned().collect(),
                matrix_dev_addr: self.matrix_dev_addr,
                owner_mask: self.owner_mask,
                module_file: self.module_file.clone(),
                text_range: self.text_range,
            },
        }
    }
}

fn live(args: LiveArgs) -> anyhow::Result<ExitCode> {
    #[cfg(all(feature = "live", target_os = "linux"))]
    {
        if args.noop_floor {
            return Ok(ExitCode::from(tracer::live::agent::run_noop_floor()?));
        }
        let t = args.target.options();
        let (profile, module) = t.resolve()?;
        let opts = tracer::live::agent::LiveOptions {
            record: args.record,
            json: args.json,
            format: args.format,
            duration: args.duration,
            guest: args.guest.as_deref().map(GuestFilter::parse),
            module,
            profile,
            all_allocations: args.all_allocations,
            ring_buffer_size: args.ring_buffer_size,
            force: args.force,
            overrides: t.overrides,
            metrics: args.metrics,
            forward: None,
            stop: None,
        };
        // Before the terminal UI takes the screen: warnings, or an error naming the fix.
        tracer::live::agent::gate(&opts)?;
        let code = if args.tui {
            tracer::live::ui::run(opts)?
        } else {
            tracer::live::agent::run(opts)?
        };
        Ok(ExitCode::from(code))
    }
    #[cfg(not(all(feature = "live", target_os = "linux")))]
    {
        let _ = args;
        let why = tracer::live::live_support().err().unwrap_or_default();
        anyhow::bail!("{why}; build it with `cargo xtask build`")
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match &cli.command {
        // The UI owns the terminal: logs go to --log FILE or nowhere.
        Command::Tui { log, .. } | Command::Live(LiveArgs { tui: true, log, .. }) => {
            if let Err(e) = tracer::tui::init_logging(log.as_deref()) {
                eprintln!("aptrace: error: {e:#}");
                return ExitCode::from(2);
            }
        }
        _ => env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("warn"))
            .format_target(false)
            .init(),
    }
    let result = match cli.command {
        Command::Report {
            files,
            format,
            output,
            profile,
            force,
        } => commands::report(&files, format, output.as_deref(), profile.as_deref(), force).map(
            |found| {
                if found {
                    ExitCode::from(1)
                } else {
                    ExitCode::SUCCESS
                }
            },
        ),
        Command::Export {
            file,
            format: ExportFormat::Jsonl,
            output,
            force,
        } => commands::export_jsonl(&file, output.as_deref(), force).map(|_| ExitCode::SUCCESS),
        Command::Replay {
            file,
            metrics,
            speed,
            looping,
            exit_when_done,
            profile,
        } => tracer::replay::replay(&tracer::replay::ReplayOptions {
            file,
            metrics,
            speed,
            looping,
            exit_when_done,
            profile,
        })
        .map(|_| ExitCode::SUCCESS),
        Command::Export {
            file,
            format: ExportFormat::ChromeTrace,
            output,
            force,
        } => tracer::export::chrome::export(&file, output.as_deref(), force)
            .map(|_| ExitCode::SUCCESS),
        Command::Tui {
            file,
            speed,
            paused,
            profile,
            log: _,
            metrics,
        } => tracer::tui::replay(
            &file,
            &tracer::tui::ReplayOptions {
                speed,
                paused,
                profile,
                metrics,
            },
        )
        .map(|_| ExitCode::SUCCESS),
        Command::Check { target, format } => {
            commands::check(&target.options(), format == LiveFormat::Json).map(ExitCode::from)
        }
        Command::Live(args) => live(args),
        Command::Import {
            file,
            output,
            force,
        } => commands::import(&file, &output, force).map(|_| ExitCode::SUCCESS),
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("aptrace: error: {e:#}");
            ExitCode::from(2)
        }
    }
}
