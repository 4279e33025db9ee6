//! `aptrace replay`: a recording played back with its own timing, headless, for the metrics
//! (dashboards and alerts can be tried and tested without a kernel).

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::audit::Auditor;
use crate::input::load;
use crate::metrics::{self, Metrics};
use crate::model::Event;
use crate::offline::profile_for;
use crate::pipeline::Pipeline;
use crate::profile::Profile;

/// With `--loop`, a pass starts at most this often (a short recording at `--speed 0` would
/// otherwise spin a core).
pub const MIN_PASS: Duration = Duration::from_secs(1);

/// Sleeps shorter than this are skipped (events are delivered a little early instead).
const MIN_SLEEP: Duration = Duration::from_millis(2);

/// Why `aptrace replay` could not start.
#[derive(Debug, thiserror::Error)]
pub enum ReplayError {
    #[error("--speed must be a number >= 0 (0 = as fast as possible), not {0}")]
    Speed(f64),
    #[error(transparent)]
    Profile(#[from] crate::profile::ProfileError),
    #[error(transparent)]
    Input(#[from] crate::input::InputError),
    #[error("starting the metrics server on {addr}: {source}")]
    Metrics {
        addr: String,
        source: std::io::Error,
    },
}

/// What `aptrace replay` was asked.
#[derive(Clone, Debug)]
pub struct ReplayOptions {
    pub file: PathBuf,
    /// `--metrics ADDR` (see [`metrics::parse_addr`]).
    pub metrics: String,
    /// 1.0 = the recording's own pace, 10 = ten times faster, 0 = as fast as possible.
    pub speed: f64,
    /// Start over at the end, for ever; counters keep counting.
    pub looping: bool,
    /// Without `--loop`: exit at the end instead of serving the final state until killed.
    pub exit_when_done: bool,
    /// Audit with this profile instead of the recording's.
    pub profile: Option<PathBuf>,
}

/// Plays the events once through a fresh auditor, with the recording's timing scaled by
/// `speed`; the metrics are refreshed before every wait and at the end.
pub fn play_once(
    events: &[Event],
    profile: &Profile,
    metrics: &Arc<Metrics>,
    speed: f64,
) -> Auditor {
    let mut p = Pipeline::new(Auditor::new(profile.clone()), None);
    p.add_sink(Box::new(metrics.sink()));
    let t0 = Instant::now();
    let first_ts = events.first().map_or(0, |e| e.ts_ns);
    for ev in events {
        if speed > 0.0 {
            let due =
                Duration::from_secs_f64(ev.ts_ns.saturating_sub(first_ts) as f64 / 1e9 / speed);
            let now = t0.elapsed();
            if due > now + MIN_SLEEP {
                metrics.refresh(&p.auditor);
                std::thread::sleep(due - now);
            }
        }
        p.push_ordered(ev.clone());
    }
    let (auditor, _) = p.finish();
    metrics.refresh(&auditor);
    auditor
}

/// `aptrace replay FILE --metrics ADDR [--speed S] [--loop]`.
pub fn replay(opts: &ReplayOptions) -> Result<(), ReplayError> {
    if !opts.speed.is_finite() || opts.speed < 0.0 {
        return Err(ReplayError::Speed(opts.speed));
    }
    let explicit = opts.profile.as_deref().map(Profile::load).transpose()?;
    let path = opts.file.display().to_string();
    let loaded = load(&opts.file)?;
    for w in &loaded.warnings {
        log::warn!("{w}");
    }
    let (profile, warn) = profile_for(&loaded.header, &path, explicit.as_ref());
    if let Some(w) = warn {
        log::warn!("{w}");
    }
    let m = Metrics::new(&profile);
    m.set_probes(&loaded.header.probes);
    let server =
        metrics::serve(&opts.metrics, m.clone()).map_err(|source| ReplayError::Metrics {
            addr: opts.metrics.clone(),
            source,
        })?;
    eprintln!(
        "aptrace: replaying {path} ({} events) at {}; metrics at http://{}/metrics",
        loaded.events.len(),
        if opts.speed == 0.0 {
            "full speed".to_string()
        } else {
            format!("{}x", opts.speed)
        },
        server.local_addr()
    );
    let mut pass: u64 = 0;
    loop {
        let started = Instant::now();
        let auditor = play_once(&loaded.events, &profile, &m, opts.speed);
        pass += 1;
        log::info!(
            "pass {pass}: {} events, {} findings",
            loaded.events.len(),
            auditor.findings().len()
        );
        if !opts.looping {
            break;
        }
        m.end_pass(&auditor);
        std::thread::sleep(MIN_PASS.saturating_sub(started.elapsed()));
    }
    if opts.exit_when_done {
        server.shutdown();
        return Ok(());
    }
    eprintln!("aptrace: replay finished; serving the final state until interrupted");
    loop {
        std::thread::park();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn opts(speed: f64, metrics: String) -> ReplayOptions {
        ReplayOptions {
            file: PathBuf::from(concat!(
                env!("CARGO_MANIFEST_DIR"),
                "/../samples/clean.aptr"
            )),
            metrics,
            speed,
            looping: false,
            exit_when_done: true,
            profile: None,
        }
    }

    #[test]
    fn a_negative_speed_is_refused_naming_the_flag() {
        let e = replay(&opts(-1.0, "127.0.0.1:0".into())).unwrap_err();
        assert!(matches!(e, ReplayError::Speed(_)));
        assert!(e.to_string().contains("--speed"), "{e}");
    }

    /// A port in use is an error naming the address, after the recording was read.
    #[test]
    fn a_busy_metrics_port_names_the_address() {
        let busy = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = busy.local_addr().unwrap().to_string();
        let e = replay(&opts(0.0, addr.clone())).unwrap_err();
        assert!(matches!(e, ReplayError::Metrics { .. }), "{e}");
        assert!(e.to_string().contains(&addr), "{e}");
    }

    #[test]
    fn a_missing_recording_is_an_input_error() {
        let mut o = opts(0.0, "127.0.0.1:0".into());
        o.file = PathBuf::from("/nonexistent/x.aptr");
        let e = replay(&o).unwrap_err();
        assert!(matches!(e, ReplayError::Input(_)));
        assert!(e.to_string().contains("/nonexistent/x.aptr"), "{e}");
    }
}
