//! The terminal UI: one [`App`] for replay and live.
//!
//! ```text
//!  replay: Source ──▶ feed thread: Engine = the recording's Pipeline (Auditor) + Screen
//!  live:   agent thread: the agent's Pipeline (reorder → recorder, Auditor) + ScreenSink
//!                                   │ Update (bounded: at most two in flight)
//!  keys thread ──Key──┐             ▼
//!  tick thread ──Tick─┼──▶ one channel ──▶ App::handle_event ──▶ draw (throttled)
//!  signals ──Terminate┘                          │ Control (pause, speed, step, seek, select)
//!                                                └──────────────▶ feed thread / ScreenSink
//! ```
//! One pipeline per source: a live screen is a sink of the agent's pipeline, not a second
//! auditor. The App never sees an Auditor or a Source; tests build it and feed it
//! [`AppEvent`]s.

pub mod app;
mod degraded;
pub mod engine;
mod error;
pub mod feed;
pub mod live;
mod lockgraph;
pub mod migrations;
mod view;

use std::io::{self, Write};
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{self, Receiver, Sender};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

pub use error::TuiError;
use ratatui::backend::CrosstermBackend;
use ratatui::crossterm::event::{self, Event as TermEvent};
use ratatui::crossterm::terminal::{self, EnterAlternateScreen, LeaveAlternateScreen};
use ratatui::crossterm::{cursor, execute};
use ratatui::Terminal;

pub use app::{App, AppEvent, SourceInfo, View};
pub use engine::{Engine, Playback, Screen, Update};
pub use feed::{Control, Replay, Source};

use crate::audit::Auditor;
use crate::profile::Profile;

/// How `aptrace tui FILE` starts.
#[derive(Clone, Debug)]
pub struct ReplayOptions {
    pub speed: f64,
    pub paused: bool,
    /// Audit with this profile instead of the recording's.
    pub profile: Option<std::path::PathBuf>,
    /// `--metrics ADDR`: serve Prometheus metrics of the replay there.
    pub metrics: Option<String>,
    /// The other host's recording of the same migrations: audited first, its sessions
    /// shown and paired in the Migrations view.
    pub peer: Option<std::path::PathBuf>,
}

impl Default for ReplayOptions {
    fn default() -> Self {
        ReplayOptions {
            speed: 1.0,
            paused: false,
            profile: None,
            metrics: None,
            peer: None,
        }
    }
}

/// What the App shows about a profile before events arrive.
pub fn source_info(
    title: String,
    probes: Vec<crate::recording::ProbeStatus>,
    profile: &Profile,
) -> SourceInfo {
    SourceInfo {
        title,
        probes,
        functions: profile.functions.iter().map(|f| f.name.clone()).collect(),
        signatures: crate::calls::show::Signatures::of(profile),
        boot_to_wall_ns: 0,
        peer: None,
    }
}

/// `aptrace tui FILE`: replays a recording (or JSON lines) in the terminal.
pub fn replay(path: &Path, opts: &ReplayOptions) -> Result<(), TuiError> {
    // Everything that can fail on the input fails here, before the terminal is taken.
    let explicit = opts.profile.as_deref().map(Profile::load).transpose()?;
    let loaded = crate::input::load(path)?;
    let name = path.display().to_string();
    let (profile, warn) = crate::offline::profile_for(&loaded.header, &name, explicit.as_ref());
    for w in loaded.warnings.iter().chain(warn.iter()) {
        log::warn!("{w}");
    }
    let file = path
        .file_name()
        .map(|f| f.to_string_lossy().into_owned())
        .unwrap_or(name);
    let mut info = source_info(
        format!("replay of {file}"),
        loaded.header.probes.clone(),
        &profile,
    );
    info.boot_to_wall_ns = loaded.header.boot_to_wall_ns;
    if let Some(p) = &opts.peer {
        info.peer = Some(peer(p, explicit.as_ref())?);
    }
    let mut pipeline = crate::pipeline::Pipeline::new(Auditor::new(profile.clone()), None);
    pipeline.auditor.probes_attached(&loaded.header.probes);
    // Started before the terminal is taken, so a port in use is a plain error.
    let _server = match &opts.metrics {
        Some(addr) => {
            let m = crate::metrics::Metrics::new(&profile);
            m.set_probes(&loaded.header.probes);
            let server =
                crate::metrics::serve(addr, m.clone()).map_err(|source| TuiError::Metrics {
                    addr: addr.clone(),
                    source,
                })?;
            pipeline.add_sink(Box::new(m.sink()));
            Some(server)
        }
        None => None,
    };
    run(
        Replay::new(loaded.events, opts.speed, opts.paused),
        Engine::with_pipeline(pipeline),
        info,
    )
}

/// The other host's recording, audited with an auditor of its own.
fn peer(path: &Path, explicit: Option<&Profile>) -> Result<migrations::Peer, TuiError> {
    let name = path.display().to_string();
    let r = crate::offline::audit_opened(&name, crate::input::open(path)?, explicit);
    for w in &r.source.warnings {
        log::warn!("{name}: {w}");
    }
    Ok(migrations::Peer {
        title: path
            .file_name()
            .map(|f| f.to_string_lossy().into_owned())
            .unwrap_or(name),
        boot_to_wall_ns: r.source.boot_to_wall_ns,
        first_ts_ns: r.summary.first_ts_ns,
        sessions: r.migrations,
    })
}

/// Sends log records to a file, or nowhere: nothing may reach stderr while the UI is up.
pub fn init_logging(file: Option<&Path>) -> Result<(), TuiError> {
    let Some(path) = file else {
        return Ok(());
    };
    let f = crate::recording::open_private_append(path).map_err(|source| TuiError::LogFile {
        path: path.to_path_buf(),
        source,
    })?;
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("info"))
        .target(env_logger::Target::Pipe(Box::new(f)))
        .write_style(env_logger::WriteStyle::Never)
        .try_init()
        .map_err(|_| TuiError::LoggerSet)?;
    Ok(())
}

/// Whether this process has the terminal in raw mode and on the alternate screen.
static TERMINAL_TAKEN: AtomicBool = AtomicBool::new(false);

/// Puts the terminal back: cooked mode, main screen, cursor shown. Safe to call twice.
pub fn restore_terminal() {
    if TERMINAL_TAKEN.swap(false, Ordering::SeqCst) {
        let _ = terminal::disable_raw_mode();
        let mut out = io::stdout();
        let _ = execute!(out, LeaveAlternateScreen, cursor::Show);
        let _ = out.flush();
    }
}

/// Owns the terminal while the UI is up; dropping it restores the terminal.
struct TerminalGuard {
    terminal: Terminal<CrosstermBackend<io::Stdout>>,
}

impl TerminalGuard {
    fn enter() -> Result<TerminalGuard, TuiError> {
        static HOOK: std::sync::Once = std::sync::Once::new();
        HOOK.call_once(|| {
            let previous = std::panic::take_hook();
            std::panic::set_hook(Box::new(move |info| {
                restore_terminal();
                previous(info);
            }));
        });
        terminal::enable_raw_mode().map_err(TuiError::terminal(
            "cannot put the terminal in raw mode (is this a terminal?)",
        ))?;
        TERMINAL_TAKEN.store(true, Ordering::SeqCst);
        let mut out = io::stdout();
        if let Err(e) = execute!(out, EnterAlternateScreen, cursor::Hide) {
            restore_terminal();
            return Err(TuiError::terminal("cannot enter the alternate screen")(e));
        }
        let terminal = match Terminal::new(CrosstermBackend::new(io::stdout())) {
            Ok(t) => t,
            Err(e) => {
                restore_terminal();
                return Err(TuiError::terminal("cannot set up the terminal")(e));
            }
        };
        Ok(TerminalGuard { terminal })
    }
}

impl Drop for TerminalGuard {
    fn drop(&mut self) {
        restore_terminal();
    }
}

fn spawn_keys(tx: Sender<AppEvent>, stop: Arc<AtomicBool>) {
    let _ = std::thread::Builder::new()
        .name("aptrace-keys".into())
        .spawn(move || {
            while !stop.load(Ordering::Relaxed) {
                match event::poll(Duration::from_millis(100)) {
                    Ok(true) => {}
                    Ok(false) => continue,
                    Err(_) => break,
                }
                let ev = match event::read() {
                    Ok(TermEvent::Key(k)) => AppEvent::Key(k),
                    Ok(TermEvent::Resize(..)) => AppEvent::Resize,
                    Ok(_) => continue,
                    Err(_) => break,
                };
                if tx.send(ev).is_err() {
                    break;
                }
            }
        });
}

fn spawn_ticks(tx: Sender<AppEvent>, stop: Arc<AtomicBool>) {
    let _ = std::thread::Builder::new()
        .name("aptrace-tick".into())
        .spawn(move || {
            while !stop.load(Ordering::Relaxed) {
                std::thread::sleep(Duration::from_millis(50));
                if tx.send(AppEvent::Tick).is_err() {
                    break;
                }
            }
        });
}

#[cfg(unix)]
struct Signals(signal_hook::iterator::Handle);

#[cfg(unix)]
fn spawn_signals(tx: Sender<AppEvent>) -> Result<Signals, TuiError> {
    use signal_hook::consts::{SIGHUP, SIGINT, SIGTERM};
    let mut signals = signal_hook::iterator::Signals::new([SIGTERM, SIGHUP, SIGINT])
        .map_err(TuiError::Signals)?;
    let handle = signals.handle();
    std::thread::Builder::new()
        .name("aptrace-signals".into())
        .spawn(move || {
            if signals.forever().next().is_some() {
                let _ = tx.send(AppEvent::Terminate);
            }
        })
        .map_err(TuiError::thread("signal"))?;
    Ok(Signals(handle))
}

#[cfg(unix)]
impl Drop for Signals {
    fn drop(&mut self) {
        self.0.close();
    }
}

/// Runs the UI on a replayed `source` until `q` (or SIGTERM), then restores the terminal.
pub fn run<S: Source + 'static>(
    source: S,
    engine: Engine,
    info: SourceInfo,
) -> Result<(), TuiError> {
    let (tx, rx) = mpsc::channel();
    let (ctl_tx, ctl_rx) = mpsc::channel();
    show(info, tx, rx, ctl_tx, move |tx| {
        let failed = tx.clone();
        let feed_thread = std::thread::Builder::new()
            .name("aptrace-feed".into())
            .spawn(move || {
                let feed = feed::Feed::new(source, engine, ctl_rx, tx);
                let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| feed.run()));
                if r.is_err() {
                    let _ = failed.send(AppEvent::Terminate);
                }
                r.is_ok()
            })
            .map_err(TuiError::thread("feed"))?;
        Ok(Some(feed_thread))
    })
}

/// The terminal, keys, ticks and signals around an App whose data arrives on `rx` (sent
/// through `tx` by whoever `start` sets going, once the terminal is taken) and whose
/// controls go to `controls`.
fn show(
    info: SourceInfo,
    tx: Sender<AppEvent>,
    rx: Receiver<AppEvent>,
    controls: Sender<Control>,
    start: impl FnOnce(Sender<AppEvent>) -> Result<Option<JoinHandle<bool>>, TuiError>,
) -> Result<(), TuiError> {
    #[cfg(unix)]
    let _signals = spawn_signals(tx.clone())?;
    let mut guard = TerminalGuard::enter()?;
    let stop = Arc::new(AtomicBool::new(false));
    spawn_keys(tx.clone(), stop.clone());
    spawn_ticks(tx.clone(), stop.clone());
    let feed_thread = start(tx)?;
    let mut app = App::new(info, Some(controls));
    app.panic_key = std::env::var("APTRACE_TUI_PANIC_KEY")
        .ok()
        .and_then(|k| k.chars().next());
    let res = app.run(&mut guard.terminal, &rx);
    stop.store(true, Ordering::Relaxed);
    drop(app);
    drop(rx);
    let feed_ok = feed_thread.is_none_or(|t| t.join().unwrap_or(false));
    drop(guard);
    res.map_err(TuiError::terminal("drawing to the terminal"))?;
    if !feed_ok {
        return Err(TuiError::EngineFailed);
    }
    Ok(())
}
