//! The App: the state the screen shows, and what keys do to it. It takes everything through
//! one channel of [`AppEvent`]s (ticks, keys, data) and never knows whether the data comes
//! from a kernel or a recording. Drawing is [`super::view`]'s `impl Widget for &App`.

use std::collections::VecDeque;
use std::sync::mpsc::{Receiver, Sender};
use std::time::{Duration, Instant};

use ratatui::backend::Backend;
use ratatui::crossterm::event::{KeyCode, KeyEvent, KeyEventKind, KeyModifiers};
use ratatui::Terminal;

use super::engine::{FunctionRow, LogLine, MdevDetail, Playback, Update};
use super::feed::Control;
use crate::audit::{Finding, LifeKey, MdevRef, MdevView, Snapshot};
use crate::recording::ProbeStatus;

/// Log lines the App keeps (a ring: older ones are dropped and counted).
pub const LOG_CAP: usize = 10_000;
/// Findings the App keeps.
pub const FINDINGS_CAP: usize = 5_000;
/// Draws are at least this far apart, however fast data comes.
pub const DRAW_INTERVAL: Duration = Duration::from_millis(50);

/// Everything the App reacts to, merged into one channel.
#[derive(Debug)]
pub enum AppEvent {
    /// Time passes: draw what changed.
    Tick,
    Key(KeyEvent),
    Resize,
    /// New state from the engine.
    Data(Box<Update>),
    /// The source stopped without a last update (a live run that failed to start).
    Ended,
    /// The live agent (re)attached its probes: the probes view and the degraded line.
    Probes(Vec<ProbeStatus>),
    /// SIGTERM / SIGHUP / SIGINT: leave cleanly.
    Terminate,
}

/// The tabs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum View {
    Mdevs,
    Findings,
    Events,
    Probes,
    Migrations,
}

impl View {
    pub const ALL: [View; 5] = [
        View::Mdevs,
        View::Findings,
        View::Events,
        View::Probes,
        View::Migrations,
    ];
    pub fn title(self) -> &'static str {
        match self {
            View::Mdevs => "Mdevs",
            View::Findings => "Findings",
            View::Events => "Events",
            View::Probes => "Probes",
            View::Migrations => "Migrations",
        }
    }
    pub fn index(self) -> usize {
        View::ALL.iter().position(|&v| v == self).expect("listed")
    }
    fn next(self) -> View {
        View::ALL[(self.index() + 1) % View::ALL.len()]
    }
    fn prev(self) -> View {
        View::ALL[(self.index() + View::ALL.len() - 1) % View::ALL.len()]
    }
}

/// What is known about the source before any event: for the title and the probes view.
#[derive(Clone, Debug, Default)]
pub struct SourceInfo {
    /// `replay of FILE`, `live on HOST`...
    pub title: String,
    /// Which probes attached (from the recording header or the loader).
    pub probes: Vec<ProbeStatus>,
    /// The profile's functions, in profile order.
    pub functions: Vec<String>,
    /// Their signatures, to print evidence as the kernel means it.
    pub signatures: crate::calls::show::Signatures,
    /// Add to boot-clock times for Unix time (0: unknown), to compare with a peer's.
    pub boot_to_wall_ns: i64,
    /// The other host's recording (`aptrace tui SRC DST`): its sessions, for pairing.
    pub peer: Option<super::migrations::Peer>,
}

/// The TUI's state.
pub struct App {
    pub info: SourceInfo,
    controls: Option<Sender<Control>>,
    pub view: View,
    pub snapshot: Snapshot,
    pub functions: Vec<FunctionRow>,
    pub detail: Option<MdevDetail>,
    pub playback: Playback,
    pub ended: bool,
    pub rate: Vec<u64>,
    pub lost_rate: Vec<u64>,
    pub findings: VecDeque<Finding>,
    pub findings_dropped: u64,
    pub log: VecDeque<LogLine>,
    pub log_dropped: u64,
    /// The selected mdev life (its row moves as mdevs come and go).
    pub mdev_sel: Option<LifeKey>,
    pub finding_sel: Option<usize>,
    /// Matching log lines skipped from the newest (0 follows the stream).
    pub log_scroll: usize,
    pub probe_sel: usize,
    /// The selected row of the Migrations view.
    pub mig_sel: usize,
    /// The event-log filter (lower-case substring).
    pub filter: String,
    /// The filter being typed after `/`.
    pub filter_edit: Option<String>,
    /// The selected mdev's detail fills the screen.
    pub zoom: bool,
    pub help: bool,
    pub quit: bool,
    /// `n` found no further finding: the next one to arrive is selected.
    seek_pending: bool,
    /// Test hook for the terminal-restore test: this key panics (`APTRACE_TUI_PANIC_KEY`).
    pub panic_key: Option<char>,
}

impl App {
    /// An App that sends its controls (pause, speed, selection) to `controls`.
    pub fn new(info: SourceInfo, controls: Option<Sender<Control>>) -> App {
        App {
            info,
            controls,
            view: View::Mdevs,
            snapshot: Snapshot::default(),
            functions: Vec::new(),
            detail: None,
            playback: Playback::default(),
            ended: false,
            rate: Vec::new(),
            lost_rate: Vec::new(),
            findings: VecDeque::new(),
            findings_dropped: 0,
            log: VecDeque::new(),
            log_dropped: 0,
            mdev_sel: None,
            finding_sel: None,
            log_scroll: 0,
            probe_sel: 0,
            mig_sel: 0,
            filter: String::new(),
            filter_edit: None,
            zoom: false,
            help: false,
            quit: false,
            seek_pending: false,
            panic_key: None,
        }
    }

    fn send(&self, c: Control) {
        if let Some(tx) = &self.controls {
            let _ = tx.send(c);
        }
    }

    /// Runs until `q`: draws (throttled) and handles events from the one channel.
    pub fn run<B: Backend>(
        &mut self,
        terminal: &mut Terminal<B>,
        rx: &Receiver<AppEvent>,
    ) -> Result<(), B::Error> {
        let mut last_draw: Option<Instant> = None;
        let mut dirty = true;
        while !self.quit {
            if dirty && last_draw.is_none_or(|t| t.elapsed() >= DRAW_INTERVAL) {
                terminal.draw(|f| f.render_widget(&*self, f.area()))?;
                last_draw = Some(Instant::now());
                dirty = false;
            }
            let Ok(ev) = rx.recv() else { break };
            dirty |= self.handle_event(ev);
            // Take everything queued before drawing again.
            while !self.quit {
                match rx.try_recv() {
                    Ok(ev) => dirty |= self.handle_event(ev),
                    Err(_) => break,
                }
            }
        }
        self.send(Control::Quit);
        Ok(())
    }

    /// Applies one event. Returns true when the screen should be redrawn.
    pub fn handle_event(&mut self, ev: AppEvent) -> bool {
        match ev {
            AppEvent::Tick => false,
            AppEvent::Resize => true,
            AppEvent::Probes(p) => {
                self.info.probes = p;
                true
            }
            AppEvent::Terminate => {
                self.quit = true;
                true
            }
            AppEvent::Key(k) => {
                if k.kind == KeyEventKind::Press || k.kind == KeyEventKind::Repeat {
                    self.on_key(k);
                    true
                } else {
                    false
                }
            }
            AppEvent::Data(u) => {
                self.on_update(*u);
                true
            }
            AppEvent::Ended => {
                self.ended = true;
                self.seek_pending = false;
                true
            }
        }
    }

    fn on_update(&mut self, mut u: Update) {
        let n_new = u.new_findings.len();
        self.findings_dropped += u.findings_dropped;
        let mut shifted = 0;
        for f in u.new_findings.drain(..) {
            if self.findings.len() == FINDINGS_CAP {
                self.findings.pop_front();
                self.findings_dropped += 1;
                shifted += 1;
            }
            self.findings.push_back(f);
        }
        if shifted > 0 {
            self.finding_sel = self.finding_sel.and_then(|i| i.checked_sub(shifted));
        }
        self.log_dropped += u.log_dropped;
        for l in u.new_log.drain(..) {
            if self.log.len() == LOG_CAP {
                self.log.pop_front();
                self.log_dropped += 1;
            }
            self.log.push_back(l);
        }
        self.snapshot = std::mem::take(&mut u.snapshot);
        self.functions = std::mem::take(&mut u.functions);
        if u.detail.as_ref().map(|d| d.key) == self.mdev_sel || self.mdev_sel.is_none() {
            self.detail = u.detail.take();
        }
        self.playback = u.playback.clone();
        self.ended = u.ended;
        self.rate = std::mem::take(&mut u.rate);
        self.lost_rate = std::mem::take(&mut u.lost_rate);
        if self.mdev_sel.is_none() {
            if let Some(m) = self.snapshot.mdevs.first() {
                self.select_mdev(Some(m.id.key()));
            }
        }
        if self.seek_pending && n_new > 0 {
            self.seek_pending = false;
            self.select_finding(self.findings.len().saturating_sub(n_new));
        }
        if self.seek_pending && self.ended {
            self.seek_pending = false;
        }
    }

    fn select_mdev(&mut self, key: Option<LifeKey>) {
        if self.mdev_sel != key {
            self.mdev_sel = key;
            if self.detail.as_ref().map(|d| d.key) != key {
                self.detail = None;
            }
            self.send(Control::Select(key));
        }
    }

    fn select_finding(&mut self, i: usize) {
        if let Some(f) = self.findings.get(i) {
            let key = f.mdev.as_ref().map(MdevRef::key);
            self.finding_sel = Some(i);
            self.view = View::Findings;
            if key.is_some() {
                self.select_mdev(key);
            }
        }
    }

    /// The selected mdev's row.
    pub fn selected_mdev(&self) -> Option<(usize, &MdevView)> {
        let key = self.mdev_sel?;
        self.snapshot
            .mdevs
            .iter()
            .enumerate()
            .find(|(_, m)| m.id.key() == key)
    }

    pub fn selected_finding(&self) -> Option<&Finding> {
        self.finding_sel.and_then(|i| self.findings.get(i))
    }

    /// Log lines matching the filter, newest last, at most `n`, after skipping `log_scroll`
    /// from the newest.
    pub fn visible_log(&self, n: usize) -> Vec<&LogLine> {
        let mut v: Vec<&LogLine> = self
            .log
            .iter()
            .rev()
            .filter(|l| l.matches(&self.filter))
            .skip(self.log_scroll)
            .take(n)
            .collect();
        v.reverse();
        v
    }

    fn on_key(&mut self, k: KeyEvent) {
        if k.modifiers.contains(KeyModifiers::CONTROL) && k.code == KeyCode::Char('c') {
            self.quit = true;
            return;
        }
        if let Some(edit) = &mut self.filter_edit {
            match k.code {
                KeyCode::Enter => {
                    self.filter = edit.to_lowercase();
                    self.filter_edit = None;
                    self.log_scroll = 0;
                }
                KeyCode::Esc => self.filter_edit = None,
                KeyCode::Backspace => {
                    edit.pop();
                }
                KeyCode::Char(c) => edit.push(c),
                _ => {}
            }
            return;
        }
        if self.help {
            match k.code {
                KeyCode::Char('q') => self.quit = true,
                _ => self.help = false,
            }
            return;
        }
        if let (Some(p), KeyCode::Char(c)) = (self.panic_key, k.code) {
            assert!(
                p != c,
                "panic requested with the {c:?} key (APTRACE_TUI_PANIC_KEY)"
            );
        }
        match k.code {
            KeyCode::Char('q') => self.quit = true,
            KeyCode::Char('?') => self.help = true,
            KeyCode::Tab => self.view = self.view.next(),
            KeyCode::BackTab => self.view = self.view.prev(),
            KeyCode::Char(c @ '1'..='5') => self.view = View::ALL[c as usize - '1' as usize],
            KeyCode::Char('/') => {
                self.view = View::Events;
                self.filter_edit = Some(self.filter.clone());
            }
            KeyCode::Char('p') | KeyCode::Char(' ') => self.send(Control::TogglePause),
            KeyCode::Char('+') | KeyCode::Char('>') | KeyCode::Char('f') => {
                self.send(Control::Faster)
            }
            KeyCode::Char('-') | KeyCode::Char('<') | KeyCode::Char('d') => {
                self.send(Control::Slower)
            }
            KeyCode::Char('s') | KeyCode::Char('.') => self.send(Control::Step),
            KeyCode::Char('n') => self.next_finding(),
            KeyCode::Char('N') => {
                if let Some(i) = self.finding_sel.and_then(|i| i.checked_sub(1)) {
                    self.select_finding(i);
                }
            }
            KeyCode::Esc => {
                if self.zoom {
                    self.zoom = false;
                } else if self.view == View::Events {
                    self.filter.clear();
                    self.log_scroll = 0;
                }
            }
            KeyCode::Enter => match self.view {
                View::Mdevs => self.zoom = !self.zoom,
                View::Findings => {
                    if let Some(key) = self
                        .selected_finding()
                        .and_then(|f| f.mdev.as_ref())
                        .map(MdevRef::key)
                    {
                        self.select_mdev(Some(key));
                        self.view = View::Mdevs;
                        self.zoom = true;
                    }
                }
                _ => {}
            },
            KeyCode::Up | KeyCode::Char('k') => self.move_by(-1),
            KeyCode::Down | KeyCode::Char('j') => self.move_by(1),
            KeyCode::PageUp => self.move_by(-20),
            KeyCode::PageDown => self.move_by(20),
            KeyCode::Home | KeyCode::Char('g') => self.move_by(i64::MIN / 2),
            KeyCode::End | KeyCode::Char('G') => self.move_by(i64::MAX / 2),
            _ => {}
        }
    }

    fn next_finding(&mut self) {
        let next = self.finding_sel.map_or(0, |i| i + 1);
        if next < self.findings.len() {
            self.select_finding(next);
        } else if !self.ended {
            self.seek_pending = true;
            self.send(Control::SeekFinding);
        }
    }

    fn move_by(&mut self, delta: i64) {
        let clamp = |cur: usize, len: usize| -> usize {
            if len == 0 {
                return 0;
            }
            (cur as i64).saturating_add(delta).clamp(0, len as i64 - 1) as usize
        };
        match self.view {
            View::Mdevs => {
                let len = self.snapshot.mdevs.len();
                if len == 0 {
                    return;
                }
                let cur = self.selected_mdev().map_or(0, |(i, _)| i);
                let key = self.snapshot.mdevs[clamp(cur, len)].id.key();
                self.select_mdev(Some(key));
            }
            View::Findings => {
                if !self.findings.is_empty() {
                    let cur = self.finding_sel.unwrap_or(0);
                    self.select_finding(clamp(cur, self.findings.len()));
                }
            }
            View::Events => {
                // Up goes back in time (away from the newest line).
                let max = self.log.len().saturating_sub(1) as i64;
                self.log_scroll =
                    (self.log_scroll as i64).saturating_sub(delta).clamp(0, max) as usize;
            }
            View::Probes => {
                let len = self.probe_rows_len();
                self.probe_sel = clamp(self.probe_sel, len);
            }
            View::Migrations => {
                let len = self.migration_rows().len();
                self.mig_sel = clamp(self.mig_sel.min(len.saturating_sub(1)), len);
            }
        }
    }

    /// Rows of the probes view: the profile's functions, then probes outside it.
    pub fn probe_rows(&self) -> Vec<(String, Option<&ProbeStatus>, Option<&FunctionRow>)> {
        let mut names: Vec<String> = self.info.functions.clone();
        for f in &self.functions {
            if !names.contains(&f.name) {
                names.push(f.name.clone());
            }
        }
        for p in &self.info.probes {
            let base = crate::profile::strip_clone_suffix(&p.name).0;
            if !names.iter().any(|n| n == base || *n == p.name) {
                names.push(p.name.clone());
            }
        }
        names
            .into_iter()
            .map(|n| {
                let probe =
                    self.info.probes.iter().find(|p| {
                        p.name == n || crate::profile::strip_clone_suffix(&p.name).0 == n
                    });
                let stats = self.functions.iter().find(|f| f.name == n);
                (n, probe, stats)
            })
            .collect()
    }

    fn probe_rows_len(&self) -> usize {
        self.probe_rows().len()
    }
}
