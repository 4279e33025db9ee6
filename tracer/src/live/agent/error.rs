//! What stops the live agent, each naming the object, map, program or OS call that failed.

use aya::maps::MapError;
use aya::programs::ProgramError;

#[derive(Debug, thiserror::Error)]
pub enum LiveError {
    /// This host or build cannot trace: the preflight's failing line, or no eBPF object.
    #[error("{0}")]
    Refused(String),
    /// The bpf syscall said EPERM: what to do comes first, the refusal after it.
    #[error("not permitted to use BPF (run as root, or with CAP_BPF and CAP_PERFMON): {0}")]
    NotPermitted(Box<LiveError>),
    #[error("loading the eBPF object: {0}")]
    Load(#[source] Box<aya::EbpfError>),
    #[error("the eBPF object has no program {0}")]
    NoProgram(String),
    #[error("loading eBPF program {name}: {source}")]
    Program { name: String, source: ProgramError },
    #[error("the eBPF object has no map {0}")]
    NoMap(&'static str),
    #[error("map {name}: {source}")]
    Map {
        name: &'static str,
        source: MapError,
    },
    /// An OS call around the probes: the runtime, signals, polling, the metrics server, the
    /// recording.
    #[error("{what}: {source}")]
    Os {
        what: String,
        source: std::io::Error,
    },
}

impl LiveError {
    pub(crate) fn map(name: &'static str) -> impl FnOnce(MapError) -> LiveError {
        move |source| LiveError::Map { name, source }
    }

    pub(crate) fn os(what: impl Into<String>) -> impl FnOnce(std::io::Error) -> LiveError {
        let what = what.into();
        move |source| LiveError::Os { what, source }
    }

    /// Puts what to do in front of a refusal by the bpf syscall.
    pub(crate) fn with_permission_hint(self) -> LiveError {
        if crate::live::check::is_permission_error(&crate::error_text(&self)) {
            LiveError::NotPermitted(Box::new(self))
        } else {
            self
        }
    }
}

/// The causes under an error, joined (aya's attach errors hide the errno there).
pub fn error_chain(e: &dyn std::error::Error) -> String {
    let mut parts = Vec::new();
    let mut cur = e.source();
    while let Some(s) = cur {
        parts.push(s.to_string());
        cur = s.source();
    }
    parts.join(": ")
}

pub type Result<T, E = LiveError> = std::result::Result<T, E>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_eperm_from_the_bpf_syscall_says_how_to_get_permission() {
        let denied = LiveError::Program {
            name: "fentry00".into(),
            source: ProgramError::SyscallError(aya::sys::SyscallError {
                call: "bpf_prog_load",
                io_error: std::io::Error::from_raw_os_error(libc::EPERM),
            }),
        };
        let e = denied.with_permission_hint();
        assert!(matches!(e, LiveError::NotPermitted(_)));
        let text = e.to_string();
        assert!(
            text.starts_with("not permitted to use BPF (run as root"),
            "{text}"
        );
        assert!(text.contains("loading eBPF program fentry00"), "{text}");
    }

    #[test]
    fn other_failures_are_left_as_they_are() {
        let e = LiveError::NoMap("EVENTS").with_permission_hint();
        assert_eq!(e.to_string(), "the eBPF object has no map EVENTS");
    }
}
