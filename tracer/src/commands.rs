//! The commands that need no kernel: report, export, import.

use std::io::Write;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};

use crate::audit::Auditor;
use crate::input::{load, open, Opened};
use crate::profile::Profile;
use crate::recording::{create_private, Header, Writer};
use crate::report::{FileReport, Report, SourceInfo};

/// Report formats.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum ReportFormat {
    Text,
    Json,
    Markdown,
}

/// The profile to audit a source with: `--profile`, else the one in its header, else the
/// built-in one.
pub fn profile_for(
    header: &Header,
    path: &str,
    explicit: Option<&Profile>,
) -> (Profile, Option<String>) {
    if let Some(p) = explicit {
        return (p.clone(), None);
    }
    if header.profile.is_empty() {
        return (Profile::vfio_ap(), None);
    }
    match Profile::from_toml(&header.profile, &format!("{path} (embedded profile)")) {
        Ok(p) => (p, None),
        Err(e) => (
            Profile::vfio_ap(),
            Some(format!("{e}; auditing with the built-in vfio_ap profile")),
        ),
    }
}

/// Audits one source, streaming its events (a recording is never held as events).
pub fn audit_opened(path: &str, mut opened: Opened, profile: Option<&Profile>) -> FileReport {
    let (profile, warn) = profile_for(&opened.header, path, profile);
    let mut auditor = Auditor::new(profile);
    opened.for_each_event(|e| auditor.ingest(&e));
    let mut warnings = opened.warnings;
    warnings.extend(warn);
    let intact = opened.damage.is_empty();
    let source = SourceInfo::new(
        path,
        &opened.header,
        opened.version,
        opened.damage,
        warnings,
    );
    FileReport::new(source, &auditor, intact)
}

/// `aptrace report`: returns true when findings were raised.
pub fn report(
    files: &[PathBuf],
    format: ReportFormat,
    output: Option<&Path>,
    profile: Option<&Path>,
    force: bool,
) -> Result<bool> {
    let profile = profile.map(Profile::load).transpose()?;
    let mut reports = Vec::new();
    for f in files {
        let fr = audit_opened(&f.display().to_string(), open(f)?, profile.as_ref());
        for w in &fr.source.warnings {
            log::warn!("{w}");
        }
        reports.push(fr);
    }
    let report = Report { files: reports };
    let text = match format {
        ReportFormat::Text => report.to_text(),
        ReportFormat::Json => report.to_json(),
        ReportFormat::Markdown => report.to_markdown(),
    };
    write_output(output, text.as_bytes(), force)?;
    Ok(report.has_findings())
}

/// Writes to a file (0600, no symlinks, no overwrite without --force) or stdout.
pub fn write_output(output: Option<&Path>, bytes: &[u8], force: bool) -> Result<()> {
    match output {
        Some(p) => {
            let mut f = create_private(p, force)?;
            f.write_all(bytes)
                .with_context(|| format!("writing {}", p.display()))?;
        }
        None => {
            let mut out = std::io::stdout().lock();
            if let Err(e) = out.write_all(bytes).and_then(|_| out.flush()) {
                if e.kind() != std::io::ErrorKind::BrokenPipe {
                    return Err(e).context("writing to standard output");
                }
            }
        }
    }
    Ok(())
}

/// `aptrace export FILE --format jsonl`.
pub fn export_jsonl(file: &Path, output: Option<&Path>, force: bool) -> Result<()> {
    let loaded = load(file)?;
    for w in &loaded.warnings {
        log::warn!("{w}");
    }
    let mut buf = Vec::new();
    crate::jsonl::write_jsonl(&mut buf, &loaded.header, loaded.events)?;
    write_output(output, &buf, force)
}

/// `aptrace import FILE.jsonl -o FILE.aptr`.
pub fn import(file: &Path, output: &Path, force: bool) -> Result<()> {
    let f = std::fs::File::open(file).with_context(|| format!("cannot open {}", file.display()))?;
    let j = crate::jsonl::read_jsonl(std::io::BufReader::new(f), &file.display().to_string())?;
    let mut header = j.header.unwrap_or_else(|| Header {
        arch: std::env::consts::ARCH.to_string(),
        module: "vfio_ap".into(),
        profile: Profile::vfio_ap().to_toml(),
        ..Header::default()
    });
    if header.writer.is_empty() {
        header.writer = crate::writer_id();
    }
    let mut seqs: Vec<u64> = j.events.iter().map(|e| e.seq).collect();
    seqs.sort_unstable();
    if seqs.windows(2).any(|w| w[0] == w[1]) {
        bail!(
            "{}: two events have the same seq; seq numbers must be unique",
            file.display()
        );
    }
    let mut w = Writer::create(output, &header, force)?;
    for e in &j.events {
        w.push(e)?;
    }
    w.finish()
        .with_context(|| format!("writing {}", output.display()))?;
    Ok(())
}

/// Options shared by `check` and `live`: which module and profile, and the overrides.
#[derive(Clone, Debug, Default)]
pub struct TargetOptions {
    pub module: Option<String>,
    pub profile: Option<PathBuf>,
    pub overrides: crate::live::resolve::Overrides,
}

impl TargetOptions {
    /// The profile (built-in unless `--profile`) and the module (`--module`, else the
    /// profile's).
    pub fn resolve(&self) -> Result<(Profile, String)> {
        let profile = match &self.profile {
            Some(p) => Profile::load(p)?,
            None => Profile::vfio_ap(),
        };
        let module = self
            .module
            .clone()
            .unwrap_or_else(|| profile.module.clone());
        Ok((profile, module))
    }
}

/// `aptrace check`: prints the preflight table, returns 0 (can trace) or 2 (cannot).
pub fn check(target: &TargetOptions, json: bool) -> Result<u8> {
    use crate::live::{check, host::Host};
    let (profile, module) = target.resolve()?;
    let host = Host::live();
    #[cfg(all(feature = "live", target_os = "linux"))]
    let probed = crate::live::agent::probe_features();
    #[cfg(not(all(feature = "live", target_os = "linux")))]
    let probed = check::Probed::default();
    let config = crate::live::kernel_config(&host);
    let (rows, _) = check::preflight(
        &host,
        &profile,
        &module,
        &target.overrides,
        &probed,
        config.as_deref(),
        &crate::live::machine(),
    );
    let text = if json {
        check::to_json(&rows)
    } else {
        check::to_text(&rows)
    };
    write_output(None, text.as_bytes(), false)?;
    Ok(check::exit_code(&rows))
}

/// Parses `10s`, `500ms`, `2m`, `1h` or plain seconds.
pub fn parse_duration(s: &str) -> std::result::Result<std::time::Duration, String> {
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
