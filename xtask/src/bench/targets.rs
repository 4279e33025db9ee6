//! The performance targets `cargo xtask bench` judges, and the machine's load while it ran.
//!
//! A figure this run did not measure is "not measured in this run", never met: a target is
//! met only by a number.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

/// Which way a figure must go.
#[derive(Clone, Copy, Debug)]
pub enum Goal {
    AtLeast(f64),
    AtMost(f64),
}

/// What became of one target in this run.
#[derive(Clone, Debug, PartialEq)]
pub enum Verdict {
    Met,
    Missed,
    /// No number: the run skipped the figure, or the measurement gave none.
    NotMeasured(String),
    /// A number, but not one the target can be judged on (say why).
    NotJudged(String),
}

/// One row of the targets table.
#[derive(Clone, Debug)]
pub struct Target {
    /// What is measured, as the table names it.
    pub figure: String,
    /// The figure in this run; `None` when it was not measured.
    pub value: Option<f64>,
    /// How to print the value: `M/s` (events per second, printed in millions), `x`, `MiB`.
    pub unit: Unit,
    pub goal: Goal,
    /// Why the figure is absent, when it is.
    pub absent: String,
}

#[derive(Clone, Copy, Debug)]
pub enum Unit {
    EventsPerSec,
    Ratio,
    Seconds,
}

impl Unit {
    fn show(self, v: f64) -> String {
        match self {
            Unit::EventsPerSec => format!("{:.2} M events/s", v / 1e6),
            Unit::Ratio => format!("{v:.2}x"),
            Unit::Seconds => format!("{v:.3} s"),
        }
    }
}

impl Target {
    pub fn new(figure: impl Into<String>, value: Option<f64>, unit: Unit, goal: Goal) -> Target {
        Target {
            figure: figure.into(),
            value,
            unit,
            goal,
            absent: "not measured in this run".into(),
        }
    }

    /// Why the figure is absent (printed in place of a number).
    pub fn absent_because(mut self, why: impl Into<String>) -> Target {
        self.absent = why.into();
        self
    }

    pub fn verdict(&self, quick: bool) -> Verdict {
        let Some(v) = self.value.filter(|v| v.is_finite()) else {
            return Verdict::NotMeasured(self.absent.clone());
        };
        if quick {
            return Verdict::NotJudged("--quick: a small input, not a figure".into());
        }
        let ok = match self.goal {
            Goal::AtLeast(t) => v >= t,
            Goal::AtMost(t) => v <= t,
        };
        if ok {
            Verdict::Met
        } else {
            Verdict::Missed
        }
    }

    pub fn goal_text(&self) -> String {
        match self.goal {
            Goal::AtLeast(t) => format!(">= {}", self.unit.show(t)),
            Goal::AtMost(t) => format!("<= {}", self.unit.show(t)),
        }
    }

    /// `figure: value (target ...): met`, one line.
    pub fn line(&self, quick: bool) -> String {
        let value = match self.value.filter(|v| v.is_finite()) {
            Some(v) => self.unit.show(v),
            None => "-".into(),
        };
        let verdict = match self.verdict(quick) {
            Verdict::Met => "met".to_string(),
            Verdict::Missed => "MISSED".to_string(),
            Verdict::NotMeasured(why) => why,
            Verdict::NotJudged(why) => format!("not judged ({why})"),
        };
        format!(
            "{}: {value} (target {}): {verdict}",
            self.figure,
            self.goal_text()
        )
    }
}

/// The one-minute load average, when `/proc/loadavg` can be read.
pub fn one_minute_load() -> Option<f64> {
    read_loadavg().map(|l| l[0])
}

/// How a wait for a quiet machine ended.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Settled {
    /// The one-minute load at the end (none when it cannot be read).
    pub load: Option<f64>,
    pub waited: Duration,
    /// The load fell below the mark (or cannot be read, so there is nothing to wait for).
    pub quiet: bool,
}

/// Waits, a `step` at a time and for at most `max`, until the one-minute load (`read`) is
/// below `mark`. A build just before the benches leaves its load behind (and the linker's
/// writes still going to disk): measured at once, the first figures paid for it.
pub fn settle(
    mark: f64,
    max: Duration,
    step: Duration,
    mut read: impl FnMut() -> Option<f64>,
    mut sleep: impl FnMut(Duration),
) -> Settled {
    let mut waited = Duration::ZERO;
    loop {
        let load = read();
        let quiet = load.is_none_or(|l| l < mark);
        if quiet || waited >= max {
            return Settled {
                load,
                waited,
                quiet,
            };
        }
        sleep(step);
        waited += step;
    }
}

/// `/proc/loadavg`'s three averages.
pub fn parse_loadavg(text: &str) -> Option<[f64; 3]> {
    let mut w = text.split_whitespace().map(|s| s.parse::<f64>().ok());
    Some([w.next()??, w.next()??, w.next()??])
}

fn read_loadavg() -> Option<[f64; 3]> {
    parse_loadavg(&std::fs::read_to_string("/proc/loadavg").ok()?)
}

/// The machine's load over a run: the averages before and after, and the one-minute average
/// sampled while it ran.
pub struct LoadWatch {
    before: Option<[f64; 3]>,
    samples: Arc<Mutex<Vec<f64>>>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

/// The load over a run, as measured.
#[derive(Clone, Debug, PartialEq)]
pub struct Load {
    pub before: Option<[f64; 3]>,
    pub after: Option<[f64; 3]>,
    /// One-minute averages sampled during the run.
    pub samples: Vec<f64>,
    pub cores: usize,
}

impl LoadWatch {
    pub fn start(every: Duration) -> LoadWatch {
        let samples = Arc::new(Mutex::new(Vec::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let (s, st) = (samples.clone(), stop.clone());
        let thread = std::thread::spawn(move || {
            let tick = Duration::from_millis(200);
            let mut waited = Duration::ZERO;
            while !st.load(Ordering::Relaxed) {
                std::thread::sleep(tick);
                waited += tick;
                if waited >= every {
                    waited = Duration::ZERO;
                    if let (Some(l), Ok(mut v)) = (read_loadavg(), s.lock()) {
                        v.push(l[0]);
                    }
                }
            }
        });
        LoadWatch {
            before: read_loadavg(),
            samples,
            stop,
            thread: Some(thread),
        }
    }

    pub fn finish(mut self) -> Load {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
        let samples = self.samples.lock().map(|v| v.clone()).unwrap_or_default();
        Load {
            before: self.before,
            after: read_loadavg(),
            samples,
            cores: std::thread::available_parallelism()
                .map(|n| n.get())
                .unwrap_or(1),
        }
    }
}

impl Load {
    /// One line: before, during (min/median/max of the samples), after, and the core count.
    pub fn line(&self) -> String {
        let three = |l: Option<[f64; 3]>| match l {
            Some([a, b, c]) => format!("{a:.2} {b:.2} {c:.2}"),
            None => "unknown".into(),
        };
        let during = if self.samples.is_empty() {
            "not sampled".to_string()
        } else {
            let mut v = self.samples.clone();
            v.sort_by(|a, b| a.total_cmp(b));
            format!(
                "1-min load {:.2} min, {:.2} median, {:.2} max over {} samples",
                v[0],
                v[v.len() / 2],
                v[v.len() - 1],
                v.len()
            )
        };
        format!(
            "machine load (/proc/loadavg, {} cores): before {}, during {during}, after {}",
            self.cores,
            three(self.before),
            three(self.after)
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn settling_waits_for_the_load_to_fall_and_no_longer_than_its_limit() {
        let step = Duration::from_secs(5);
        let max = Duration::from_secs(20);
        let mut slept = Duration::ZERO;
        let mut loads = [1.9, 1.4, 0.9, 0.4, 0.2].into_iter();
        let s = settle(0.5, max, step, || loads.next(), |d| slept += d);
        assert_eq!(s.load, Some(0.4));
        assert!(s.quiet);
        assert_eq!((s.waited, slept), (Duration::from_secs(15), s.waited));
        // Never quiet: it gives up at the limit and says so.
        let s = settle(0.5, max, step, || Some(1.5), |_| {});
        assert_eq!((s.quiet, s.waited, s.load), (false, max, Some(1.5)));
        // Already quiet, or no /proc/loadavg: no wait.
        let s = settle(0.5, max, step, || Some(0.1), |_| panic!("slept"));
        assert_eq!((s.quiet, s.waited), (true, Duration::ZERO));
        let s = settle(0.5, max, step, || None, |_| panic!("slept"));
        assert!(s.quiet && s.load.is_none());
    }

    #[test]
    fn a_figure_meets_its_target_only_by_a_number() {
        let at_least = |v| Target::new("reorder", v, Unit::EventsPerSec, Goal::AtLeast(20e6));
        assert_eq!(at_least(Some(20e6)).verdict(false), Verdict::Met);
        assert_eq!(at_least(Some(19.9e6)).verdict(false), Verdict::Missed);
        assert!(matches!(
            at_least(None).verdict(false),
            Verdict::NotMeasured(_)
        ));
        assert!(matches!(
            at_least(Some(f64::NAN)).verdict(false),
            Verdict::NotMeasured(_)
        ));
        let at_most = |v| Target::new("(a)", v, Unit::Ratio, Goal::AtMost(1.5));
        assert_eq!(at_most(Some(1.5)).verdict(false), Verdict::Met);
        assert_eq!(at_most(Some(1.51)).verdict(false), Verdict::Missed);
    }

    #[test]
    fn lines_say_the_figure_the_target_and_the_verdict() {
        let t = Target::new(
            "whole pipeline",
            Some(4.2e6),
            Unit::EventsPerSec,
            Goal::AtLeast(5e6),
        );
        assert_eq!(
            t.line(false),
            "whole pipeline: 4.20 M events/s (target >= 5.00 M events/s): MISSED"
        );
        assert!(t
            .line(true)
            .ends_with("not judged (--quick: a small input, not a figure)"));
        let k = Target::new("(b) s390x", None, Unit::Ratio, Goal::AtMost(2.0))
            .absent_because("not measured in this run (--no-kernel)");
        assert_eq!(
            k.line(false),
            "(b) s390x: - (target <= 2.00x): not measured in this run (--no-kernel)"
        );
        // (e) is judged per function in instruction time since the testbed measures it so
        let e = Target::new("(e)", Some(0.08), Unit::Seconds, Goal::AtMost(0.073));
        assert_eq!(e.verdict(false), Verdict::Missed);
    }

    #[test]
    fn load_lines_read_proc_loadavg() {
        assert_eq!(
            parse_loadavg("7.83 5.08 2.52 7/131 12244\n"),
            Some([7.83, 5.08, 2.52])
        );
        assert_eq!(parse_loadavg("garbage"), None);
        let l = Load {
            before: Some([1.0, 2.0, 3.0]),
            after: None,
            samples: vec![4.0, 2.0, 3.0],
            cores: 2,
        };
        assert_eq!(
            l.line(),
            "machine load (/proc/loadavg, 2 cores): before 1.00 2.00 3.00, during 1-min load 2.00 min, 3.00 median, 4.00 max over 3 samples, after unknown"
        );
    }
}
