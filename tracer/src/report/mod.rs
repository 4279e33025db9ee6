//! Post-mortem reports: text, markdown and JSON. They render what the auditor concluded;
//! they decide nothing.

use std::collections::BTreeMap;

use serde::Serialize;

use crate::audit::migration::pair::{pair, Paired, Sourced};
use crate::audit::migration::session::Session;
use crate::audit::{
    Auditor, Finding, Kind, MdevView, OrderEdge, Outstanding, Severity, UnfinishedCall,
};
use crate::calls::show::Signatures;
use crate::model::{dec_opt, human_ns, Event};
use crate::recording::{Damage, Header, ProbeStatus};

mod guest;
mod text;
pub use guest::GuestFilter;
pub use text::{md, utc};

/// Where a report's events came from.
#[derive(Clone, Debug, Serialize)]
pub struct SourceInfo {
    pub path: String,
    pub arch: String,
    pub kernel_release: String,
    pub hostname: String,
    pub module: String,
    pub writer: String,
    pub format_version: String,
    /// Add to a `ts_ns` for Unix time. A string: near 1.8e18, it does not fit a double.
    #[serde(serialize_with = "i64_string")]
    pub boot_to_wall_ns: i64,
    pub probes: Vec<ProbeStatus>,
    /// The probes that attached degraded, and the finding kinds they could not detect.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub cannot_detect: Vec<Undetected>,
    pub damage: Vec<Damage>,
    pub warnings: Vec<String>,
    /// `live --guest`: the run was limited to this guest (its pid or name); findings, mdevs
    /// and migrations list only what concerns it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub guest: Option<String>,
}

/// A degraded probe of a source: what it could not see, hence which findings are missing
/// from the report for reasons that are not the driver's.
#[derive(Clone, Debug, Serialize)]
pub struct Undetected {
    pub probe: String,
    /// Finding kinds (`leak`, `self-deadlock`, ...), in the order of [`Kind::ALL`].
    pub kinds: Vec<&'static str>,
    pub why: String,
}

/// The finding kinds a degraded probe's detail names (it says `cannot detect KIND, ...`).
fn kinds_named(detail: &str) -> Vec<&'static str> {
    let words: Vec<&str> = detail
        .split(|c: char| !(c.is_ascii_alphanumeric() || c == '-'))
        .collect();
    Kind::ALL
        .iter()
        .map(|k| k.name())
        .filter(|n| words.contains(n))
        .collect()
}

/// The degraded probes among `probes`, and the missing ones whose checks could not run (an
/// inlined helper with a declared contract), with the finding kinds each could not detect.
pub fn undetected(probes: &[ProbeStatus]) -> Vec<Undetected> {
    use crate::recording::ProbeState;
    probes
        .iter()
        .filter(|p| {
            p.state == ProbeState::Degraded
                || (p.state == ProbeState::Missing && p.detail.contains("cannot detect"))
        })
        .map(|p| Undetected {
            probe: p.name.clone(),
            kinds: kinds_named(&p.detail),
            why: p.detail.clone(),
        })
        .collect()
}

impl SourceInfo {
    pub fn new(
        path: &str,
        header: &Header,
        version: (u16, u16),
        damage: Vec<Damage>,
        warnings: Vec<String>,
    ) -> SourceInfo {
        SourceInfo {
            path: path.to_string(),
            arch: header.arch.clone(),
            kernel_release: header.kernel_release.clone(),
            hostname: header.hostname.clone(),
            module: header.module.clone(),
            writer: header.writer.clone(),
            format_version: format!("{}.{}", version.0, version.1),
            boot_to_wall_ns: header.boot_to_wall_ns,
            probes: header.probes.clone(),
            cannot_detect: undetected(&header.probes),
            damage,
            warnings,
            guest: header.guest.clone(),
        }
    }
}

#[derive(Clone, Debug, Serialize)]
pub struct FunctionRow {
    pub function: String,
    pub calls: u64,
    pub failures: u64,
    #[serde(with = "dec_opt")]
    pub p50_ns: Option<u64>,
    #[serde(with = "dec_opt")]
    pub p99_ns: Option<u64>,
    #[serde(with = "dec_opt")]
    pub max_ns: Option<u64>,
}

#[derive(Clone, Debug, Serialize)]
pub struct ReportSummary {
    pub events: u64,
    pub mdevs_seen: u64,
    #[serde(with = "dec_opt")]
    pub first_ts_ns: Option<u64>,
    #[serde(with = "dec_opt")]
    pub last_ts_ns: Option<u64>,
    #[serde(with = "dec_opt")]
    pub span_ns: Option<u64>,
    pub lost_events: u64,
    pub complete: bool,
    pub errors: u64,
    pub warnings: u64,
    /// Findings counted but not kept in full (beyond the auditor's memory cap).
    pub findings_not_kept: u64,
    pub findings_by_kind: BTreeMap<String, u64>,
    pub outstanding: Vec<Outstanding>,
    pub unfinished_calls: Vec<UnfinishedCall>,
}

/// One audited source.
#[derive(Clone, Debug, Serialize)]
pub struct FileReport {
    pub source: SourceInfo,
    pub complete: bool,
    pub summary: ReportSummary,
    pub findings: Vec<Finding>,
    pub functions: Vec<FunctionRow>,
    pub mdevs: Vec<MdevView>,
    /// The lock order edges seen, with their first evidence.
    pub lock_order: Vec<OrderEdge>,
    /// Migration sessions (STOP_COPY and RESUMING periods), in start order.
    pub migrations: Vec<Session>,
    /// The profile's signatures, to print evidence as the kernel means it.
    #[serde(skip)]
    pub signatures: Signatures,
}

impl FileReport {
    /// Builds the report of one audited stream.
    pub fn new(source: SourceInfo, auditor: &Auditor, intact: bool) -> FileReport {
        let s = auditor.finish();
        let snap = auditor.snapshot();
        let complete = intact && s.lost_events == 0;
        let guest = source.guest.as_deref().map(GuestFilter::parse);
        let mut findings = auditor.findings().to_vec();
        let mut mdevs = snap.mdevs;
        // The snapshot made these already: each is a copy of everything kept.
        let mut migrations = snap.migrations;
        if let Some(g) = &guest {
            findings.retain(|f| g.matches(f));
            mdevs.retain(|m| g.matches_mdev(m));
            migrations.retain(|s| g.matches_session(s));
        }
        let counts = auditor.finding_counts();
        let count = |sev| {
            counts
                .iter()
                .filter(|(k, _)| k.severity() == sev)
                .map(|(_, n)| n)
                .sum::<u64>()
        };
        let functions = auditor
            .function_stats()
            .map(|(name, st)| FunctionRow {
                function: name.to_string(),
                calls: st.entries.max(st.exits),
                failures: st.failures,
                p50_ns: st.latency.quantile(0.5),
                p99_ns: st.latency.quantile(0.99),
                max_ns: st.latency.quantile(1.0),
            })
            .collect();
        FileReport {
            complete,
            summary: ReportSummary {
                events: s.events,
                mdevs_seen: s.mdevs_seen,
                first_ts_ns: s.first_ts_ns,
                last_ts_ns: s.last_ts_ns,
                span_ns: s
                    .first_ts_ns
                    .zip(s.last_ts_ns)
                    .map(|(a, b)| b.saturating_sub(a)),
                lost_events: s.lost_events,
                complete,
                errors: count(Severity::Error),
                warnings: count(Severity::Warning),
                // Of the auditor's memory cap, not of a --guest limit.
                findings_not_kept: auditor.findings_total() - auditor.findings().len() as u64,
                findings_by_kind: snap
                    .findings_by_kind
                    .iter()
                    .filter(|(_, &n)| n > 0)
                    .map(|(k, n)| (k.name().to_string(), *n))
                    .collect(),
                outstanding: s.outstanding,
                unfinished_calls: s.unfinished_calls,
            },
            findings,
            functions,
            mdevs,
            lock_order: snap.lock_order,
            migrations,
            signatures: Signatures::of(auditor.profile()),
            source,
        }
    }
}

/// The JSON report's schema id (docs/report-schema.md, docs/report.schema.json). 2: 64-bit
/// values that can exceed 2^53 are strings (`boot_to_wall_ns` was a number in 1).
pub const REPORT_SCHEMA: &str = "aptrace-report/2";

fn i64_string<S: serde::Serializer>(v: &i64, s: S) -> Result<S::Ok, S::Error> {
    s.collect_str(v)
}

/// Exit status: complete input, nothing found.
pub const EXIT_CLEAN: u8 = 0;
/// Exit status: a finding other than `events-lost`.
pub const EXIT_FINDINGS: u8 = 1;
/// Exit status: bad usage, or an input that could not be read (or held no readable event).
pub const EXIT_UNREADABLE: u8 = 2;
/// Exit status: nothing found, but an input is incomplete (damaged, unfinished, events lost).
pub const EXIT_INCOMPLETE: u8 = 3;

/// The whole report: one or more sources.
#[derive(Clone, Debug)]
pub struct Report {
    pub files: Vec<FileReport>,
}

#[derive(Serialize)]
struct JsonFinding<'a> {
    source: &'a str,
    #[serde(flatten)]
    finding: &'a Finding,
}

#[derive(Serialize)]
struct JsonReport<'a> {
    schema: &'static str,
    complete: bool,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    cannot_detect: Vec<&'static str>,
    /// Save sessions paired with restore sessions, across sources.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    migrations: Vec<Paired>,
    findings: Vec<JsonFinding<'a>>,
    summary: JsonSummary<'a>,
    sources: Vec<JsonSource<'a>>,
}

#[derive(Serialize)]
struct JsonSummary<'a> {
    events: u64,
    mdevs_seen: u64,
    lost_events: u64,
    errors: u64,
    warnings: u64,
    findings_by_kind: BTreeMap<&'a str, u64>,
    outstanding_allocations: u64,
}

#[derive(Serialize)]
struct JsonSource<'a> {
    #[serde(flatten)]
    source: &'a SourceInfo,
    complete: bool,
    summary: &'a ReportSummary,
    functions: &'a [FunctionRow],
    mdevs: &'a [MdevView],
    #[serde(skip_serializing_if = "<[OrderEdge]>::is_empty")]
    lock_order: &'a [OrderEdge],
    #[serde(skip_serializing_if = "<[Session]>::is_empty")]
    migrations: &'a [Session],
}

impl Report {
    /// True when any finding was raised.
    pub fn has_findings(&self) -> bool {
        self.files.iter().any(|f| !f.findings.is_empty())
    }

    /// The exit status a CI job gates on: 1 when there is a finding other than
    /// `events-lost`; else 3 when an input is incomplete (damaged, unfinished, events lost);
    /// else 0. (2, usage errors and unreadable inputs, never reaches a report.)
    pub fn exit_status(&self) -> u8 {
        // The kept findings (a `--guest` filter trims them), and the counted ones beyond.
        let found = self.files.iter().any(|f| {
            f.findings.iter().any(|x| x.kind != Kind::EventsLost)
                || (f.summary.findings_not_kept > 0
                    && f.summary
                        .findings_by_kind
                        .iter()
                        .any(|(kind, &n)| n > 0 && kind != Kind::EventsLost.name()))
        });
        if found {
            EXIT_FINDINGS
        } else if !self.complete() {
            EXIT_INCOMPLETE
        } else {
            EXIT_CLEAN
        }
    }

    pub fn complete(&self) -> bool {
        self.files.iter().all(|f| f.complete)
    }

    /// The migrations end to end: each source's save sessions paired with another's
    /// restore sessions of the same guest (one source: within it). `source` indexes `files`.
    pub fn paired(&self) -> Vec<Paired> {
        let all: Vec<Sourced> = self
            .files
            .iter()
            .enumerate()
            .flat_map(|(i, f)| {
                f.migrations.iter().map(move |s| Sourced {
                    source: i,
                    boot_to_wall_ns: f.source.boot_to_wall_ns,
                    session: s,
                })
            })
            .collect();
        pair(&all)
    }

    /// The finding kinds some source could not detect (its probes attached degraded).
    pub fn cannot_detect(&self) -> Vec<&'static str> {
        Kind::ALL
            .iter()
            .map(|k| k.name())
            .filter(|n| {
                self.files
                    .iter()
                    .flat_map(|f| &f.source.cannot_detect)
                    .any(|u| u.kinds.contains(n))
            })
            .collect()
    }

    pub fn to_json(&self) -> String {
        let mut by_kind: BTreeMap<&str, u64> = BTreeMap::new();
        for f in &self.files {
            for fi in &f.findings {
                *by_kind.entry(fi.kind.name()).or_default() += 1;
            }
        }
        let r = JsonReport {
            schema: REPORT_SCHEMA,
            complete: self.complete(),
            cannot_detect: self.cannot_detect(),
            migrations: self.paired(),
            findings: self
                .files
                .iter()
                .flat_map(|f| {
                    f.findings.iter().map(|fi| JsonFinding {
                        source: &f.source.path,
                        finding: fi,
                    })
                })
                .collect(),
            summary: JsonSummary {
                events: self.files.iter().map(|f| f.summary.events).sum(),
                mdevs_seen: self.files.iter().map(|f| f.summary.mdevs_seen).sum(),
                lost_events: self.files.iter().map(|f| f.summary.lost_events).sum(),
                errors: self.files.iter().map(|f| f.summary.errors).sum(),
                warnings: self.files.iter().map(|f| f.summary.warnings).sum(),
                findings_by_kind: by_kind,
                outstanding_allocations: self
                    .files
                    .iter()
                    .map(|f| f.summary.outstanding.len() as u64)
                    .sum(),
            },
            sources: self
                .files
                .iter()
                .map(|f| JsonSource {
                    source: &f.source,
                    complete: f.complete,
                    summary: &f.summary,
                    functions: &f.functions,
                    mdevs: &f.mdevs,
                    lock_order: &f.lock_order,
                    migrations: &f.migrations,
                })
                .collect(),
        };
        let mut s = serde_json::to_string_pretty(&r).expect("report serializes");
        s.push('\n');
        s
    }

    pub fn to_text(&self) -> String {
        text::render(self, &text::Style::Text)
    }

    pub fn to_markdown(&self) -> String {
        text::render(self, &text::Style::Markdown)
    }
}

/// Which kinds are errors and which warnings, for documentation and tests.
pub fn severity_table() -> Vec<(Kind, Severity)> {
    Kind::ALL.iter().map(|&k| (k, k.severity())).collect()
}

#[cfg(test)]
mod tests {
    use super::text::{md, utc};

    #[test]
    fn utc_formats_known_instants() {
        assert_eq!(utc(0), "1970-01-01T00:00:00.000000Z");
        assert_eq!(
            utc(1_795_824_000_000_000_000),
            "2026-11-28T00:00:00.000000Z"
        );
        assert_eq!(utc(951_782_400_123_456_000), "2000-02-29T00:00:00.123456Z");
    }

    #[test]
    fn markdown_escapes_hostile_names() {
        assert_eq!(md("<script>*x*"), "&lt;script\\>\\*x\\*");
        assert_eq!(md("a|b\n"), "a\\|b ");
    }
}
