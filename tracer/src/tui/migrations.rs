//! The Migrations view: every STOP_COPY or RESUMING session of the source (and, with
//! `aptrace tui SRC DST`, of the other host's recording), and the selected session's states,
//! bytes against size, stop time and the session it pairs with. Reads the App, changes
//! nothing.

use ratatui::buffer::Buffer;
use ratatui::layout::{Constraint, Layout, Rect};
use ratatui::style::{Color, Style, Stylize};
use ratatui::text::Line;
use ratatui::widgets::{Block, Paragraph, Row, StatefulWidget, Table, TableState, Widget, Wrap};

use super::app::App;
use super::engine::rel_time;
use crate::audit::migration::pair::{pair, Paired, Side, Sourced};
use crate::audit::migration::session::{Session, SessionEnd};
use crate::model::human_ns;

const HILITE: Style = Style::new().add_modifier(ratatui::style::Modifier::REVERSED);

/// The other host's recording of the same migration, audited before the UI starts.
#[derive(Clone, Debug, Default)]
pub struct Peer {
    /// Its file name, for the HOST column.
    pub title: String,
    /// Its header's boot-to-wall offset, to compare times across the two hosts.
    pub boot_to_wall_ns: i64,
    /// Its first event's time, which its times are shown from.
    pub first_ts_ns: Option<u64>,
    pub sessions: Vec<Session>,
}

fn mdev_text(s: &Session) -> String {
    let mut t = match &s.mdev.uuid {
        Some(u) => u.to_string(),
        None => format!("{:#x}", s.mdev.ptr),
    };
    if s.mdev.incarnation > 0 {
        t.push_str(&format!(" life {}", s.mdev.incarnation));
    }
    t
}

fn end_text(s: &Session) -> String {
    match s.end {
        SessionEnd::Open => "open".into(),
        e => e.name().into(),
    }
}

impl App {
    /// The rows of the view: (0 this source, 1 the peer; the session), each source's in
    /// start order.
    pub fn migration_rows(&self) -> Vec<(usize, &Session)> {
        let own = self.snapshot.migrations.iter().map(|s| (0, s));
        let peer = self
            .info
            .peer
            .iter()
            .flat_map(|p| p.sessions.iter().map(|s| (1, s)));
        own.chain(peer).collect()
    }

    /// Save sessions paired with restore sessions across this source and the peer (or
    /// within this source when there is no peer).
    pub fn migration_pairs(&self) -> Vec<Paired> {
        let peer_off = self.info.peer.as_ref().map_or(0, |p| p.boot_to_wall_ns);
        let all: Vec<Sourced> = self
            .migration_rows()
            .into_iter()
            .map(|(source, session)| Sourced {
                source,
                boot_to_wall_ns: if source == 0 {
                    self.info.boot_to_wall_ns
                } else {
                    peer_off
                },
                session,
            })
            .collect();
        pair(&all)
    }

    fn host(&self, source: usize) -> String {
        match (source, &self.info.peer) {
            (0, _) => "this".into(),
            (_, Some(p)) => p.title.clone(),
            _ => "?".into(),
        }
    }

    pub(super) fn render_migrations(&self, area: Rect, buf: &mut Buffer) {
        let rows = self.migration_rows();
        let [top, bottom] =
            Layout::vertical([Constraint::Percentage(50), Constraint::Percentage(50)]).areas(area);
        let sel = (!rows.is_empty()).then(|| self.mig_sel.min(rows.len() - 1));
        let height = top.height.saturating_sub(3) as usize;
        let first = sel.map_or(0, |s| s.saturating_sub(height.max(1) - 1));
        let show_host = self.info.peer.is_some();
        let table_rows = rows.iter().skip(first).take(height.max(1)).map(|(src, s)| {
            let last = s.states.last();
            let mut cells = Vec::new();
            if show_host {
                cells.push(self.host(*src));
            }
            cells.extend([
                format!("#{}", s.id),
                s.direction.name().to_string(),
                mdev_text(s),
                s.guest_label(),
                last.map_or("-".into(), |t| t.state.name().to_string()),
                last.map_or("-".into(), |t| human_ns(t.ns)),
                s.bytes_text(),
                human_ns(s.stopped_ns),
                end_text(s),
            ]);
            let row = Row::new(cells);
            match s.end {
                SessionEnd::Error => row.style(Style::new().fg(Color::Red)),
                SessionEnd::Open => row.style(Style::new().fg(Color::Cyan)),
                _ => row,
            }
        });
        let mut header = vec![
            "#",
            "DIR",
            "MDEV",
            "GUEST",
            "LAST STATE",
            "IN IT",
            "BYTES / SIZE",
            "STOPPED",
            "END",
        ];
        let mut widths = vec![
            Constraint::Length(4),
            Constraint::Length(7),
            Constraint::Min(20),
            Constraint::Length(10),
            Constraint::Length(10),
            Constraint::Length(9),
            Constraint::Length(24),
            Constraint::Length(8),
            Constraint::Length(7),
        ];
        if show_host {
            header.insert(0, "HOST");
            widths.insert(0, Constraint::Length(16));
        }
        let title = match &self.info.peer {
            Some(p) => format!(
                " Migrations ({} here, {} in {}) ",
                self.snapshot.migrations.len(),
                p.sessions.len(),
                p.title
            ),
            None => format!(" Migrations ({}) ", rows.len()),
        };
        let table = Table::new(table_rows, widths)
            .header(Row::new(header).bold())
            .row_highlight_style(HILITE)
            .block(Block::bordered().title(title));
        let mut state = TableState::default().with_selected(sel.map(|i| i - first));
        StatefulWidget::render(table, top, buf, &mut state);

        let lines = match sel.map(|i| rows[i]) {
            Some((src, s)) => self.session_detail(src, s),
            None => vec![Line::from(
                "no migration session yet: a device entering STOP_COPY or RESUMING starts one",
            )],
        };
        Paragraph::new(lines)
            .wrap(Wrap { trim: false })
            .block(Block::bordered().title(" Session "))
            .render(bottom, buf);
    }

    fn session_detail(&self, src: usize, s: &Session) -> Vec<Line<'static>> {
        let first = match (src, &self.info.peer) {
            (0, _) => self.snapshot.first_ts_ns,
            (_, Some(p)) => p.first_ts_ns,
            _ => None,
        };
        let mut lines = vec![
            Line::from(format!(
                "{} #{} of {} · guest {}{}",
                s.direction.name(),
                s.id,
                mdev_text(s),
                s.guest_label(),
                s.guest
                    .as_ref()
                    .map(|g| format!(" (pid {} {})", g.pid, g.comm))
                    .unwrap_or_default()
            ))
            .bold(),
            Line::from(format!(
                "started {} · {} · lasted {}{}",
                rel_time(s.start_ts_ns, first),
                match s.end {
                    SessionEnd::Open => "still open".to_string(),
                    e => format!("ended {}", e.name()),
                },
                human_ns(s.duration_ns),
                s.file
                    .map(|f| format!(" · file {f:#x}"))
                    .unwrap_or_default()
            )),
        ];
        lines.push(Line::from("time in each state:"));
        for t in &s.states {
            lines.push(Line::from(format!(
                "  {:<12} {:>10}   from {}",
                t.state.name(),
                human_ns(t.ns),
                rel_time(t.entered_ts_ns, first)
            )));
        }
        let verb = match s.direction {
            crate::audit::migration::session::Direction::Save => "read",
            crate::audit::migration::session::Direction::Restore => "written",
        };
        lines.push(Line::from(format!(
            "bytes {}: {} in {} call(s){} · device stopped {}",
            verb,
            s.bytes_text(),
            s.transfers,
            if s.failed_transfers > 0 {
                format!(", {} failed", s.failed_transfers)
            } else {
                String::new()
            },
            human_ns(s.stopped_ns)
        )));
        let paired = self.migration_pairs().into_iter().find(|p| {
            let is = |side: &Side| side.source == src && side.session == s.id;
            is(&p.save) || is(&p.restore)
        });
        lines.push(match paired {
            Some(p) => {
                let (other, what) = if p.save.source == src && p.save.session == s.id {
                    (&p.restore, "restore")
                } else {
                    (&p.save, "save")
                };
                Line::from(format!(
                    "paired by {} with {what} #{} in {} · {} · downtime {} · total {}",
                    p.matched_by.name(),
                    other.session,
                    self.host(other.source),
                    if p.bytes_agree {
                        "bytes agree".to_string()
                    } else {
                        format!("BYTES DIFFER ({} vs {})", p.save.bytes, p.restore.bytes)
                    },
                    p.downtime_ns.map_or("-".into(), human_ns),
                    p.total_ns.map_or("-".into(), human_ns)
                ))
                .fg(if p.bytes_agree {
                    Color::Green
                } else {
                    Color::Red
                })
            }
            None => Line::from(if self.info.peer.is_some() {
                "not paired with a session of the other recording"
            } else {
                "not paired (aptrace tui SRC DST pairs a save with the other host's restore)"
            })
            .fg(Color::DarkGray),
        });
        lines
    }
}
