//! Each subcommand: the library does the work, these functions say where its results go and
//! what the exit status is.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::Result;
use tracer::profile::Profile;

use crate::args::{LiveArgs, ReportFormat, TargetArgs};
use crate::output::write_output;

/// `aptrace report`: exit status as [`tracer::report::Report::exit_status`].
pub fn report(
    files: &[PathBuf],
    format: ReportFormat,
    output: Option<&Path>,
    profile: Option<&Path>,
    force: bool,
) -> Result<ExitCode> {
    let profile = profile.map(Profile::load).transpose()?;
    let files: Vec<&Path> = files.iter().map(PathBuf::as_path).collect();
    let report = tracer::offline::audit_files(&files, profile.as_ref())?;
    for w in report.files.iter().flat_map(|f| &f.source.warnings) {
        log::warn!("{w}");
    }
    tracer::offline::require_events(&report)?;
    let text = match format {
        ReportFormat::Text => report.to_text(),
        ReportFormat::Json => report.to_json(),
        ReportFormat::Markdown => report.to_markdown(),
    };
    write_output(output, text.as_bytes(), force)?;
    Ok(ExitCode::from(report.exit_status()))
}

/// `aptrace export FILE --format jsonl`.
pub fn export_jsonl(file: &Path, output: Option<&Path>, force: bool) -> Result<ExitCode> {
    let (bytes, warnings) = tracer::offline::export_jsonl(file)?;
    for w in &warnings {
        log::warn!("{w}");
    }
    write_output(output, &bytes, force)?;
    Ok(ExitCode::SUCCESS)
}

/// `aptrace export FILE --format chrome-trace`.
pub fn export_chrome(file: &Path, output: Option<&Path>, force: bool) -> Result<ExitCode> {
    let (bytes, warnings) = tracer::export::chrome::export_file(file)?;
    for w in &warnings {
        log::warn!("{w}");
    }
    write_output(output, &bytes, force)?;
    Ok(ExitCode::SUCCESS)
}

/// `aptrace import FILE.jsonl -o FILE.aptr`.
pub fn import(file: &Path, output: &Path, force: bool) -> Result<ExitCode> {
    tracer::offline::import(file, output, force)?;
    Ok(ExitCode::SUCCESS)
}

/// `aptrace check`: 0 it can trace (possibly degraded), 2 it cannot.
pub fn check(target: &TargetArgs, json: bool) -> Result<ExitCode> {
    let (text, code) = tracer::live::check::check_host(&target.options(), json)?;
    write_output(None, text.as_bytes(), false)?;
    Ok(ExitCode::from(code))
}

/// `aptrace live`: exit status as `report`.
pub fn live(args: LiveArgs) -> anyhow::Result<ExitCode> {
    #[cfg(all(feature = "live", target_os = "linux"))]
    {
        if args.noop_floor {
            let out = tracer::live::output::Output::Terminal;
            return Ok(ExitCode::from(tracer::live::agent::run_noop_floor(&out)?));
        }
        let t = args.target.options();
        let (profile, module) = t.resolve()?;
        let mut opts = tracer::live::LiveOptions {
            record: args.record,
            format: args.format.into(),
            duration: args.duration,
            guest: args
                .guest
                .as_deref()
                .map(tracer::live::sink::GuestFilter::parse),
            module,
            profile,
            all_allocations: args.all_allocations,
            ring_buffer_size: args.ring_buffer_size,
            force: args.force,
            overrides: t.overrides,
            metrics: args.metrics,
            preflight: None,
        };
        // Before the terminal UI takes the screen: warnings, or an error naming the fix.
        opts.preflight = tracer::live::agent::gate(&opts, &tracer::live::output::Output::Terminal)?;
        let format = opts.format;
        let report = if args.tui {
            tracer::tui::live::run(opts)?
        } else {
            let session = tracer::live::Session::terminal(&opts, Default::default());
            tracer::live::agent::run(opts, session)?
        };
        // `--json FILE` holds the final report, replacing an earlier one; the summary goes
        // to stdout in the chosen format.
        if let Some(path) = &args.json {
            write_output(Some(path), report.to_json().as_bytes(), true)?;
        }
        let summary = match format {
            tracer::live::sink::LiveFormat::Text => report.to_text(),
            tracer::live::sink::LiveFormat::Json => report.to_json(),
        };
        write_output(None, summary.as_bytes(), false)?;
        Ok(ExitCode::from(report.exit_status()))
    }
    #[cfg(not(all(feature = "live", target_os = "linux")))]
    {
        let _ = args;
        let why = tracer::live::live_support().err().unwrap_or_default();
        anyhow::bail!("{why}; build it with `cargo xtask build`")
    }
}

/// `aptrace profile`: the built-in profile, commented, as a file `--profile` takes back.
pub fn profile(output: Option<&Path>, force: bool) -> Result<ExitCode> {
    let text = tracer::profile::Profile::vfio_ap().to_editable_toml();
    write_output(output, text.as_bytes(), force)?;
    Ok(ExitCode::SUCCESS)
}

/// `aptrace completions SHELL`.
pub fn completions(shell: clap_complete::Shell) -> Result<ExitCode> {
    let mut cmd = <crate::args::Cli as clap::CommandFactory>::command();
    let mut out = Vec::new();
    clap_complete::generate(shell, &mut cmd, "aptrace", &mut out);
    write_output(None, &out, false)?;
    Ok(ExitCode::SUCCESS)
}

/// `aptrace man DIR`: aptrace.1 and one page per visible subcommand.
pub fn man(dir: &Path) -> Result<ExitCode> {
    use anyhow::Context;
    std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    let cmd = <crate::args::Cli as clap::CommandFactory>::command();
    let mut pages = vec![("aptrace".to_string(), cmd.clone())];
    for sub in cmd.get_subcommands().filter(|s| !s.is_hide_set()) {
        let name = format!("aptrace-{}", sub.get_name());
        let page = sub.clone().name(name.clone());
        pages.push((name, page));
    }
    for (name, page) in pages {
        let mut out = Vec::new();
        clap_mangen::Man::new(page)
            .render(&mut out)
            .with_context(|| format!("rendering {name}.1"))?;
        let path = dir.join(format!("{name}.1"));
        std::fs::write(&path, out).with_context(|| format!("writing {}", path.display()))?;
    }
    Ok(ExitCode::SUCCESS)
}
