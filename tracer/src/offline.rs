//! Auditing what was recorded: which profile a source is audited with, the audit of one
//! source streamed into its own auditor, and the conversions between recordings and JSON
//! lines. No terminal or output-file concerns: the binary decides where results go.

use std::path::Path;

use crate::audit::Auditor;
use crate::input::{load, open, InputError, Opened};
use crate::jsonl::JsonlError;
use crate::profile::Profile;
use crate::recording::{Header, Writer};
use crate::report::{FileReport, Report, SourceInfo};

/// Why an offline command failed.
#[derive(Debug, thiserror::Error)]
pub enum OfflineError {
    #[error(transparent)]
    Input(#[from] InputError),
    #[error(transparent)]
    Jsonl(#[from] JsonlError),
    #[error("{path}: no readable event ({why}); nothing to audit")]
    NoEvents { path: String, why: String },
    #[error("writing {path}: {source}")]
    Write {
        path: String,
        source: std::io::Error,
    },
}

/// The profile to audit a source with: the explicit one (`--profile`), else the one in its
/// header, else the built-in one. The second value warns that the header's could not be read.
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

/// Audits one source, streaming its events (a recording is never held as events), decoded
/// ahead on a second core when there is one.
pub fn audit_opened(path: &str, mut opened: Opened, profile: Option<&Profile>) -> FileReport {
    let (profile, warn) = profile_for(&opened.header, path, profile);
    let mut auditor = Auditor::new(profile);
    auditor.probes_attached(&opened.header.probes);
    opened.for_each_run_read_ahead(|run| auditor.ingest_all(run));
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

/// Audits each file with an auditor of its own (recordings from two hosts never share one).
pub fn audit_files(files: &[&Path], profile: Option<&Profile>) -> Result<Report, OfflineError> {
    let mut reports = Vec::with_capacity(files.len());
    for f in files {
        reports.push(audit_opened(&f.display().to_string(), open(f)?, profile));
    }
    Ok(Report { files: reports })
}

/// An error when a source gave no event at all (an empty file, a header alone, only damage):
/// there is nothing to audit, and a clean report would be a lie.
pub fn require_events(report: &Report) -> Result<(), OfflineError> {
    for f in &report.files {
        if f.summary.events > 0 {
            continue;
        }
        let path = f.source.path.clone();
        let why = if path == crate::input::STDIN && f.source.damage.is_empty() {
            "standard input gave no event".to_string()
        } else if path != crate::input::STDIN
            && std::fs::metadata(&path).is_ok_and(|m| m.len() == 0)
        {
            "the file is empty".to_string()
        } else if !f.source.damage.is_empty() {
            format!(
                "{} damaged region(s), no whole chunk",
                f.source.damage.len()
            )
        } else {
            "it holds a header and no events".to_string()
        };
        return Err(OfflineError::NoEvents { path, why });
    }
    Ok(())
}

/// A recording (or JSON lines) as JSON lines; the second value is what its reader warned of.
pub fn export_jsonl(file: &Path) -> Result<(Vec<u8>, Vec<String>), OfflineError> {
    let loaded = load(file)?;
    let mut buf = Vec::new();
    let note = loaded.source_note();
    crate::jsonl::write_jsonl_from(&mut buf, &loaded.header, Some(&note), loaded.events).map_err(
        |source| OfflineError::Write {
            path: "JSON lines".into(),
            source,
        },
    )?;
    Ok((buf, loaded.warnings))
}

/// Turns a JSON-lines file into a recording at `output` (mode 0600; `force` overwrites).
/// Events are written in the order the reorder window delivers them, numbered in that order;
/// a source line's damage goes into the header, and the end marker is written only when the
/// source had one.
pub fn import(file: &Path, output: &Path, force: bool) -> Result<(), OfflineError> {
    let f = std::fs::File::open(file).map_err(|source| InputError::Open {
        path: file.display().to_string(),
        source,
    })?;
    let j =
        crate::jsonl::read_jsonl_ordered(std::io::BufReader::new(f), &file.display().to_string())?;
    let mut header = j.header.unwrap_or_else(|| Header {
        arch: std::env::consts::ARCH.to_string(),
        module: "vfio_ap".into(),
        profile: Profile::vfio_ap().to_toml(),
        ..Header::default()
    });
    if header.writer.is_empty() {
        header.writer = crate::writer_id();
    }
    let note = j.source.unwrap_or(crate::jsonl::SourceNote {
        end_marker: true,
        damage: Vec::new(),
    });
    header.source_damage = note.damage;
    let write_err = |source| OfflineError::Write {
        path: output.display().to_string(),
        source,
    };
    let mut w = Writer::create(output, &header, force).map_err(write_err)?;
    for e in &j.events {
        w.push(e).map_err(write_err)?;
    }
    if note.end_marker {
        w.finish().map_err(write_err)?;
    } else {
        w.finish_unmarked().map_err(write_err)?;
    }
    Ok(())
}
