//! aptrace: an eBPF tracer and leak auditor for the s390 vfio_ap driver.
//!
//! The flow is one direction: a source (live ring buffer or a recording) → [`model`] events
//! → [`pipeline`] (reorder) → [`audit::Auditor`] (pure) → sinks ([`report`], TUI, metrics).

pub mod audit;
pub mod bytes_reader;
pub mod calls;
pub mod export;
pub mod input;
pub mod jsonl;
pub mod live;
pub mod metrics;
pub mod model;
pub mod offline;
pub mod pipeline;
pub mod profile;
pub mod recording;
pub mod replay;
pub mod report;
pub mod synth;
pub mod tui;

/// The version string written into recordings.
pub fn writer_id() -> String {
    format!("aptrace {}", env!("CARGO_PKG_VERSION"))
}
