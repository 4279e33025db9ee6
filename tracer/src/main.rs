//! The `aptrace` binary: wiring only.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use tracer::commands::{self, ReportFormat};

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
    },
    /// Turn JSON lines (one event per line) into a recording.
    Import {
        file: PathBuf,
        #[arg(long, short, required = true)]
        output: PathBuf,
        #[arg(long)]
        force: bool,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match &cli.command {
        // The UI owns the terminal: logs go to --log FILE or nowhere.
        Command::Tui { log, .. } => {
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
        } => tracer::tui::replay(
            &file,
            &tracer::tui::ReplayOptions {
                speed,
                paused,
                profile,
            },
        )
        .map(|_| ExitCode::SUCCESS),
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
