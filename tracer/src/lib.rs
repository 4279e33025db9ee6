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

/// An error and each of its causes that its message does not already quote: library errors
/// name their OS error in their own message, and printing every cause would repeat it.
pub fn error_text(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        let c_text = c.to_string();
        if !text.contains(&c_text) {
            text.push_str(": ");
            text.push_str(&c_text);
        }
        cur = c.source();
    }
    text
}
