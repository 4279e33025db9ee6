//! Opening what a user hands over: a `.aptr` recording or a JSON-lines file.

use std::io::BufReader;
use std::path::Path;

use crate::jsonl::{read_jsonl, JsonlError};
use crate::model::Event;
use crate::recording::{Damage, Header, ReadError, Recording, MAGIC};

/// Events and what is known about where they came from.
pub struct Loaded {
    pub header: Header,
    pub version: (u16, u16),
    pub events: Vec<Event>,
    pub damage: Vec<Damage>,
    pub warnings: Vec<String>,
}

impl Loaded {
    /// Nothing was skipped.
    pub fn intact(&self) -> bool {
        self.damage.is_empty()
    }
}

#[derive(Debug, thiserror::Error)]
pub enum InputError {
    #[error(transparent)]
    Recording(#[from] ReadError),
    #[error(transparent)]
    Jsonl(#[from] JsonlError),
    #[error("cannot open {path}: {source}")]
    Open {
        path: String,
        source: std::io::Error,
    },
}

/// Reads a recording (by its magic) or JSON lines (anything else).
pub fn load(path: &Path) -> Result<Loaded, InputError> {
    let name = path.display().to_string();
    let mut f = std::fs::File::open(path).map_err(|source| InputError::Open {
        path: name.clone(),
        source,
    })?;
    let mut magic = [0u8; 8];
    let n = std::io::Read::read(&mut f, &mut magic).unwrap_or(0);
    if n == 8 && magic == MAGIC {
        let r = Recording::open(path)?;
        let mut warnings = r.warnings.clone();
        let events = with_gaps_marked(r.events(&mut warnings));
        let mut damage = r.damage.clone();
        if warnings.len() > r.warnings.len() {
            damage.push(Damage {
                offset: 0,
                bytes: 0,
                reason: "a chunk did not decode".into(),
            });
        }
        return Ok(Loaded {
            header: r.header.clone(),
            version: r.version,
            events,
            damage,
            warnings,
        });
    }
    let f = std::fs::File::open(path).map_err(|source| InputError::Open {
        path: name.clone(),
        source,
    })?;
    let j = read_jsonl(BufReader::new(f), &name)?;
    Ok(Loaded {
        header: j.header.unwrap_or_default(),
        version: (
            crate::recording::VERSION_MAJOR,
            crate::recording::VERSION_MINOR,
        ),
        events: j.events,
        damage: Vec::new(),
        warnings: Vec::new(),
    })
}

/// Where sequence numbers jump (a damaged chunk was skipped), insert a `Lost` event so the
/// auditor marks findings across the gap uncertain.
fn with_gaps_marked(events: Vec<Event>) -> Vec<Event> {
    use crate::model::{Body, LossSource};
    let mut out = Vec::with_capacity(events.len());
    let mut prev: Option<u64> = None;
    for e in events {
        if let Some(p) = prev {
            if e.seq > p + 1 {
                out.push(Event {
                    seq: p + 1,
                    ts_ns: e.ts_ns,
                    cpu: e.cpu,
                    task: crate::model::Task {
                        pid: 0,
                        tid: 0,
                        comm: std::sync::Arc::from(""),
                    },
                    body: Body::Lost {
                        count: e.seq - p - 1,
                        source: LossSource::Recording,
                    },
                });
            }
        }
        prev = Some(e.seq);
        out.push(e);
    }
    out
}
