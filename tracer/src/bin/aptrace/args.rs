//! The command line: every subcommand, flag and format, as clap parses them.

use std::path::PathBuf;

use clap::{Parser, Subcommand};
use tracer::live::resolve::TargetOptions;
use tracer::live::sink::LiveFormat;

/// Report formats.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum ReportFormat {
    Text,
    Json,
    Markdown,
}

/// How `check` and `live` print.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum PrintFormat {
    Text,
    Json,
}

impl From<PrintFormat> for LiveFormat {
    fn from(f: PrintFormat) -> LiveFormat {
        match f {
            PrintFormat::Text => LiveFormat::Text,
            PrintFormat::Json => LiveFormat::Json,
        }
    }
}

#[derive(Parser)]
#[command(
    name = "aptrace",
    version,
    about = "eBPF tracer and leak auditor for the s390 vfio_ap driver"
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum ExportFormat {
    Jsonl,
    /// Trace Event Format JSON for Perfetto and chrome://tracing.
    ChromeTrace,
}

#[derive(Subcommand)]
pub enum Command {
    /// Audit recordings (.aptr) or JSON-lines files and print a report.
    ///
    /// Exit status: 0 every input complete and nothing found; 1 a finding other than
    /// events-lost; 2 bad usage or an unreadable input (missing, empty, no readable event);
    /// 3 nothing found but an input incomplete (damaged, no end marker, events lost).
    #[command(after_help = "Examples:
  aptrace report samples/leak.aptr
  aptrace report src.aptr dst.aptr --format json -o report.json
  aptrace export run.aptr --format jsonl | aptrace report -
  aptrace report run.aptr >/dev/null; [ $? -eq 1 ] && echo 'findings'")]
    Report {
        /// Recordings (.aptr) or JSON-lines files; each is audited on its own; `-` reads
        /// standard input.
        #[arg(required = true)]
        files: Vec<PathBuf>,
        /// text for people, json for programs (docs/report-schema.md), markdown for tickets.
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
    #[command(after_help = "Examples:
  aptrace export run.aptr --format jsonl -o run.jsonl
  aptrace export run.aptr --format chrome-trace -o run.trace.json   # open in ui.perfetto.dev")]
    Export {
        /// The recording (or JSON-lines file) to convert.
        file: PathBuf,
        /// jsonl: one event per line (docs/recording-format.md); chrome-trace: a timeline.
        #[arg(long, value_enum)]
        format: ExportFormat,
        /// Write here (mode 0600) instead of standard output.
        #[arg(long, short)]
        output: Option<PathBuf>,
        /// Overwrite the output file if it exists.
        #[arg(long)]
        force: bool,
    },
    /// Replay a recording headless, with its own timing, and serve Prometheus metrics.
    #[command(after_help = "Examples:
  aptrace replay run.aptr --metrics :9464
  aptrace replay run.aptr --metrics 127.0.0.1:9464 --speed 10 --loop")]
    Replay {
        /// The recording (or JSON-lines file) to replay.
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
    #[command(after_help = "Examples:
  aptrace tui samples/leak.aptr
  aptrace tui run.aptr --paused --log tui.log   # s steps one event, p plays, q quits
  aptrace tui source.aptr destination.aptr      # 5: the Migrations view pairs the two hosts")]
    Tui {
        /// The recording (or JSON-lines file) to replay.
        file: PathBuf,
        /// The other host's recording of the same migrations: audited on its own, its
        /// sessions shown beside FILE's and paired with them in the Migrations view.
        peer: Option<PathBuf>,
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
    #[command(after_help = "Examples:
  sudo aptrace check
  sudo aptrace check --format json
  sudo aptrace check --offset ap_matrix_dev.mdevs_lock=0x50 --module-file vfio_ap.ko")]
    Check {
        #[command(flatten)]
        target: TargetArgs,
        /// text: one row per feature with the fix; json: the same rows for programs.
        #[arg(long, value_enum, default_value = "text")]
        format: PrintFormat,
    },
    /// Attach to the running kernel, print findings as they happen and a summary at exit
    /// (SIGINT/SIGTERM or --duration). Exit status as `report`.
    #[command(after_help = "Examples:
  sudo aptrace live --record run.aptr
  sudo aptrace live --tui --log live.log --record run.aptr
  sudo aptrace live --guest guest1 --duration 10m --json report.json --metrics :9464
  sudo aptrace live --all-allocations --record run.aptr")]
    Live(LiveArgs),
    /// Turn JSON lines (one event per line) into a recording.
    #[command(after_help = "Examples:
  aptrace import events.jsonl -o run.aptr
  aptrace export run.aptr --format jsonl -o e.jsonl && aptrace import e.jsonl -o again.aptr --force")]
    Import {
        /// The JSON-lines file (docs/recording-format.md).
        file: PathBuf,
        /// The recording to write (mode 0600).
        #[arg(long, short, required = true)]
        output: PathBuf,
        /// Overwrite the output file if it exists.
        #[arg(long)]
        force: bool,
    },
    /// Print the built-in vfio_ap profile as a TOML file to edit and pass back with
    /// --profile (docs/profile.md).
    #[command(after_help = "Examples:
  aptrace profile -o my-profile.toml
  sudo aptrace live --profile my-profile.toml --record run.aptr
  aptrace report --profile my-profile.toml run.aptr")]
    Profile {
        /// Write the profile here (mode 0600) instead of standard output.
        #[arg(long, short)]
        output: Option<PathBuf>,
        /// Overwrite the output file if it exists.
        #[arg(long)]
        force: bool,
    },
    /// Print shell completions for SHELL (bash, zsh, fish, elvish, powershell).
    #[command(after_help = "Examples:
  aptrace completions bash > /etc/bash_completion.d/aptrace
  aptrace completions zsh > \"${fpath[1]}/_aptrace\"")]
    Completions {
        /// The shell to complete for.
        shell: clap_complete::Shell,
    },
    /// Write one man page per command into DIR (`cargo xtask man`).
    #[command(hide = true)]
    Man {
        /// The directory to write aptrace.1, aptrace-report.1, ... into.
        dir: PathBuf,
    },
}

#[derive(clap::Args)]
pub struct LiveArgs {
    /// Write a recording (.aptr) as events arrive.
    #[arg(long)]
    pub record: Option<PathBuf>,
    /// Also write the final JSON report to this file.
    #[arg(long)]
    pub json: Option<PathBuf>,
    /// text: findings and the summary for people; json: one finding per line, then the
    /// JSON report.
    #[arg(long, value_enum, default_value = "text")]
    pub format: PrintFormat,
    /// Stop after this long (30s, 500ms, 5m).
    #[arg(long, value_parser = parse_duration)]
    pub duration: Option<std::time::Duration>,
    /// Limit the run to the devices this guest opened (QEMU pid or `-name guest=` name):
    /// printed findings, the end report and, through the recording's header, every report
    /// of the recording (its migration sessions too).
    #[arg(long)]
    pub guest: Option<String>,
    /// Hook the allocator too (kmalloc/kmem_cache raw tracepoints, kvmalloc, vfree).
    #[arg(long)]
    pub all_allocations: bool,
    /// Ring buffer size in bytes (rounded up to a power of two).
    #[arg(long, default_value_t = 4 << 20)]
    pub ring_buffer_size: u32,
    /// Overwrite the recording if it exists.
    #[arg(long)]
    pub force: bool,
    /// Show the terminal UI instead of printing findings (the summary is printed at exit).
    #[arg(long)]
    pub tui: bool,
    /// Write log messages here while the terminal UI is up.
    #[arg(long, requires = "tui")]
    pub log: Option<PathBuf>,
    /// Serve Prometheus metrics at /metrics on this address (HOST:PORT, or :PORT for 127.0.0.1).
    #[arg(long, value_name = "ADDR")]
    pub metrics: Option<String>,
    #[command(flatten)]
    pub target: TargetArgs,
    /// Benchmark floor: only a do-nothing program on the allocator tracepoints, until
    /// SIGINT (`cargo xtask bench`, figure (c)).
    #[arg(long, hide = true)]
    pub noop_floor: bool,
}

/// Which module and profile, and values that replace what BTF or kallsyms cannot give.
#[derive(clap::Args, Clone, Debug)]
pub struct TargetArgs {
    /// Kernel module to trace (default: the profile's, vfio_ap).
    #[arg(long)]
    pub module: Option<String>,
    /// Profile file (TOML) instead of the built-in vfio_ap profile.
    #[arg(long)]
    pub profile: Option<PathBuf>,
    /// Struct member offset where BTF is absent: ap_matrix_dev.mdevs_lock=N,
    /// ap_matrix_mdev.mig_data=N, mutex.owner=N (repeatable; N decimal or 0x hex). Only the
    /// members the profile reads are accepted: another name is an error listing them.
    #[arg(long = "offset", value_name = "STRUCT.MEMBER=N", value_parser = parse_offset)]
    pub offsets: Vec<(String, u64)>,
    /// Address of the `matrix_dev` pointer variable (when kallsyms lists no module variables
    /// and the module file cannot be found).
    #[arg(long, value_parser = parse_hex)]
    pub matrix_dev_addr: Option<u64>,
    /// Mask of the mutex owner word (default 0xfffffffffffffff8; PREEMPT_RT 0xfffffffffffffffe).
    #[arg(long, value_parser = parse_hex)]
    pub owner_mask: Option<u64>,
    /// The module's .ko (for its symbol table), when not under /lib/modules/$(uname -r).
    #[arg(long)]
    pub module_file: Option<PathBuf>,
    /// Self-test: treat START-END as the module's text (allocator probes attach without
    /// the module; use with --all-allocations).
    #[arg(long, hide = true, value_parser = tracer::live::resolve::parse_text_range)]
    pub text_range: Option<(u64, u64)>,
    /// Read the owner words of the profile's other declared locks at the entries of
    /// functions that take a lock (lock-order edges by the owner word); `off` reads only
    /// mdevs_lock, to measure what the reads cost; `auto` reads them on kernels whose
    /// verifier is known to take them (6.12 and later), `on` tries on any kernel (and falls
    /// back, saying so, where the verifier refuses them).
    #[arg(long, value_enum, default_value = "auto", value_name = "auto|on|off")]
    pub lock_reads: LockReads,
}

/// `--lock-reads`.
#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum LockReads {
    Auto,
    On,
    Off,
}

fn parse_offset(s: &str) -> Result<(String, u64), String> {
    tracer::live::resolve::parse_offset_override(s)
}

fn parse_hex(s: &str) -> Result<u64, String> {
    tracer::model::hex_u64::parse(s)
}

impl TargetArgs {
    pub fn options(&self) -> TargetOptions {
        TargetOptions {
            module: self.module.clone(),
            profile: self.profile.clone(),
            overrides: tracer::live::resolve::Overrides {
                offsets: self.offsets.iter().cloned().collect(),
                matrix_dev_addr: self.matrix_dev_addr,
                owner_mask: self.owner_mask,
                module_file: self.module_file.clone(),
                text_range: self.text_range,
                lock_reads_off: self.lock_reads == LockReads::Off,
                lock_reads_auto: self.lock_reads == LockReads::Auto,
            },
        }
    }
}

/// Parses `10s`, `500ms`, `2m`, `1h` or plain seconds.
pub fn parse_duration(s: &str) -> Result<std::time::Duration, String> {
    let s = s.trim();
    let (num, mult_ms) = if let Some(n) = s.strip_suffix("ms") {
        (n, 1.0)
    } else if let Some(n) = s.strip_suffix('s') {
        (n, 1e3)
    } else if let Some(n) = s.strip_suffix('m') {
        (n, 60e3)
    } else if let Some(n) = s.strip_suffix('h') {
        (n, 3600e3)
    } else {
        (s, 1e3)
    };
    let v: f64 = num
        .trim()
        .parse()
        .map_err(|_| format!("bad duration {s:?} (examples: 30s, 500ms, 5m)"))?;
    if !(v.is_finite() && v >= 0.0) {
        return Err(format!("bad duration {s:?}"));
    }
    Ok(std::time::Duration::from_millis((v * mult_ms) as u64))
}

#[cfg(test)]
mod tests {
    use clap::CommandFactory;

    use super::Cli;

    /// Every argument of every visible command says what it is for, and every visible
    /// subcommand's help ends with examples.
    #[test]
    fn every_argument_has_help_and_every_command_examples() {
        let cli = Cli::command();
        cli.clone().debug_assert();
        let mut missing = Vec::new();
        for sub in cli.get_subcommands().filter(|s| !s.is_hide_set()) {
            if sub.get_name() == "help" {
                continue;
            }
            let examples = sub
                .get_after_help()
                .map(|h| h.to_string().starts_with("Examples:"))
                .unwrap_or(false);
            if !examples {
                missing.push(format!("{}: no examples", sub.get_name()));
            }
            for arg in sub.get_arguments().filter(|a| !a.is_hide_set()) {
                if arg.get_help().is_none() && arg.get_long_help().is_none() {
                    missing.push(format!("{} {}", sub.get_name(), arg.get_id()));
                }
            }
        }
        assert!(missing.is_empty(), "without help: {missing:?}");
    }
}
