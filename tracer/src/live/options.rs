//! What `aptrace live` was asked to do, and what its caller hands the agent for one run:
//! where lines go, how it is stopped, and the sinks that watch the stream.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use super::cancel::Cancel;
use super::output::Output;
use super::resolve::{Overrides, Resolution};
use super::sink::{GuestFilter, LiveFormat, PrintSink};
use crate::audit::Auditor;
use crate::pipeline::{Pipeline, Sink};
use crate::profile::Profile;

/// The smallest ring buffer: one page.
pub const MIN_RING_BUFFER: u32 = 4096;

/// What `aptrace live` was asked to do.
#[derive(Clone, Debug)]
pub struct LiveOptions {
    pub record: Option<PathBuf>,
    pub format: LiveFormat,
    pub duration: Option<Duration>,
    pub guest: Option<GuestFilter>,
    pub module: String,
    pub profile: Profile,
    pub all_allocations: bool,
    pub ring_buffer_size: u32,
    pub force: bool,
    pub overrides: Overrides,
    /// `--metrics ADDR`: serve Prometheus metrics there.
    pub metrics: Option<String>,
    /// What the start-up check resolved, for the first attach to reuse: reading
    /// /proc/kallsyms, tracefs and BTF again took seconds under an emulated CPU.
    pub preflight: Option<Preflight>,
}

/// The module's symbols, offsets and probe targets as the start-up check found them, with
/// the identity (.text address) of the module load they belong to.
#[derive(Clone, Debug)]
pub struct Preflight {
    pub identity: String,
    pub resolution: Arc<Resolution>,
}

impl Preflight {
    /// The resolution, when it was made for the module load `identity` names.
    pub fn for_load(self, identity: &str) -> Option<Arc<Resolution>> {
        (self.identity == identity).then_some(self.resolution)
    }
}

impl LiveOptions {
    /// Whether the allocator probes run without the module over a given text range: the
    /// self-test, which the gate lets through where the module is absent.
    pub fn self_test(&self) -> bool {
        self.overrides.text_range.is_some() && self.all_allocations
    }
}

/// The ring buffer's size in bytes: a power of two and at least a page, as the kernel
/// requires of a BPF ring buffer.
pub fn ring_buffer_bytes(requested: u32) -> u32 {
    requested
        .max(MIN_RING_BUFFER)
        .checked_next_power_of_two()
        .unwrap_or(1 << 31)
}

/// One run of the agent: its output, its stop handle, and who watches the stream.
pub struct Session {
    pub output: Output,
    pub cancel: Cancel,
    /// Added to the pipeline in this order, before the metrics sink.
    pub sinks: Vec<Box<dyn Sink + Send>>,
}

impl Session {
    /// Plain `aptrace live`: lines on stderr, findings printed on stdout as they happen.
    pub fn terminal(opts: &LiveOptions, cancel: Cancel) -> Session {
        Session {
            output: Output::Terminal,
            cancel,
            sinks: vec![Box::new(PrintSink {
                out: std::io::stdout(),
                format: opts.format,
                printed: 0,
            })],
        }
    }
}

/// The one pipeline of a live source: reorder window, auditor, and the session's sinks,
/// limited to `guest` (`--guest`) for all of them. The recorder joins when the module is
/// first attached (its header names the probes).
pub fn pipeline(
    profile: &Profile,
    guest: Option<GuestFilter>,
    sinks: Vec<Box<dyn Sink + Send>>,
) -> Pipeline {
    let mut p = Pipeline::new(Auditor::new(profile.clone()), None);
    p.limit_to_guest(guest);
    for s in sinks {
        p.add_sink(s);
    }
    p
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_ring_buffer_is_a_power_of_two_of_at_least_a_page() {
        assert_eq!(ring_buffer_bytes(0), 4096);
        assert_eq!(ring_buffer_bytes(4096), 4096);
        assert_eq!(ring_buffer_bytes(4097), 8192);
        assert_eq!(ring_buffer_bytes(1 << 24), 1 << 24);
        assert_eq!(ring_buffer_bytes(u32::MAX), 1 << 31);
    }
}
