//! What can stop the terminal UI before or while it runs.

use std::io;
use std::path::PathBuf;

#[derive(Debug, thiserror::Error)]
pub enum TuiError {
    #[error(transparent)]
    Profile(#[from] crate::profile::ProfileError),
    #[error(transparent)]
    Input(#[from] crate::input::InputError),
    #[error("starting the metrics server on {addr}: {source}")]
    Metrics { addr: String, source: io::Error },
    #[error("cannot open the log file {path}: {source}")]
    LogFile { path: PathBuf, source: io::Error },
    #[error("a logger is already set")]
    LoggerSet,
    /// Raw mode, the alternate screen, the terminal itself, or drawing to it.
    #[error("{what}: {source}")]
    Terminal {
        what: &'static str,
        source: io::Error,
    },
    #[error("cannot watch signals: {0}")]
    Signals(io::Error),
    #[error("cannot start the {name} thread: {source}")]
    Thread {
        name: &'static str,
        source: io::Error,
    },
    #[error("the engine thread failed (see the message above)")]
    EngineFailed,
    /// `live --tui`: the agent behind the screen stopped with an error.
    #[cfg(all(feature = "live", target_os = "linux"))]
    #[error(transparent)]
    Agent(#[from] crate::live::agent::LiveError),
    #[error("the agent thread panicked")]
    AgentPanicked,
}

impl TuiError {
    pub(crate) fn terminal(what: &'static str) -> impl FnOnce(io::Error) -> TuiError {
        move |source| TuiError::Terminal { what, source }
    }

    pub(crate) fn thread(name: &'static str) -> impl FnOnce(io::Error) -> TuiError {
        move |source| TuiError::Thread { name, source }
    }
}
