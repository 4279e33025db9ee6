//! Drawing: `impl Widget for &App`. Reads the App, changes nothing.

use ratatui::buffer::Buffer;
use ratatui::layout::{Constraint, Layout, Rect};
use ratatui::style::{Color, Modifier, Style, Stylize};
use ratatui::text::{Line, Span};
use ratatui::widgets::{
    Block, Clear, Paragraph, Row, Sparkline, StatefulWidget, Table, TableState, Tabs, Widget, Wrap,
};

use super::app::{App, View};
use super::engine::{human_bytes, latency, rel_time, Playback};
use crate::audit::{Finding, MdevRef, MdevView, Severity, TaskRef};
use crate::recording::ProbeState;

const HILITE: Style = Style::new().add_modifier(Modifier::REVERSED);

fn mdev_label(id: &MdevRef) -> String {
    let mut s = match &id.uuid {
        Some(u) => u.to_string(),
        None => format!("{:#x}", id.ptr),
    };
    if id.incarnation > 0 {
        s.push_str(&format!(" life {}", id.incarnation));
    }
    s
}

fn guest_label(g: Option<&TaskRef>) -> String {
    match g {
        Some(TaskRef {
            pid,
            comm,
            guest: Some(name),
            ..
        }) => format!("{name} ({pid} {comm})"),
        Some(t) => format!("{} {}", t.pid, t.comm),
        None => "-".into(),
    }
}

fn severity_style(s: Severity) -> Style {
    match s {
        Severity::Error => Style::new().fg(Color::Red),
        Severity::Warning => Style::new().fg(Color::Yellow),
    }
}

impl Widget for &App {
    fn render(self, area: Rect, buf: &mut Buffer) {
        let degraded = super::degraded::status_line(&self.info.probes);
        let [header, tabs, main, spark, footer] = Layout::vertical([
            Constraint::Length(1 + u16::from(degraded.is_some())),
            Constraint::Length(1),
            Constraint::Min(6),
            Constraint::Length(4),
            Constraint::Length(1),
        ])
        .areas(area);
        self.render_header(header, buf);
        if let Some(line) = degraded {
            let [_, below] = Layout::vertical([Constraint::Length(1); 2]).areas(header);
            line.render(below, buf);
        }
        Tabs::new(
            View::ALL
                .iter()
                .enumerate()
                .map(|(i, v)| format!("{} {}", i + 1, v.title())),
        )
        .select(self.view.index())
        .highlight_style(HILITE)
        .render(tabs, buf);
        match self.view {
            View::Mdevs => self.render_mdevs(main, buf),
            View::Findings => self.render_findings(main, buf),
            View::Events => self.render_events(main, buf),
            View::Probes => {
                let (table, panel) = super::degraded::split_probes_view(main, &self.info.probes);
                self.render_probes(table, buf);
                if let Some(panel) = panel {
                    super::degraded::render_panel(&self.info.probes, panel, buf);
                }
            }
            View::Migrations => self.render_migrations(main, buf),
        }
        self.render_sparklines(spark, buf);
        self.render_footer(footer, buf);
        if self.help {
            render_help(area, buf);
        }
    }
}

impl App {
    fn render_header(&self, area: Rect, buf: &mut Buffer) {
        let play = match &self.playback {
            // The run stopped (its deadline, a signal): the screen shows its last state.
            Playback::Live { .. } if self.ended => "■ ended".to_string(),
            Playback::Live { frozen: false } => "● live".to_string(),
            Playback::Live { frozen: true } => "❚❚ live (display frozen)".to_string(),
            Playback::Replay {
                paused,
                speed,
                position,
                total,
                seeking,
            } => {
                let state = if self.ended {
                    "■ ended"
                } else if *seeking {
                    "» seeking"
                } else if *paused {
                    "❚❚ paused"
                } else {
                    "▶ playing"
                };
                format!("{state} {speed}x  {position}/{total}")
            }
        };
        let errors: u64 = self
            .snapshot
            .findings_by_kind
            .iter()
            .filter(|(k, _)| k.severity() == Severity::Error)
            .map(|(_, n)| n)
            .sum();
        let total: u64 = self.snapshot.findings_by_kind.values().sum();
        let mut spans = vec![
            Span::styled(" aptrace ", Style::new().bold().reversed()),
            Span::raw(format!(
                " {} │ {play} │ {} events │ {} mdevs │ ",
                self.info.title,
                self.snapshot.events,
                self.snapshot.mdevs.len()
            )),
            Span::styled(
                format!("findings {total} ({errors} errors)"),
                if errors > 0 {
                    Style::new().fg(Color::Red).bold()
                } else {
                    Style::new()
                },
            ),
            Span::raw(" │ "),
            Span::styled(
                format!("lost {}", self.snapshot.lost_events),
                if self.snapshot.lost_events > 0 {
                    Style::new().fg(Color::Yellow)
                } else {
                    Style::new()
                },
            ),
        ];
        if self.snapshot.outstanding > 0 {
            spans.push(Span::raw(format!(
                " │ outstanding {} ({})",
                self.snapshot.outstanding,
                human_bytes(self.snapshot.outstanding_bytes)
            )));
        }
        Line::from(spans).render(area, buf);
    }

    fn render_footer(&self, area: Rect, buf: &mut Buffer) {
        let line = match &self.filter_edit {
            Some(edit) => Line::from(vec![
                Span::styled(" filter: ", Style::new().bold()),
                Span::raw(format!("/{edit}█")),
                Span::raw("   enter apply · esc cancel"),
            ]),
            None => Line::from(
                " q quit · ? help · tab view · ↑↓/jk move · enter detail · / filter · p pause · +/- speed · s step · n next finding",
            )
            .style(Style::new().fg(Color::DarkGray)),
        };
        line.render(area, buf);
    }

    fn render_mdevs(&self, area: Rect, buf: &mut Buffer) {
        if self.zoom {
            self.render_detail(area, buf);
            return;
        }
        let [top, bottom] =
            Layout::vertical([Constraint::Percentage(45), Constraint::Percentage(55)]).areas(area);
        let header = Row::new([
            "MDEV",
            "GUEST",
            "PHASE",
            "OPEN",
            "MIGRATION",
            "OUTST",
            "BYTES",
            "FINDINGS",
        ])
        .bold();
        // Only the rows on screen are built: thousands of mdevs cost nothing to draw.
        let sel = self.selected_mdev().map(|(i, _)| i);
        let (first, n) = window(sel, self.snapshot.mdevs.len(), top.height.saturating_sub(3));
        let rows = self.snapshot.mdevs[first..first + n].iter().map(|m| {
            let row = Row::new([
                mdev_label(&m.id),
                guest_label(m.guest.as_ref()),
                m.phase.name().to_string(),
                if m.open { "yes" } else { "no" }.to_string(),
                m.mig_state
                    .map(|s| s.name().to_string())
                    .unwrap_or_else(|| "-".into()),
                m.outstanding.to_string(),
                human_bytes(m.outstanding_bytes),
                m.findings.to_string(),
            ]);
            if m.findings > 0 {
                row.style(Style::new().fg(Color::Red))
            } else {
                row
            }
        });
        let table = Table::new(
            rows,
            [
                Constraint::Min(20),
                Constraint::Min(14),
                Constraint::Length(10),
                Constraint::Length(4),
                Constraint::Length(11),
                Constraint::Length(5),
                Constraint::Length(9),
                Constraint::Length(8),
            ],
        )
        .header(header)
        .row_highlight_style(HILITE)
        .block(Block::bordered().title(format!(" Mdevs ({}) ", self.snapshot.mdevs.len())));
        let mut state = TableState::default().with_selected(sel.map(|i| i - first));
        StatefulWidget::render(table, top, buf, &mut state);
        self.render_detail(bottom, buf);
    }

    fn render_detail(&self, area: Rect, buf: &mut Buffer) {
        let Some((_, m)) = self.selected_mdev() else {
            Paragraph::new("no mdev selected (none seen yet)")
                .block(Block::bordered().title(" Detail "))
                .render(area, buf);
            return;
        };
        let title = format!(
            " {} · {:#x} · {}{} · guest {} ",
            mdev_label(&m.id),
            m.id.ptr,
            m.phase.name(),
            if m.adopted { " (adopted)" } else { "" },
            guest_label(m.guest.as_ref())
        );
        let block = Block::bordered().title(title);
        let inner = block.inner(area);
        block.render(area, buf);
        let [left, right] =
            Layout::horizontal([Constraint::Percentage(55), Constraint::Percentage(45)])
                .areas(inner);
        self.render_timeline(m, left, buf);
        self.render_mdev_side(m, right, buf);
    }

    fn render_timeline(&self, m: &MdevView, area: Rect, buf: &mut Buffer) {
        let first = self.snapshot.first_ts_ns;
        let h = area.height.saturating_sub(1) as usize;
        let skip = m.timeline.len().saturating_sub(h);
        let mut lines = vec![Line::from(format!(
            "Timeline ({} entries{})",
            m.timeline.len(),
            if m.timeline_dropped > 0 {
                format!(", {} older dropped", m.timeline_dropped)
            } else {
                String::new()
            }
        ))
        .bold()];
        for e in &m.timeline[skip..] {
            let mut spans = vec![
                Span::styled(rel_time(e.ts_ns, first), Style::new().fg(Color::DarkGray)),
                Span::raw(format!(" #{:<6} {}", e.seq, e.what)),
            ];
            if let Some(s) = e.mig_state {
                spans.push(Span::styled(
                    format!(" [{s}]"),
                    Style::new().fg(Color::Cyan),
                ));
            }
            lines.push(Line::from(spans));
        }
        if m.timeline.is_empty() {
            lines.push(Line::from("(loading…)").fg(Color::DarkGray));
        }
        Paragraph::new(lines).render(area, buf);
    }

    fn render_mdev_side(&self, m: &MdevView, area: Rect, buf: &mut Buffer) {
        let mut lines: Vec<Line> = Vec::new();
        let mine: Vec<&Finding> = self
            .findings
            .iter()
            .filter(|f| f.mdev.as_ref().is_some_and(|r| r.key() == m.id.key()))
            .collect();
        lines.push(Line::from(format!("Findings ({})", m.findings)).bold());
        for f in mine.iter().rev().take(4).rev() {
            lines.push(Line::from(vec![
                Span::styled(format!("{} ", f.kind), severity_style(f.severity).bold()),
                Span::raw(f.function.as_deref().unwrap_or("").to_string()),
            ]));
        }
        let detail = self.detail.as_ref().filter(|d| d.key == m.id.key());
        lines.push(
            Line::from(format!(
                "Outstanding ({}, {})",
                m.outstanding,
                human_bytes(m.outstanding_bytes)
            ))
            .bold(),
        );
        match detail {
            Some(d) => {
                for o in d.outstanding.iter().take(6) {
                    lines.push(Line::from(format!(
                        "{:#x} {} from {}",
                        o.ptr,
                        human_bytes(o.bytes),
                        o.function
                    )));
                }
                if d.outstanding.len() > 6 {
                    lines.push(Line::from(format!("… {} more", d.outstanding.len() - 6)));
                }
            }
            None if m.outstanding > 0 => lines.push(Line::from("(loading…)").fg(Color::DarkGray)),
            None => {}
        }
        lines.push(Line::from("Lock checks (mdevs_lock on entry)").bold());
        match detail {
            Some(d) if !d.lock_checks.is_empty() => {
                let order_lines = match self.snapshot.lock_order.len() {
                    0 => 0,
                    n => 2 * n + 1 + super::lockgraph::nodes(&self.snapshot.lock_order).len(),
                };
                let room = (area.height as usize)
                    .saturating_sub(lines.len() + order_lines)
                    .max(1);
                let skip = d.lock_checks.len().saturating_sub(room);
                for c in &d.lock_checks[skip..] {
                    let verdict = if c.ok {
                        Span::styled("ok ", Style::new().fg(Color::Green))
                    } else {
                        Span::styled("VIOLATION ", Style::new().fg(Color::Red).bold())
                    };
                    lines.push(Line::from(vec![
                        verdict,
                        Span::raw(format!(
                            "{}: {} ({})",
                            c.function,
                            c.observed_text(),
                            c.contract_text()
                        )),
                    ]));
                }
            }
            _ => lines.push(Line::from("none recorded").fg(Color::DarkGray)),
        }
        // Edges are per lock class across every task, not about this mdev: shown only
        // when some were seen, with the lock each task held and the function that took.
        if !self.snapshot.lock_order.is_empty() {
            lines.push(Line::from("Lock order (every task; ⟳ on a cycle)").bold());
            // A graph: each lock held, then the locks taken under it. Two lines an edge:
            // the pane is half the screen wide, and kernel names are long.
            for node in super::lockgraph::nodes(&self.snapshot.lock_order) {
                lines.push(Line::from(node.lock.to_string()));
                for (e, cycle) in node.out {
                    let how = match &e.held_in {
                        Some(h) if *h == e.taker => "by its caller".to_string(),
                        Some(h) => format!("inside {h}"),
                        None => "holding it".to_string(),
                    };
                    let doubt = if e.uncertain { " (uncertain)" } else { "" };
                    let edge = Line::from(format!(
                        "  → {}{}{doubt}",
                        e.taken,
                        if cycle { " ⟳" } else { "" }
                    ));
                    lines.push(if cycle { edge.fg(Color::Red) } else { edge });
                    lines.push(
                        Line::from(format!("    by {} (pid {}, {how})", e.taker, e.task.tid))
                            .fg(Color::DarkGray),
                    );
                }
            }
        }
        Paragraph::new(lines).render(area, buf);
    }

    fn render_findings(&self, area: Rect, buf: &mut Buffer) {
        let [top, bottom] =
            Layout::vertical([Constraint::Percentage(40), Constraint::Percentage(60)]).areas(area);
        let first = self.snapshot.first_ts_ns;
        let (skip, n) = window(
            self.finding_sel,
            self.findings.len(),
            top.height.saturating_sub(3),
        );
        let rows = self
            .findings
            .iter()
            .enumerate()
            .skip(skip)
            .take(n)
            .map(|(i, f)| {
                Row::new([
                    format!("{}", i + 1),
                    f.severity.name().to_string(),
                    format!("{}{}", f.kind, if f.uncertain { "?" } else { "" }),
                    f.mdev
                        .as_ref()
                        .map(mdev_label)
                        .unwrap_or_else(|| "-".into()),
                    f.function.as_deref().unwrap_or("-").to_string(),
                    rel_time(f.ts_ns, first),
                ])
                .style(severity_style(f.severity))
            });
        let title = if self.findings_dropped > 0 {
            format!(
                " Findings ({}, {} older dropped) ",
                self.findings.len(),
                self.findings_dropped
            )
        } else {
            format!(" Findings ({}) ", self.findings.len())
        };
        let table = Table::new(
            rows,
            [
                Constraint::Length(4),
                Constraint::Length(7),
                Constraint::Length(22),
                Constraint::Min(20),
                Constraint::Min(20),
                Constraint::Length(12),
            ],
        )
        .header(Row::new(["#", "SEV", "KIND", "MDEV", "FUNCTION", "TIME"]).bold())
        .row_highlight_style(HILITE)
        .block(Block::bordered().title(title));
        let mut state = TableState::default().with_selected(self.finding_sel.map(|i| i - skip));
        StatefulWidget::render(table, top, buf, &mut state);

        let block = Block::bordered().title(" Evidence ");
        let Some(f) = self.selected_finding() else {
            let text = if self.findings.is_empty() {
                "no findings yet"
            } else {
                "press n (or ↑↓) to select a finding"
            };
            Paragraph::new(text).block(block).render(bottom, buf);
            return;
        };
        let mut lines = vec![
            Line::from(vec![
                Span::styled(
                    format!("{} {}", f.severity.name(), f.kind),
                    severity_style(f.severity).bold(),
                ),
                Span::raw(match (&f.uncertainty, f.uncertain) {
                    (Some(why), _) => format!("  (uncertain: {why})"),
                    (None, true) => "  (uncertain)".to_string(),
                    (None, false) => String::new(),
                }),
            ]),
            Line::from(f.message.clone()),
            Line::from(format!(
                "mdev {} · function {} · task {} · guest {} · at {}",
                f.mdev
                    .as_ref()
                    .map(|m| format!("{} ({:#x})", mdev_label(m), m.ptr))
                    .unwrap_or_else(|| "-".into()),
                f.function.as_deref().unwrap_or("-"),
                guest_label(f.task.as_ref()),
                guest_label(f.guest.as_ref()),
                rel_time(f.ts_ns, first),
            )),
            Line::from(format!("Evidence ({} events)", f.evidence.len())).bold(),
        ];
        for e in &f.evidence {
            lines.push(Line::from(vec![
                Span::styled(rel_time(e.ts_ns, first), Style::new().fg(Color::DarkGray)),
                Span::raw(format!(
                    " #{:<6} {:>6} {:<15} {}",
                    e.seq,
                    e.task.pid,
                    e.task.comm,
                    self.info.signatures.describe(e)
                )),
            ]));
        }
        if !f.stack.is_empty() {
            lines.push(Line::from("Stack").bold());
            for fr in &f.stack {
                lines.push(Line::from(format!("  {fr}")));
            }
        }
        Paragraph::new(lines)
            .wrap(Wrap { trim: false })
            .block(block)
            .render(bottom, buf);
    }

    fn render_events(&self, area: Rect, buf: &mut Buffer) {
        let h = area.height.saturating_sub(2) as usize;
        let first = self.snapshot.first_ts_ns;
        let lines: Vec<Line> = self
            .visible_log(h)
            .into_iter()
            .map(|l| {
                Line::from(vec![
                    Span::styled(rel_time(l.ts_ns, first), Style::new().fg(Color::DarkGray)),
                    Span::raw(format!(
                        " #{:<7} cpu{:<2} {:>6} {:<15} {}",
                        l.seq, l.cpu, l.pid, l.comm, l.text
                    )),
                ])
            })
            .collect();
        let mut title = format!(" Events ({} kept", self.log.len());
        if self.log_dropped > 0 {
            title.push_str(&format!(", {} older dropped", self.log_dropped));
        }
        title.push(')');
        if !self.filter.is_empty() {
            title.push_str(&format!(" filter /{}", self.filter));
        }
        if self.log_scroll > 0 {
            title.push_str(&format!(" · scrolled back {}", self.log_scroll));
        }
        title.push(' ');
        Paragraph::new(lines)
            .block(Block::bordered().title(title))
            .render(area, buf);
    }

    fn render_probes(&self, area: Rect, buf: &mut Buffer) {
        let rows = self.probe_rows().into_iter().map(|(name, probe, stats)| {
            let (state, detail, style) = match probe {
                Some(p) => {
                    let style = match p.state {
                        ProbeState::Attached => Style::new().fg(Color::Green),
                        ProbeState::Clone => Style::new().fg(Color::Cyan),
                        ProbeState::Missing | ProbeState::Degraded => {
                            Style::new().fg(Color::Yellow)
                        }
                        ProbeState::Failed => Style::new().fg(Color::Red),
                    };
                    let state = match p.state {
                        ProbeState::Missing => "missing/inlined".to_string(),
                        s => s.name().to_string(),
                    };
                    (state, p.detail.clone(), style)
                }
                None => (
                    "not recorded".to_string(),
                    String::new(),
                    Style::new().fg(Color::DarkGray),
                ),
            };
            let (calls, fails, p50, p99, max) = match stats {
                Some(s) => (
                    s.entries.to_string(),
                    s.failures.to_string(),
                    latency(s.p50_ns),
                    latency(s.p99_ns),
                    latency((s.max_ns > 0).then_some(s.max_ns)),
                ),
                None => ("-".into(), "-".into(), "-".into(), "-".into(), "-".into()),
            };
            Row::new(vec![name, state, calls, fails, p50, p99, max, detail]).style(style)
        });
        let table = Table::new(
            rows,
            [
                Constraint::Length(36),
                Constraint::Length(15),
                Constraint::Length(8),
                Constraint::Length(6),
                Constraint::Length(8),
                Constraint::Length(8),
                Constraint::Length(8),
                Constraint::Min(10),
            ],
        )
        .header(Row::new(["FUNCTION", "PROBE", "CALLS", "FAILED", "P50", "P99", "MAX", "DETAIL"]).bold())
        .row_highlight_style(HILITE)
        .block(
            Block::bordered()
                .title(" Probes ")
                .title_bottom(" missing/inlined: not in the running kernel, or inlined (without debug info the two look alike) "),
        );
        let mut state = TableState::default().with_selected(Some(self.probe_sel));
        StatefulWidget::render(table, area, buf, &mut state);
    }

    fn render_sparklines(&self, area: Rect, buf: &mut Buffer) {
        let [left, right] =
            Layout::horizontal([Constraint::Percentage(75), Constraint::Percentage(25)])
                .areas(area);
        let now = |v: &[u64]| v.last().copied().unwrap_or(0);
        let tail = |v: &[u64], w: u16| -> Vec<u64> {
            let w = w.saturating_sub(2) as usize;
            v[v.len().saturating_sub(w)..].to_vec()
        };
        Sparkline::default()
            .data(tail(&self.rate, left.width))
            .style(Style::new().fg(Color::Green))
            .block(Block::bordered().title(format!(
                " events/s: {} now, peak {} ",
                now(&self.rate),
                self.rate.iter().max().copied().unwrap_or(0)
            )))
            .render(left, buf);
        Sparkline::default()
            .data(tail(&self.lost_rate, right.width))
            .style(Style::new().fg(Color::Red))
            .block(Block::bordered().title(format!(
                " lost/s: {} (total {}) ",
                now(&self.lost_rate),
                self.snapshot.lost_events
            )))
            .render(right, buf);
    }
}

/// The rows of a list of `len` to build for `height` lines so that `sel` is visible:
/// (first, count).
fn window(sel: Option<usize>, len: usize, height: u16) -> (usize, usize) {
    let h = (height as usize).max(1);
    let first = sel.map_or(0, |s| s.saturating_sub(h - 1)).min(len);
    (first, h.min(len - first))
}

const HELP: &[(&str, &str)] = &[
    (
        "tab / shift-tab, 1-5",
        "switch view: mdevs, findings, events, probes, migrations",
    ),
    (
        "↑ ↓ / k j, PgUp PgDn, g G",
        "move the selection (events: scroll back in time)",
    ),
    (
        "enter",
        "mdevs: zoom the detail · findings: go to the finding's mdev",
    ),
    ("esc", "leave the zoom · clear the event filter"),
    ("/", "filter the event log (text, comm, pid, #seq)"),
    ("p or space", "pause / resume (live: freeze the display)"),
    ("+ / -", "replay speed (0.25x to 64x)"),
    ("s or .", "single step one event (replay, paused)"),
    (
        "n / N",
        "next finding (runs the replay on to the next one) / previous",
    ),
    ("?", "this help"),
    ("q", "quit"),
];

fn render_help(area: Rect, buf: &mut Buffer) {
    let w = 96.min(area.width);
    let h = (HELP.len() as u16 + 4).min(area.height);
    let popup = Rect {
        x: area.x + (area.width - w) / 2,
        y: area.y + (area.height - h) / 2,
        width: w,
        height: h,
    };
    Clear.render(popup, buf);
    let lines: Vec<Line> = HELP
        .iter()
        .map(|(k, v)| {
            Line::from(vec![
                Span::styled(format!("{k:<26}"), Style::new().bold()),
                Span::raw(*v),
            ])
        })
        .collect();
    Paragraph::new(lines)
        .block(
            Block::bordered()
                .title(" Keys ")
                .title_bottom(" any key closes "),
        )
        .render(popup, buf);
}
