//! The `aptrace` binary: wiring only. The command line is in [`args`], what each subcommand
//! does with the library's results in [`commands`].

mod args;
mod commands;
mod output;

use std::process::ExitCode;

use clap::Parser;

use args::{Cli, Command, ExportFormat, LiveArgs, PrintFormat};

fn main() -> ExitCode {
    let cli = Cli::parse();
    match &cli.command {
        // The UI owns the terminal: logs go to --log FILE or nowhere.
        Command::Tui { log, .. } | Command::Live(LiveArgs { tui: true, log, .. }) => {
            if let Err(e) = tracer::tui::init_logging(log.as_deref()) {
                eprintln!("aptrace: error: {}", error_text(&e.into()));
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
        } => commands::report(&files, format, output.as_deref(), profile.as_deref(), force),
        Command::Export {
            file,
            format: ExportFormat::Jsonl,
            output,
            force,
        } => commands::export_jsonl(&file, output.as_deref(), force),
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
        .map(|_| ExitCode::SUCCESS)
        .map_err(anyhow::Error::from),
        Command::Export {
            file,
            format: ExportFormat::ChromeTrace,
            output,
            force,
        } => commands::export_chrome(&file, output.as_deref(), force),
        Command::Tui {
            file,
            peer,
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
                peer,
            },
        )
        .map(|_| ExitCode::SUCCESS)
        .map_err(anyhow::Error::from),
        Command::Check { target, format } => commands::check(&target, format == PrintFormat::Json),
        Command::Live(args) => commands::live(args),
        Command::Profile { output, force } => commands::profile(output.as_deref(), force),
        Command::Completions { shell } => commands::completions(shell),
        Command::Man { dir } => commands::man(&dir),
        Command::Import {
            file,
            output,
            force,
        } => commands::import(&file, &output, force),
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("aptrace: error: {}", error_text(&e));
            ExitCode::from(2)
        }
    }
}

/// The error and its causes, each said once (anyhow's `{:#}` would repeat the OS errors
/// that library errors already quote).
fn error_text(e: &anyhow::Error) -> String {
    tracer::error_text(e.as_ref())
}
