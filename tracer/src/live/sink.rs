//! Printing findings as they happen (text or JSON lines). `--guest` is the pipeline's
//! (Pipeline::limit_to_guest), for every sink at once.

use std::io::Write;

use crate::audit::Finding;
use crate::pipeline::Sink;

pub use crate::report::GuestFilter;

/// How `live` prints findings and its summary.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LiveFormat {
    Text,
    Json,
}

/// Prints each finding the moment the auditor raises it.
pub struct PrintSink<W: Write + Send> {
    pub out: W,
    pub format: LiveFormat,
    pub printed: u64,
}

/// One line for a finding.
pub fn finding_line(f: &Finding) -> String {
    let mut s = format!("[{}] {}", f.severity.name(), f.kind.name());
    match (&f.uncertainty, f.uncertain) {
        (Some(why), _) => s.push_str(&format!(" (uncertain: {why})")),
        (None, true) => s.push_str(" (uncertain)"),
        (None, false) => {}
    }
    if let Some(func) = &f.function {
        s.push_str(&format!(" in {func}"));
    }
    if let Some(m) = &f.mdev {
        match &m.uuid {
            Some(u) => s.push_str(&format!(" mdev {u}")),
            None => s.push_str(&format!(" mdev {:#x}", m.ptr)),
        }
        if m.incarnation > 0 {
            s.push_str(&format!(" life {}", m.incarnation));
        }
    }
    if let Some(t) = &f.task {
        s.push_str(&format!(" task {}/{} {}", t.pid, t.tid, t.comm));
    }
    if let Some(g) = &f.guest {
        match &g.guest {
            Some(n) => s.push_str(&format!(" guest {n} (pid {})", g.pid)),
            None => s.push_str(&format!(" guest pid {}", g.pid)),
        }
    }
    s.push_str(": ");
    s.push_str(&f.message);
    if !f.events.is_empty() {
        let ev: Vec<String> = f.events.iter().map(|e| e.to_string()).collect();
        s.push_str(&format!(" [events {}]", ev.join(",")));
    }
    s.chars()
        .map(|c| if c.is_control() { '?' } else { c })
        .collect()
}

impl<W: Write + Send> Sink for PrintSink<W> {
    fn on_finding(&mut self, f: &Finding) {
        let line = match self.format {
            LiveFormat::Text => {
                let mut l = finding_line(f);
                for frame in &f.stack {
                    l.push_str(&format!("\n    {frame}"));
                }
                l
            }
            LiveFormat::Json => match serde_json::to_string(f) {
                Ok(j) => j,
                Err(_) => return,
            },
        };
        self.printed += 1;
        let _ = writeln!(self.out, "{line}");
        let _ = self.out.flush();
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::audit::{Kind, MdevRef};

    #[test]
    fn a_finding_line_names_the_life_and_why_it_is_uncertain() {
        let f = Finding {
            kind: Kind::Leak,
            severity: Kind::Leak.severity(),
            uncertain: true,
            uncertainty: Some("the return of 1 call(s) nested in f was missed meanwhile".into()),
            mdev: Some(MdevRef {
                ptr: 0x1000,
                uuid: Some(Arc::from("u-1")),
                incarnation: 2,
            }),
            task: None,
            guest: None,
            function: None,
            ts_ns: 0,
            message: "m".into(),
            events: Vec::new(),
            evidence: Vec::new(),
            stack: Vec::new(),
        };
        let l = finding_line(&f);
        assert!(l.contains("mdev u-1 life 2"), "{l}");
        assert!(l.contains("(uncertain: the return of 1 call(s)"), "{l}");
    }
}
