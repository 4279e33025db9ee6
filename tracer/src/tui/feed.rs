//! The thread that replays a recording: it moves events from a [`Source`] through the
//! [`Engine`] (the recording's own pipeline) and sends [`Update`]s to the App's one channel.
//! A live run has no feed thread: its screen is a sink of the agent's pipeline
//! ([`super::live`]).

use std::collections::VecDeque;
use std::sync::mpsc::{Receiver, RecvTimeoutError, Sender, TryRecvError};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use super::app::AppEvent;
use super::engine::{Engine, Playback};
use crate::audit::LifeKey;
use crate::model::Event;

/// Replay speeds, slowest first.
pub const SPEEDS: [f64; 9] = [0.25, 0.5, 1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0];
/// Events ingested between two looks at the controls and the clock.
const BATCH: usize = 4_096;
/// The shortest spacing of updates; it grows when snapshots get expensive.
pub(super) const MIN_UPDATE_INTERVAL: Duration = Duration::from_millis(100);
/// A quiet gap in a recording longer than this (at the current speed) is skipped.
const MAX_REPLAY_GAP: Duration = Duration::from_secs(2);

/// What the App asks of the source side. A live source honours what it can (pause freezes
/// the display; speed and step do nothing).
#[derive(Clone, Debug, PartialEq)]
pub enum Control {
    TogglePause,
    Faster,
    Slower,
    /// One event (replay, while paused).
    Step,
    /// Run until the next finding, then pause.
    SeekFinding,
    /// Pause (replay) or freeze the display (live) now.
    Hold,
    /// The mdev whose detail the App shows.
    Select(Option<LifeKey>),
    Quit,
}

/// What a poll of a source found.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SourceState {
    /// Events were added (maybe more are due).
    Ready,
    /// Nothing due for about this long.
    Idle(Duration),
    Ended,
}

/// Where a replay's events come from, and at what pace.
pub trait Source: Send {
    /// Appends up to `max` events that are due now.
    fn poll(&mut self, out: &mut Vec<Event>, max: usize) -> SourceState;
    fn control(&mut self, c: &Control);
    fn playback(&self) -> Playback;
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Mode {
    Playing,
    Paused,
    Seeking,
}

/// A recording replayed at a speed, by its kernel timestamps.
pub struct Replay {
    events: VecDeque<Event>,
    total: usize,
    mode: Mode,
    speed: usize,
    steps: usize,
    /// Wall clock and kernel time that correspond.
    anchor: Option<(Instant, u64)>,
}

impl Replay {
    pub fn new(events: Vec<Event>, speed: f64, paused: bool) -> Replay {
        let speed = SPEEDS
            .iter()
            .position(|&s| s >= speed)
            .unwrap_or(SPEEDS.len() - 1);
        Replay {
            total: events.len(),
            events: events.into(),
            mode: if paused { Mode::Paused } else { Mode::Playing },
            speed,
            steps: 0,
            anchor: None,
        }
    }

    fn position(&self) -> usize {
        self.total - self.events.len()
    }
}

impl Source for Replay {
    fn poll(&mut self, out: &mut Vec<Event>, max: usize) -> SourceState {
        let Some(next) = self.events.front() else {
            return SourceState::Ended;
        };
        match self.mode {
            Mode::Paused => {
                if self.steps > 0 {
                    self.steps -= 1;
                    out.extend(self.events.pop_front());
                    SourceState::Ready
                } else {
                    SourceState::Idle(Duration::from_millis(100))
                }
            }
            Mode::Seeking => {
                let n = max.min(self.events.len());
                out.extend(self.events.drain(..n));
                SourceState::Ready
            }
            Mode::Playing => {
                let now = Instant::now();
                let speed = SPEEDS[self.speed];
                let (t0, k0) = *self.anchor.get_or_insert((now, next.ts_ns));
                let mut play = k0 + (now.duration_since(t0).as_nanos() as f64 * speed) as u64;
                if next.ts_ns > play {
                    let wait = Duration::from_nanos(((next.ts_ns - play) as f64 / speed) as u64);
                    if wait <= MAX_REPLAY_GAP {
                        return SourceState::Idle(wait);
                    }
                    // A long quiet stretch: skip it.
                    self.anchor = Some((now, next.ts_ns));
                    play = next.ts_ns;
                }
                let start = out.len();
                while out.len() - start < max {
                    match self.events.front() {
                        Some(e) if e.ts_ns <= play => out.extend(self.events.pop_front()),
                        _ => break,
                    }
                }
                SourceState::Ready
            }
        }
    }

    fn control(&mut self, c: &Control) {
        match c {
            Control::TogglePause => {
                self.mode = match self.mode {
                    Mode::Playing | Mode::Seeking => Mode::Paused,
                    Mode::Paused => Mode::Playing,
                };
                self.anchor = None;
                self.steps = 0;
            }
            Control::Faster => {
                self.speed = (self.speed + 1).min(SPEEDS.len() - 1);
                self.anchor = None;
            }
            Control::Slower => {
                self.speed = self.speed.saturating_sub(1);
                self.anchor = None;
            }
            Control::Step => {
                if self.mode != Mode::Paused {
                    self.mode = Mode::Paused;
                } else {
                    self.steps += 1;
                }
            }
            Control::SeekFinding => self.mode = Mode::Seeking,
            Control::Hold => {
                self.mode = Mode::Paused;
                self.anchor = None;
            }
            Control::Select(_) | Control::Quit => {}
        }
    }

    fn playback(&self) -> Playback {
        Playback::Replay {
            paused: self.mode == Mode::Paused,
            speed: SPEEDS[self.speed],
            position: self.position(),
            total: self.total,
            seeking: self.mode == Mode::Seeking,
        }
    }
}

/// The loop that owns the engine.
pub struct Feed<S: Source> {
    source: S,
    engine: Engine,
    controls: Receiver<Control>,
    out: Sender<AppEvent>,
    selected: Option<LifeKey>,
    seeking: bool,
}

impl<S: Source> Feed<S> {
    pub fn new(
        source: S,
        engine: Engine,
        controls: Receiver<Control>,
        out: Sender<AppEvent>,
    ) -> Feed<S> {
        Feed {
            source,
            engine,
            controls,
            out,
            selected: None,
            seeking: false,
        }
    }

    /// Returns false on Quit.
    fn control(&mut self, c: Control) -> bool {
        match &c {
            Control::Quit => return false,
            Control::Select(p) => self.selected = *p,
            Control::SeekFinding => self.seeking = true,
            Control::TogglePause | Control::Step | Control::Hold => self.seeking = false,
            _ => {}
        }
        self.source.control(&c);
        true
    }

    /// Runs until the App goes away or asks to quit. Returns the engine.
    pub fn run(mut self) -> Engine {
        let mut batch = Vec::with_capacity(BATCH);
        let mut last_update: Option<Instant> = None;
        let mut last_roll = Instant::now();
        let mut force = true;
        let mut ended_sent = false;
        loop {
            loop {
                match self.controls.try_recv() {
                    Ok(c) => {
                        if !self.control(c) {
                            return self.engine;
                        }
                        force = true;
                    }
                    Err(TryRecvError::Empty) => break,
                    Err(TryRecvError::Disconnected) => return self.engine,
                }
            }
            let max = if self.seeking { 1 } else { BATCH };
            batch.clear();
            let state = self.source.poll(&mut batch, max);
            let before = self.engine.findings_len();
            for ev in batch.drain(..) {
                self.engine.push_ordered(ev);
            }
            if self.seeking && self.engine.findings_len() > before {
                self.seeking = false;
                self.source.control(&Control::Hold);
                force = true;
            }
            if state == SourceState::Ended && self.seeking {
                self.seeking = false;
            }
            let now = Instant::now();
            while now.duration_since(last_roll) >= Duration::from_secs(1) {
                self.engine.roll_rate();
                last_roll += Duration::from_secs(1);
            }
            let ended = state == SourceState::Ended;
            let interval = MIN_UPDATE_INTERVAL.max(self.engine.last_snapshot_cost() * 10);
            let due = last_update.is_none_or(|t| now.duration_since(t) >= interval);
            let frozen = matches!(self.source.playback(), Playback::Live { frozen: true });
            if (force || (due && !frozen) || (ended && !ended_sent)) && self.engine.in_flight() < 2
            {
                let u = self
                    .engine
                    .update(self.selected, self.source.playback(), ended);
                if self.out.send(AppEvent::Data(Box::new(u))).is_err() {
                    return self.engine;
                }
                last_update = Some(now);
                force = false;
                ended_sent |= ended;
            }
            let wait = match state {
                SourceState::Ready => continue,
                SourceState::Idle(d) => d.min(Duration::from_millis(20)),
                SourceState::Ended => Duration::from_millis(100),
            };
            match self.controls.recv_timeout(wait) {
                Ok(c) => {
                    if !self.control(c) {
                        return self.engine;
                    }
                    force = true;
                }
                Err(RecvTimeoutError::Timeout) => {}
                Err(RecvTimeoutError::Disconnected) => return self.engine,
            }
        }
    }
}

/// Starts the feed thread. Returns the control sender for the App and the thread.
pub fn spawn<S: Source + 'static>(
    source: S,
    engine: Engine,
    out: Sender<AppEvent>,
) -> (Sender<Control>, JoinHandle<Engine>) {
    let (ctl_tx, ctl_rx) = std::sync::mpsc::channel();
    let feed = Feed::new(source, engine, ctl_rx, out);
    let handle = std::thread::Builder::new()
        .name("aptrace-feed".into())
        .spawn(move || feed.run())
        .expect("spawn the feed thread");
    (ctl_tx, handle)
}
