//! `aptrace live --tui`: the agent runs on its own thread and forwards every event to the
//! terminal UI, which audits and shows them; quitting the UI stops the agent, which then
//! finishes its recording and prints the summary on the restored terminal.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Arc};

use anyhow::{anyhow, Result};

use super::agent::{self, LiveOptions, QUIET};
use crate::audit::Auditor;
use crate::tui::{self, feed::Live, Engine};

/// Runs the agent under the terminal UI. Returns the agent's exit status.
pub fn run(mut opts: LiveOptions) -> Result<u8> {
    let (tx, rx) = mpsc::channel();
    let stop = Arc::new(AtomicBool::new(false));
    opts.forward = Some(tx);
    opts.stop = Some(stop.clone());
    let info = tui::source_info(
        format!("live: module {}", opts.module),
        Vec::new(),
        &opts.profile,
    );
    let engine = Engine::new(Auditor::new(opts.profile.clone()));
    QUIET.store(true, Ordering::SeqCst);
    let agent = std::thread::Builder::new()
        .name("aptrace-agent".into())
        .spawn(move || agent::run(opts))
        .map_err(|e| anyhow!("cannot start the agent thread: {e}"))?;
    let ui = tui::run(Live::new(rx), engine, info);
    stop.store(true, Ordering::SeqCst);
    QUIET.store(false, Ordering::SeqCst);
    let code = agent
        .join()
        .map_err(|_| anyhow!("the agent thread panicked"))??;
    ui?;
    Ok(code)
}
