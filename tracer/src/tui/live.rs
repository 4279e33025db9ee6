//! `aptrace live --tui`: the screen is a sink of the agent's one pipeline. It keeps what the
//! screen needs (bounded, in the tap), and when the agent's pipeline is idle it hands the
//! App an [`Update`], at most two in flight; it never blocks the agent. The sequence
//! numbers and findings on screen are therefore those the recorder writes.

use std::sync::mpsc::{Receiver, Sender};
use std::time::{Duration, Instant};

use super::app::AppEvent;
use super::engine::{Playback, Screen};
use super::feed::{Control, MIN_UPDATE_INTERVAL};
use crate::audit::{Auditor, Finding, LifeKey};
use crate::live::cancel::Cancel;
use crate::pipeline::Sink;
use crate::profile::Profile;

/// Publishes the agent's pipeline to the App.
pub struct ScreenSink {
    screen: Screen,
    app: Sender<AppEvent>,
    controls: Receiver<Control>,
    /// Cancelled when the run stops: the next update is the last, marked ended.
    cancel: Cancel,
    selected: Option<LifeKey>,
    frozen: bool,
    /// `n` asked for the next finding: freeze when it comes.
    seeking: bool,
    /// A control changed what the App should see: update even if not due.
    force: bool,
    last_update: Option<Instant>,
    last_roll: Instant,
    ended_sent: bool,
}

/// The sinks to add to the agent's pipeline for a screen fed through `app` and steered
/// through `controls`: the tap first, then the publisher. The tap reads each call's lock
/// contract from the auditor's profile, so `_profile` only documents which profile it is.
pub fn screen_sinks(
    _profile: &Profile,
    app: Sender<AppEvent>,
    controls: Receiver<Control>,
    cancel: Cancel,
) -> Vec<Box<dyn Sink + Send>> {
    let (screen, tap) = Screen::new();
    let sink = ScreenSink {
        screen,
        app,
        controls,
        cancel,
        selected: None,
        frozen: false,
        seeking: false,
        force: true,
        last_update: None,
        last_roll: Instant::now(),
        ended_sent: false,
    };
    vec![tap, Box::new(sink)]
}

impl ScreenSink {
    fn take_controls(&mut self) {
        while let Ok(c) = self.controls.try_recv() {
            match c {
                Control::Select(p) => self.selected = p,
                Control::TogglePause => {
                    self.frozen = !self.frozen;
                    self.seeking = false;
                }
                Control::Hold => {
                    self.frozen = true;
                    self.seeking = false;
                }
                Control::SeekFinding => self.seeking = true,
                // Speed and step mean nothing to a kernel; quitting is the cancel handle's.
                Control::Faster | Control::Slower | Control::Step | Control::Quit => {}
            }
            self.force = true;
        }
    }

    fn publish(&mut self, auditor: &Auditor) {
        self.take_controls();
        let now = Instant::now();
        while now.duration_since(self.last_roll) >= Duration::from_secs(1) {
            self.screen.roll_rate();
            self.last_roll += Duration::from_secs(1);
        }
        let ended = self.cancel.is_cancelled();
        if self.ended_sent {
            return;
        }
        let interval = MIN_UPDATE_INTERVAL.max(self.screen.last_snapshot_cost * 10);
        let due = self
            .last_update
            .is_none_or(|t| now.duration_since(t) >= interval);
        let wanted = self.force || (due && !self.frozen);
        // The last update goes out whatever is in flight: one more, once.
        if !(ended || (wanted && self.screen.in_flight() < 2)) {
            return;
        }
        let u = self.screen.update(
            auditor,
            self.selected,
            Playback::Live {
                frozen: self.frozen,
            },
            ended,
        );
        // The App is gone: the run goes on until it is cancelled.
        let _ = self.app.send(AppEvent::Data(Box::new(u)));
        self.last_update = Some(now);
        self.force = false;
        self.ended_sent = ended;
    }
}

impl Sink for ScreenSink {
    fn on_finding(&mut self, _finding: &Finding) {
        if self.seeking {
            self.seeking = false;
            self.frozen = true;
            self.force = true;
        }
    }

    fn on_probes(&mut self, probes: &[crate::recording::ProbeStatus]) {
        let _ = self.app.send(AppEvent::Probes(probes.to_vec()));
    }

    fn on_idle(&mut self, auditor: &Auditor) {
        self.publish(auditor);
    }
}

impl Drop for ScreenSink {
    /// A run that stopped before its pipeline finished (it failed to load) still ends on
    /// screen.
    fn drop(&mut self) {
        if !self.ended_sent {
            let _ = self.app.send(AppEvent::Ended);
        }
    }
}

/// Runs the agent on its own thread with the screen as a sink of its pipeline; quitting the
/// UI cancels the run, which then finishes its recording and prints the summary on the
/// restored terminal. Returns the agent's end-of-run report.
#[cfg(all(feature = "live", target_os = "linux"))]
pub fn run(
    opts: crate::live::options::LiveOptions,
) -> Result<crate::report::Report, super::TuiError> {
    use super::TuiError;
    use crate::live::options::Session;
    use crate::live::output::Output;

    let cancel = Cancel::new();
    let (tx, rx) = std::sync::mpsc::channel();
    let (ctl_tx, ctl_rx) = std::sync::mpsc::channel();
    let info = super::source_info(
        format!("live: module {}", opts.module),
        Vec::new(),
        &opts.profile,
    );
    let session = Session {
        // The UI owns the terminal: the agent's lines go to the log.
        output: Output::Log,
        cancel: cancel.clone(),
        sinks: screen_sinks(&opts.profile, tx.clone(), ctl_rx, cancel.clone()),
    };
    let agent = std::thread::Builder::new()
        .name("aptrace-agent".into())
        .spawn(move || crate::live::agent::run(opts, session))
        .map_err(TuiError::thread("agent"))?;
    let ui = super::show(info, tx, rx, ctl_tx, |_| Ok(None));
    cancel.cancel();
    let report = agent.join().map_err(|_| TuiError::AgentPanicked)??;
    ui?;
    Ok(report)
}
