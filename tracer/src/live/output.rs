//! Where the agent's own lines (`aptrace: attached ...`) go: the terminal, or the log while
//! the terminal UI owns the screen. The agent is handed one; nothing global decides.

use std::sync::{Arc, Mutex};

#[derive(Clone, Debug, Default)]
pub enum Output {
    /// Standard error, one line each.
    #[default]
    Terminal,
    /// `log::info!`: the UI's log file, or nowhere.
    Log,
    /// Kept in memory (tests).
    Memory(Arc<Mutex<Vec<String>>>),
}

impl Output {
    pub fn say(&self, line: &str) {
        match self {
            Output::Terminal => eprintln!("{line}"),
            Output::Log => log::info!("{line}"),
            Output::Memory(lines) => lines.lock().expect("output lock").push(line.to_string()),
        }
    }
}

/// `say!(out, "aptrace: ...", ...)`: one formatted line to an [`Output`].
#[cfg_attr(not(all(feature = "live", target_os = "linux")), allow(unused_macros))]
macro_rules! say {
    ($out:expr, $($t:tt)*) => {
        $out.say(&format!($($t)*))
    };
}
#[cfg_attr(not(all(feature = "live", target_os = "linux")), allow(unused_imports))]
pub(crate) use say;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn memory_output_keeps_the_lines_in_order() {
        let lines = Arc::new(Mutex::new(Vec::new()));
        let out = Output::Memory(lines.clone());
        say!(out, "aptrace: attached {} probes", 3);
        out.say("aptrace: detached; 0 events");
        assert_eq!(
            *lines.lock().unwrap(),
            ["aptrace: attached 3 probes", "aptrace: detached; 0 events"]
        );
    }
}
