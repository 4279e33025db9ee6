//! Opening what a user hands over: a `.aptr` recording or a JSON-lines file.

use std::io::BufReader;
use std::path::Path;

use crate::jsonl::{read_jsonl_ordered, JsonlError, SourceNote};
use crate::model::Event;
use crate::recording::{Damage, Header, ReadError, Recording, MAGIC, NO_END_MARKER};

/// Events and what is known about where they came from.
pub struct Loaded {
    pub header: Header,
    pub version: (u16, u16),
    pub events: Vec<Event>,
    pub damage: Vec<Damage>,
    pub warnings: Vec<String>,
}

impl Loaded {
    /// Nothing was skipped, and a recording was finished (see [`Recording::intact`]).
    pub fn intact(&self) -> bool {
        self.damage.is_empty()
    }

    /// What an export must say about this source so that its import is as incomplete as it.
    pub fn source_note(&self) -> SourceNote {
        note_of(&self.damage)
    }
}

/// The damage list as a source note: the missing end marker is a flag, not a region.
fn note_of(damage: &[Damage]) -> SourceNote {
    SourceNote {
        end_marker: !damage.iter().any(|d| d.reason == NO_END_MARKER),
        damage: damage
            .iter()
            .filter(|d| d.reason != NO_END_MARKER)
            .cloned()
            .collect(),
    }
}

/// The damage a JSON-lines file's source line reports, as a recording's reader reports it.
fn damage_of(note: &SourceNote) -> Vec<Damage> {
    let mut d = note.damage.clone();
    if !note.end_marker {
        d.push(Damage {
            offset: 0,
            bytes: 0,
            reason: NO_END_MARKER.into(),
        });
    }
    d
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

/// An input opened but not yet read: its events are streamed by [`Opened::for_each_event`].
pub struct Opened {
    pub header: Header,
    pub version: (u16, u16),
    pub damage: Vec<Damage>,
    pub warnings: Vec<String>,
    body: Body,
}

enum Body {
    Recording(Box<Recording>),
    Jsonl(Vec<Event>),
}

/// The path that names standard input (`aptrace report -`).
pub const STDIN: &str = "-";

/// Opens a recording (by its magic) or JSON lines (anything else); `-` is standard input,
/// read whole (a pipe cannot be read twice).
pub fn open(path: &Path) -> Result<Opened, InputError> {
    if path.as_os_str() == STDIN {
        return open_stdin();
    }
    let name = path.display().to_string();
    let mut f = std::fs::File::open(path).map_err(|source| InputError::Open {
        path: name.clone(),
        source,
    })?;
    let mut magic = [0u8; 8];
    let n = std::io::Read::read(&mut f, &mut magic).unwrap_or(0);
    if n == 8 && magic == MAGIC {
        let r = Recording::open(path)?;
        return Ok(Opened::recording(r));
    }
    let f = std::fs::File::open(path).map_err(|source| InputError::Open {
        path: name.clone(),
        source,
    })?;
    let j = read_jsonl_ordered(BufReader::new(f), &name)?;
    Ok(Opened::jsonl(j, &name))
}

fn open_stdin() -> Result<Opened, InputError> {
    let name = "standard input";
    let mut data = Vec::new();
    std::io::Read::read_to_end(&mut std::io::stdin().lock(), &mut data).map_err(|source| {
        InputError::Open {
            path: name.into(),
            source,
        }
    })?;
    if data.len() >= 8 && data[..8] == MAGIC {
        let r = Recording::parse(bytes::Bytes::from(data), name)?;
        return Ok(Opened::recording(r));
    }
    let j = read_jsonl_ordered(&data[..], name)?;
    Ok(Opened::jsonl(j, name))
}

impl Opened {
    fn recording(r: Recording) -> Opened {
        Opened {
            header: r.header.clone(),
            version: r.version,
            damage: r.damage.clone(),
            warnings: r.warnings.clone(),
            body: Body::Recording(Box::new(r)),
        }
    }

    fn jsonl(j: crate::jsonl::JsonLines, origin: &str) -> Opened {
        let damage = j.source.as_ref().map(damage_of).unwrap_or_default();
        let warnings = j
            .source
            .iter()
            .filter(|n| !n.is_complete())
            .map(|n| {
                let bytes: u64 = n.damage.iter().map(|d| d.bytes).sum();
                format!(
                    "{origin}: its source line says the source was incomplete: {} damaged region(s), {bytes} bytes{}",
                    n.damage.len(),
                    if n.end_marker { "" } else { ", no end marker" }
                )
            })
            .collect();
        Opened {
            header: j.header.unwrap_or_default(),
            version: (
                crate::recording::VERSION_MAJOR,
                crate::recording::VERSION_MINOR,
            ),
            damage,
            warnings,
            body: Body::Jsonl(j.events),
        }
    }

    /// Streams every event, chunk by chunk for a recording (memory stays bounded by one
    /// chunk), with a `lost` event where sequence numbers jump over a damaged region.
    pub fn for_each_event(&mut self, mut f: impl FnMut(Event)) {
        match &self.body {
            Body::Jsonl(events) => events.iter().cloned().for_each(f),
            Body::Recording(r) => {
                let before = self.warnings.len();
                let mut prev: Option<u64> = None;
                r.for_each_event(&mut self.warnings, |e| {
                    if let Some(gap) = gap_before(prev, &e) {
                        f(gap);
                    }
                    prev = Some(e.seq);
                    f(e);
                });
                if self.warnings.len() > before {
                    self.damage.push(Damage {
                        offset: 0,
                        bytes: 0,
                        reason: "a chunk did not decode".into(),
                    });
                }
            }
        }
    }

    /// Nothing was skipped (meaningful after the events were read).
    pub fn intact(&self) -> bool {
        self.damage.is_empty()
    }
}

/// Reads every event into memory (the TUI seeks in them; the report streams instead).
pub fn load(path: &Path) -> Result<Loaded, InputError> {
    let mut o = open(path)?;
    let mut events = Vec::new();
    o.for_each_event(|e| events.push(e));
    Ok(Loaded {
        header: o.header,
        version: o.version,
        events,
        damage: o.damage,
        warnings: o.warnings,
    })
}

/// Where sequence numbers jump (a damaged chunk was skipped), the `Lost` event to insert
/// before `e`, so the auditor marks findings across the gap uncertain.
fn gap_before(prev: Option<u64>, e: &Event) -> Option<Event> {
    use crate::model::{Body, LossSource};
    let p = prev?;
    (e.seq > p.saturating_add(1)).then(|| Event {
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
    })
}
