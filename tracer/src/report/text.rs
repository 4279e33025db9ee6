//! The text and markdown renderings of a report: one walk over it, two styles.

use std::borrow::Cow;
use std::collections::{BTreeMap, HashMap};
use std::fmt::Write as _;

use super::*;
use crate::audit::{LifeKey, TimelineEntry};
use crate::calls::show::Signatures;

// A text or markdown report is read by a person: past these, a long recording's migrations
// are counted and only the latest listed. The JSON report keeps every one.
const SHOWN_LIVES: usize = 20;
const SHOWN_STEPS: usize = 16;
const SHOWN_SESSIONS: usize = 50;
const SHOWN_PAIRS: usize = 50;
const ALL_IN_JSON: &str = "--format json lists every one";

pub(super) enum Style {
    Text,
    Markdown,
}

impl Style {
    fn h1(&self, out: &mut String, s: &str) {
        match self {
            Style::Text => {
                let _ = writeln!(out, "{s}\n{}", "=".repeat(s.chars().count()));
            }
            Style::Markdown => {
                let _ = writeln!(out, "# {}\n", md(s));
            }
        }
    }
    fn h2(&self, out: &mut String, s: &str) {
        match self {
            Style::Text => {
                let _ = writeln!(out, "\n{s}\n{}", "-".repeat(s.chars().count()));
            }
            Style::Markdown => {
                let _ = writeln!(out, "\n## {}\n", md(s));
            }
        }
    }
    /// Escapes text taken from the traced host (comm, uuid, names can hold anything).
    fn t<'a>(&self, s: &'a str) -> Cow<'a, str> {
        match self {
            // Most text is clean: borrowed, not copied (reports list thousands of lines).
            Style::Text if !s.chars().any(char::is_control) => Cow::Borrowed(s),
            Style::Text => s
                .chars()
                .map(|c| if c.is_control() { '?' } else { c })
                .collect(),
            Style::Markdown => Cow::Owned(md(s)),
        }
    }
}

/// Markdown-escapes text (and neutralizes HTML) so a hostile name cannot inject markup.
pub fn md(s: &str) -> String {
    let mut o = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '\\' | '`' | '*' | '_' | '{' | '}' | '[' | ']' | '(' | ')' | '#' | '+' | '!' | '|'
            | '~' | '>' => {
                o.push('\\');
                o.push(c);
            }
            '<' => o.push_str("&lt;"),
            '&' => o.push_str("&amp;"),
            c if c.is_control() => o.push(' '),
            c => o.push(c),
        }
    }
    o
}

/// Boot-clock time, plus wall-clock UTC when the offset is known.
fn when(ts: u64, boot_to_wall: i64) -> String {
    let boot = format!("{}.{:06}s", ts / 1_000_000_000, (ts % 1_000_000_000) / 1000);
    if boot_to_wall == 0 {
        return boot;
    }
    let wall = ts as i128 + boot_to_wall as i128;
    format!("{} (boot +{boot})", utc(wall))
}

/// Unix nanoseconds → `2026-11-24T08:00:00.123456Z`.
pub fn utc(unix_ns: i128) -> String {
    let secs = unix_ns.div_euclid(1_000_000_000) as i64;
    let micros = (unix_ns.rem_euclid(1_000_000_000) / 1000) as i64;
    let days = secs.div_euclid(86_400);
    let sod = secs.rem_euclid(86_400);
    // Howard Hinnant's civil_from_days.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = if m <= 2 { y + 1 } else { y };
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}.{micros:06}Z",
        sod / 3600,
        (sod % 3600) / 60,
        sod % 60
    )
}

fn event_line(st: &Style, e: &Event, off: i64, sigs: &Signatures) -> String {
    let line = format!(
        "#{:<6} {}  pid {} {}  {}",
        e.seq,
        when(e.ts_ns, off),
        e.task.tid,
        e.task.comm,
        sigs.describe(e)
    );
    match st.t(&line) {
        Cow::Owned(escaped) => escaped,
        Cow::Borrowed(_) => line,
    }
}

pub(super) fn render(r: &Report, st: &Style) -> String {
    let mut out = String::new();
    let n_find: usize = r.files.iter().map(|f| f.findings.len()).sum();
    st.h1(&mut out, "aptrace report");
    let _ = writeln!(
        out,
        "{} finding(s) in {} source(s); complete: {}{}",
        n_find,
        r.files.len(),
        if r.complete() { "yes" } else { "NO" },
        if r.complete() {
            ""
        } else {
            " (events were lost, or the recording is damaged or unfinished: see below)"
        }
    );
    let blind = r.cannot_detect();
    if !blind.is_empty() {
        // First lines: a clean report from probes that could not see is not a clean bill.
        let probes: usize = r.files.iter().map(|f| f.source.cannot_detect.len()).sum();
        let _ = writeln!(
            out,
            "{}could not detect: {} ({probes} probe(s) degraded: see below){}",
            li(st),
            blind.join(", "),
            if n_find == 0 {
                "; no finding does not mean none of these happened"
            } else {
                ""
            }
        );
    }
    paired(&mut out, r, st);
    for f in &r.files {
        render_file(&mut out, f, st);
    }
    out
}

/// The order edges, one a line, so a cycle in a finding's message can be followed lock by
/// lock. Absent when no edge was seen (the reports of drivers without declared locks).
fn lock_order(out: &mut String, f: &FileReport, st: &Style) {
    if f.lock_order.is_empty() {
        return;
    }
    st.h2(out, "Lock order");
    for e in &f.lock_order {
        let how = match &e.held_in {
            Some(h) => format!("inside {}", st.t(h)),
            None => "holding it (its owner word, read at entry)".to_string(),
        };
        let _ = writeln!(
            out,
            "{}{} before {}: {} entered by pid {} ({}) {how} at {}{}",
            li(st),
            st.t(&e.held),
            st.t(&e.taken),
            st.t(&e.taker),
            e.task.tid,
            st.t(&e.task.comm),
            when(e.ts_ns, f.source.boot_to_wall_ns),
            if e.uncertain { " (uncertain)" } else { "" }
        );
    }
}

fn li(st: &Style) -> &'static str {
    match st {
        Style::Text => "  ",
        Style::Markdown => "- ",
    }
}

fn render_file(out: &mut String, f: &FileReport, st: &Style) {
    let s = &f.source;
    let off = s.boot_to_wall_ns;
    let b = li(st);
    st.h2(out, &format!("Source {}", s.path));
    let _ = writeln!(
        out,
        "{b}host {} ({}, kernel {}), module {}, format {}{}",
        st.t(if s.hostname.is_empty() {
            "?"
        } else {
            &s.hostname
        }),
        st.t(if s.arch.is_empty() { "?" } else { &s.arch }),
        st.t(if s.kernel_release.is_empty() {
            "?"
        } else {
            &s.kernel_release
        }),
        st.t(if s.module.is_empty() { "?" } else { &s.module }),
        s.format_version,
        if s.writer.is_empty() {
            String::new()
        } else {
            format!(", written by {}", st.t(&s.writer))
        }
    );
    if let Some(g) = &s.guest {
        let _ = writeln!(
            out,
            "{b}limited to guest {} (live --guest): findings, mdevs and migrations of its devices only; the summary counts the whole recording",
            st.t(g)
        );
    }
    // Probes in the same state for the same reason on one line (the series' 20 functions
    // of a driver without the series would otherwise repeat it 20 times).
    let mut groups: Vec<(&crate::recording::ProbeStatus, Vec<&str>)> = Vec::new();
    for p in s
        .probes
        .iter()
        .filter(|p| p.state != crate::recording::ProbeState::Attached)
    {
        match groups.last_mut() {
            Some((q, names)) if q.state == p.state && q.detail == p.detail => names.push(&p.name),
            _ => groups.push((p, vec![&p.name])),
        }
    }
    for (p, names) in groups {
        let _ = writeln!(
            out,
            "{b}probe{} {} {}: {}",
            if names.len() > 1 { "s" } else { "" },
            st.t(&names.join(", ")),
            p.state.name(),
            st.t(&p.detail)
        );
    }
    for w in &s.warnings {
        let _ = writeln!(out, "{b}WARNING: {}", st.t(w));
    }

    st.h2(out, "Summary");
    let sm = &f.summary;
    let span = sm.span_ns.map(human_ns).unwrap_or_else(|| "-".into());
    let from = sm
        .first_ts_ns
        .map(|t| when(t, off))
        .unwrap_or_else(|| "-".into());
    let _ = writeln!(out, "{b}events: {} over {span}, from {from}", sm.events);
    let _ = writeln!(out, "{b}mdevs seen: {}", sm.mdevs_seen);
    let _ = writeln!(out, "{b}lost events: {}", sm.lost_events);
    let _ = writeln!(
        out,
        "{b}complete: {}",
        if f.complete { "yes" } else { "no" }
    );
    let kinds = if sm.findings_by_kind.is_empty() {
        "none".to_string()
    } else {
        sm.findings_by_kind
            .iter()
            .map(|(k, n)| format!("{k} {n}"))
            .collect::<Vec<_>>()
            .join(", ")
    };
    let _ = writeln!(
        out,
        "{b}findings: {} error(s), {} warning(s): {kinds}",
        sm.errors, sm.warnings
    );
    if sm.findings_not_kept > 0 {
        let _ = writeln!(
            out,
            "{b}{} more finding(s) were counted but not kept in memory (the first {} are listed)",
            sm.findings_not_kept,
            crate::audit::FINDINGS_KEPT
        );
    }
    if sm.outstanding.is_empty() {
        let _ = writeln!(out, "{b}outstanding allocations at the end: none");
    } else {
        let _ = writeln!(
            out,
            "{b}outstanding allocations at the end: {} (not leaks: their mdev may still be alive)",
            sm.outstanding.len()
        );
        for o in &sm.outstanding {
            let mdev = o
                .mdev
                .as_ref()
                .map(|m| format!(" for mdev {:#x} life {}", m.ptr, m.incarnation))
                .unwrap_or_default();
            let _ = writeln!(
                out,
                "{b}  {:#x} from {} at {}{mdev} (event #{})",
                o.ptr,
                st.t(&o.function),
                when(o.ts_ns, off),
                o.seq
            );
        }
    }
    for u in &sm.unfinished_calls {
        let _ = writeln!(
            out,
            "{b}still inside {} at the end: pid {} {} since {} (event #{})",
            st.t(&u.function),
            u.task.tid,
            st.t(&u.task.comm),
            when(u.ts_ns, off),
            u.seq
        );
    }

    st.h2(out, "Findings");
    if f.findings.is_empty() {
        let _ = writeln!(out, "{b}none");
    }
    // Grouped by mdev life (pointer and life: a reused pointer is another device), in the
    // order the life first had a finding. An index by key: a search of the groups for each
    // finding is quadratic when many mdevs have findings.
    let mut groups: Vec<(Option<LifeKey>, Vec<&Finding>)> = Vec::new();
    let mut group_of: HashMap<Option<LifeKey>, usize> = HashMap::new();
    for fi in &f.findings {
        let key = fi.mdev.as_ref().map(|m| (m.ptr, m.incarnation));
        let i = *group_of.entry(key).or_insert_with(|| {
            groups.push((key, Vec::new()));
            groups.len() - 1
        });
        groups[i].1.push(fi);
    }
    for (key, list) in groups {
        let title = match (key, list[0].mdev.as_ref()) {
            (Some((p, life)), Some(m)) => {
                let uuid = m
                    .uuid
                    .as_deref()
                    .map(|u| format!("{u} "))
                    .unwrap_or_default();
                let guest = list
                    .iter()
                    .find_map(|x| x.guest.as_ref())
                    .map(|g| match &g.guest {
                        Some(n) => format!(", guest {n} (pid {})", g.pid),
                        None => format!(", opened by pid {} ({})", g.pid, g.comm),
                    })
                    .unwrap_or_default();
                format!("mdev {uuid}({p:#x}) life {life}{guest}")
            }
            _ => "not about one mdev".to_string(),
        };
        match st {
            Style::Text => {
                let _ = writeln!(out, "\n{}", st.t(&title));
            }
            Style::Markdown => {
                let _ = writeln!(out, "\n### {}\n", st.t(&title));
            }
        }
        for fi in list {
            let unc = match (&fi.uncertainty, fi.uncertain) {
                (Some(why), _) => format!(" (uncertain: {})", st.t(why)),
                (None, true) => " (uncertain)".to_string(),
                (None, false) => String::new(),
            };
            let task = fi
                .task
                .as_ref()
                .map(|t| format!("pid {} {}", t.tid, t.comm))
                .unwrap_or_default();
            match st {
                Style::Text => {
                    let _ = writeln!(
                        out,
                        "  [{}] {} in {} at {}{unc}",
                        fi.severity.name(),
                        fi.kind,
                        st.t(fi.function.as_deref().unwrap_or("?")),
                        when(fi.ts_ns, off)
                    );
                    let _ = writeln!(out, "    {}", st.t(&fi.message));
                    let _ = writeln!(out, "    task: {}", st.t(&task));
                    let _ = writeln!(out, "    evidence:");
                    for e in &fi.evidence {
                        let _ = writeln!(out, "      {}", event_line(st, e, off, &f.signatures));
                    }
                    if !fi.stack.is_empty() {
                        let _ = writeln!(out, "    stack:");
                        for fr in &fi.stack {
                            let _ = writeln!(out, "      {}", st.t(fr));
                        }
                    }
                }
                Style::Markdown => {
                    let _ = writeln!(
                        out,
                        "- **{}** `{}` in `{}` at {}{unc}  \n  {}  \n  task: {}",
                        fi.severity.name(),
                        fi.kind,
                        fi.function.as_deref().unwrap_or("?").replace('`', "'"),
                        when(fi.ts_ns, off),
                        st.t(&fi.message),
                        st.t(&task)
                    );
                    let _ = writeln!(out, "\n  ```");
                    for e in &fi.evidence {
                        let _ = writeln!(
                            out,
                            "  {}",
                            event_line(&Style::Text, e, off, &f.signatures).replace("```", "'''")
                        );
                    }
                    for fr in &fi.stack {
                        let _ = writeln!(out, "    {}", Style::Text.t(fr).replace("```", "'''"));
                    }
                    let _ = writeln!(out, "  ```");
                }
            }
        }
    }

    lock_order(out, f, st);

    st.h2(out, "Functions");
    match st {
        Style::Text => {
            let _ = writeln!(
                out,
                "  {:<40} {:>8} {:>7} {:>9} {:>9} {:>9}",
                "function", "calls", "failed", "p50", "p99", "max"
            );
        }
        Style::Markdown => {
            let _ = writeln!(
                out,
                "| function | calls | failed | p50 | p99 | max |\n|---|---:|---:|---:|---:|---:|"
            );
        }
    }
    let d = |v: Option<u64>| v.map(human_ns).unwrap_or_else(|| "-".into());
    for r in &f.functions {
        match st {
            Style::Text => {
                let _ = writeln!(
                    out,
                    "  {:<40} {:>8} {:>7} {:>9} {:>9} {:>9}",
                    r.function,
                    r.calls,
                    r.failures,
                    d(r.p50_ns),
                    d(r.p99_ns),
                    d(r.max_ns)
                );
            }
            Style::Markdown => {
                let _ = writeln!(
                    out,
                    "| {} | {} | {} | {} | {} | {} |",
                    md(&r.function),
                    r.calls,
                    r.failures,
                    d(r.p50_ns),
                    d(r.p99_ns),
                    d(r.max_ns)
                );
            }
        }
    }

    st.h2(out, "Migration timelines");
    // Only the lives that migrated: their state changes and refused requests. Their steps
    // are gathered for the lives shown only.
    let is_step = |t: &&TimelineEntry| {
        t.what.contains('→') || (t.what.starts_with("request ") && t.what.ends_with(" refused"))
    };
    let lives: Vec<&MdevView> = f
        .mdevs
        .iter()
        .filter(|m| m.timeline.iter().any(|t| is_step(&t)))
        .collect();
    if lives.is_empty() {
        let _ = writeln!(out, "{b}no migration requests seen");
    }
    let hidden_lives = lives.len().saturating_sub(SHOWN_LIVES);
    if hidden_lives > 0 {
        let _ = writeln!(
            out,
            "{b}{} mdev lives migrated; the last {SHOWN_LIVES} are shown, each with its last {SHOWN_STEPS} steps ({ALL_IN_JSON})",
            lives.len()
        );
    }
    for m in &lives[hidden_lives..] {
        let steps: Vec<&TimelineEntry> = m.timeline.iter().filter(is_step).collect();
        let name =
            m.id.uuid
                .as_deref()
                .map(|u| format!("{u} "))
                .unwrap_or_default();
        let _ = writeln!(
            out,
            "{b}mdev {}({:#x}) life {}:",
            st.t(&name),
            m.id.ptr,
            m.id.incarnation
        );
        let hidden = steps.len().saturating_sub(SHOWN_STEPS);
        let mut gone = Vec::new();
        if hidden > 0 {
            gone.push(format!("{hidden} earlier step(s) not shown"));
        }
        if m.timeline_dropped > 0 {
            gone.push(format!(
                "{} older timeline entries not kept in memory",
                m.timeline_dropped
            ));
        }
        if !gone.is_empty() {
            let _ = writeln!(out, "{b}  … {}", gone.join("; "));
        }
        for t in &steps[hidden..] {
            let _ = writeln!(
                out,
                "{b}  {}  {} (event #{})",
                when(t.ts_ns, off),
                st.t(&t.what),
                t.seq
            );
        }
    }
    migrations(out, f, st);
}

/// `uuid (0x..) life N` or `0x.. life N`.
fn mdev_text(st: &Style, m: &crate::audit::MdevRef) -> String {
    match &m.uuid {
        Some(u) => format!("{} ({:#x}) life {}", st.t(u), m.ptr, m.incarnation),
        None => format!("{:#x} life {}", m.ptr, m.incarnation),
    }
}

/// One line a session: who, the states with their times, bytes against size, stop time.
fn session_line(st: &Style, x: &Session, off: i64) -> String {
    let states: Vec<String> = x
        .states
        .iter()
        .map(|t| format!("{} {}", t.state, human_ns(t.ns)))
        .collect();
    let verb = match x.direction {
        crate::audit::migration::session::Direction::Save => "read",
        crate::audit::migration::session::Direction::Restore => "written",
    };
    let failed = if x.failed_transfers > 0 {
        format!(", {} failed", x.failed_transfers)
    } else {
        String::new()
    };
    format!(
        "#{} {} of mdev {}, guest {}: {}; {} {verb} in {} call(s){failed}; stopped {}; {} at {}",
        x.id,
        x.direction.name(),
        mdev_text(st, &x.mdev),
        st.t(&x.guest_label()),
        states.join(", "),
        x.bytes_text(),
        x.transfers,
        human_ns(x.stopped_ns),
        match x.end {
            crate::audit::migration::session::SessionEnd::Open => "still open".to_string(),
            e => format!("ended {}", e.name()),
        },
        when(x.end_ts_ns, off)
    )
}

/// Each source's sessions: the last ones, after a count of all of them by how they ended.
fn migrations(out: &mut String, f: &FileReport, st: &Style) {
    if f.migrations.is_empty() {
        return;
    }
    st.h2(out, "Migrations");
    let hidden = f.migrations.len().saturating_sub(SHOWN_SESSIONS);
    if hidden > 0 {
        let mut ends: BTreeMap<&str, usize> = BTreeMap::new();
        let mut failing = 0;
        for x in &f.migrations {
            *ends.entry(x.end.name()).or_default() += 1;
            failing += usize::from(x.failed_transfers > 0);
        }
        let ends: Vec<String> = ends.iter().map(|(e, n)| format!("{e} {n}")).collect();
        let _ = writeln!(
            out,
            "{}{} sessions, ended: {}; {failing} with failed transfers; the last {SHOWN_SESSIONS} are listed ({ALL_IN_JSON})",
            li(st),
            f.migrations.len(),
            ends.join(", ")
        );
    }
    for x in &f.migrations[hidden..] {
        let _ = writeln!(
            out,
            "{}{}",
            li(st),
            session_line(st, x, f.source.boot_to_wall_ns)
        );
    }
}

/// The migrations end to end, when a save and a restore pair up.
fn paired(out: &mut String, r: &Report, st: &Style) {
    let pairs = r.paired();
    if pairs.is_empty() {
        return;
    }
    st.h2(out, "Migrations, end to end");
    let hidden = pairs.len().saturating_sub(SHOWN_PAIRS);
    if hidden > 0 {
        let differ = pairs.iter().filter(|p| !p.bytes_agree).count();
        let _ = writeln!(
            out,
            "{}{} migrations paired, {differ} with bytes that differ; the last {SHOWN_PAIRS} are listed ({ALL_IN_JSON})",
            li(st),
            pairs.len()
        );
    }
    for p in &pairs[hidden..] {
        let side = |s: &crate::audit::migration::pair::Side, what: &str| {
            format!(
                "{what} #{} in {} (mdev {}, {} B, ended {})",
                s.session,
                st.t(&r.files[s.source].source.path),
                mdev_text(st, &s.mdev),
                s.bytes,
                s.end.name()
            )
        };
        let ns = |v: Option<u64>| v.map(human_ns).unwrap_or_else(|| "-".into());
        let _ = writeln!(
            out,
            "{}guest {} (paired by {}): {} → {}; {}; downtime {}, total {}",
            li(st),
            st.t(p.guest.as_deref().unwrap_or("?")),
            p.matched_by.name(),
            side(&p.save, "save"),
            side(&p.restore, "restore"),
            if p.bytes_agree {
                "bytes agree"
            } else {
                "BYTES DIFFER"
            },
            ns(p.downtime_ns),
            ns(p.total_ns)
        );
    }
}
