//! What a degraded source could not detect, on screen: one line under the header and a panel
//! under the probes table. Both say nothing when every probe did all its checks.

use ratatui::buffer::Buffer;
use ratatui::layout::{Constraint, Layout, Rect};
use ratatui::style::{Color, Style};
use ratatui::text::{Line, Span};
use ratatui::widgets::{Block, Paragraph, Widget, Wrap};

use crate::audit::Kind;
use crate::recording::ProbeStatus;
use crate::report::{undetected, Undetected};

const WARN: Style = Style::new().fg(Color::Yellow);

/// The finding kinds no degraded probe could detect, in the order of [`Kind::ALL`].
fn blind_kinds(degraded: &[Undetected]) -> Vec<&'static str> {
    Kind::ALL
        .iter()
        .map(|k| k.name())
        .filter(|n| degraded.iter().any(|u| u.kinds.contains(n)))
        .collect()
}

/// The status line of a degraded source: the kinds it cannot detect, and where to read why.
/// None when no probe is degraded.
pub fn status_line(probes: &[ProbeStatus]) -> Option<Line<'static>> {
    let degraded = undetected(probes);
    if degraded.is_empty() {
        return None;
    }
    let kinds = blind_kinds(&degraded);
    let kinds = if kinds.is_empty() {
        "some findings".to_string()
    } else {
        kinds.join(", ")
    };
    Some(Line::from(vec![
        Span::styled(" degraded ", WARN.bold().reversed()),
        Span::styled(
            format!(
                " cannot detect: {kinds} ({} probes; 4 Probes says why)",
                degraded.len()
            ),
            WARN,
        ),
    ]))
}

/// Each reason a probe is degraded (a clause of its detail: what it could not read and the
/// kinds that hides) with the probes it applies to, in first-seen order: turning lock checks
/// off degrades most probes for one reason, which reads better once than eight times.
fn reasons(probes: &[ProbeStatus]) -> Vec<(String, Vec<String>)> {
    let mut out: Vec<(String, Vec<String>)> = Vec::new();
    for u in undetected(probes) {
        for clause in u.why.split("; ").filter(|c| !c.is_empty()) {
            match out.iter_mut().find(|(r, _)| r == clause) {
                Some((_, names)) => names.push(u.probe.clone()),
                None => out.push((clause.to_string(), vec![u.probe.clone()])),
            }
        }
    }
    out
}

/// Splits the probes view's `area` into the table and, for a degraded source, a panel under
/// it: the lines its reasons wrap to, two for the border, at most half the area.
pub fn split_probes_view(area: Rect, probes: &[ProbeStatus]) -> (Rect, Option<Rect>) {
    let reasons = reasons(probes);
    if reasons.is_empty() {
        return (area, None);
    }
    // The lines each reason wraps to (word wrapping may take one more), inside the border.
    let width = usize::from(area.width.saturating_sub(2)).max(1);
    let lines: usize = reasons
        .iter()
        .map(|(why, names)| {
            let chars = why.chars().count() + 5 + names.iter().map(|n| n.len() + 2).sum::<usize>();
            chars.div_ceil(width) + 1
        })
        .sum();
    let want = u16::try_from(lines + 2)
        .unwrap_or(u16::MAX)
        .min(area.height / 2);
    let [table, panel] =
        Layout::vertical([Constraint::Min(3), Constraint::Length(want)]).areas(area);
    (table, Some(panel))
}

/// The panel of the probes view: each reason for degradation, what it hides, and which
/// probes it applies to.
pub fn render_panel(probes: &[ProbeStatus], area: Rect, buf: &mut Buffer) {
    let lines: Vec<Line> = reasons(probes)
        .into_iter()
        .map(|(why, names)| {
            Line::from(vec![
                Span::styled(why, WARN),
                Span::styled(
                    format!(" · in {}", names.join(", ")),
                    Style::new().fg(Color::DarkGray),
                ),
            ])
        })
        .collect();
    Paragraph::new(lines)
        .wrap(Wrap { trim: false })
        .block(
            Block::bordered()
                .border_style(WARN)
                .title(" Degraded: attached, but these findings cannot be detected "),
        )
        .render(area, buf);
}
