//! Opening what a user hands over: a `.aptr` recording or a JSON-lines file.

use std::io::BufReader;
use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc::TryRecvError;

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

/// Where [`Opened::for_each_run_ahead`] reads and decodes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Ahead {
    /// On the calling thread, one event at a time.
    Inline,
    /// Whole chunks, on a second thread and on the calling thread whenever it would
    /// otherwise wait for the second.
    Thread,
}

/// Chunks the helper thread decoded and the calling thread has not taken yet: the helper
/// waits beyond that. A chunk is up to 64 KiB written, about 4000 events.
const CHUNKS_AHEAD: usize = 3;
/// Events the calling thread holds decoded ahead of the chunk it needs next (its own,
/// decoded while the helper was still on that one): beyond that it waits instead. About
/// four chunks as aptrace writes them; a recording of larger chunks holds one at a time.
const HELD_EVENTS: usize = 16 * 1024;

/// One chunk's events, decoded by either thread, with the warning of a chunk that stopped
/// decoding.
struct DecodedChunk {
    index: usize,
    events: Vec<Event>,
    warning: Option<String>,
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
                    self.damage.push(undecoded_damage());
                }
            }
        }
    }

    /// [`Opened::for_each_event`] by reference, in runs of consecutive events (a chunk's,
    /// split where a `lost` event goes), with the reading and decoding done ahead on a
    /// second thread when the machine has two cores: `f` (the auditor, say) then runs beside
    /// the decoder instead of after it. `f` still sees every event once, in order, on the
    /// calling thread.
    pub fn for_each_run_read_ahead(&mut self, f: impl FnMut(&[Event])) {
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
        self.for_each_run_ahead(
            if cores >= 2 {
                Ahead::Thread
            } else {
                Ahead::Inline
            },
            f,
        )
    }

    /// [`Opened::for_each_run_read_ahead`], with the choice of thread made by the caller.
    /// JSON lines are in memory already: they are handed on as one run.
    pub fn for_each_run_ahead(&mut self, ahead: Ahead, mut f: impl FnMut(&[Event])) {
        let r = match &self.body {
            Body::Jsonl(events) => return f(events),
            Body::Recording(r) => r,
        };
        if ahead == Ahead::Inline {
            return self.for_each_event(|e| f(std::slice::from_ref(&e)));
        }
        let Opened {
            warnings, damage, ..
        } = self;
        let r: &Recording = r;
        let before = warnings.len();
        let chunks = r.chunk_count();
        // Chunks decode on their own: both threads claim the next one from this counter,
        // and the calling thread hands them on in order. It decodes whenever it would wait,
        // so the auditor's spare time goes to decoding instead of to waiting.
        let next = AtomicUsize::new(0);
        let claim = || {
            let i = next.fetch_add(1, Ordering::Relaxed);
            (i < chunks).then_some(i)
        };
        let decode = |index: usize, mut events: Vec<Event>| {
            let warning = r.decode_chunk(index, &mut events);
            DecodedChunk {
                index,
                events,
                warning,
            }
        };
        let (full_tx, full_rx) = std::sync::mpsc::sync_channel::<DecodedChunk>(CHUNKS_AHEAD);
        // Emptied vectors go back to be refilled, so their memory is allocated once.
        let (empty_tx, empty_rx) = std::sync::mpsc::channel::<Vec<Event>>();
        std::thread::scope(|s| {
            s.spawn(move || {
                while let Some(i) = claim() {
                    let events = empty_rx.try_recv().unwrap_or_default();
                    if full_tx.send(decode(i, events)).is_err() {
                        break;
                    }
                }
            });
            let mut held: Vec<DecodedChunk> = Vec::new();
            let mut own: Option<Vec<Event>> = None;
            let mut prev = None;
            let mut want = 0;
            while want < chunks {
                if let Some(at) = held.iter().position(|d| d.index == want) {
                    let DecodedChunk {
                        mut events,
                        warning,
                        ..
                    } = held.swap_remove(at);
                    let mut start = 0;
                    for (i, e) in events.iter().enumerate() {
                        if let Some(gap) = gap_before(prev, e) {
                            if start < i {
                                f(&events[start..i]);
                            }
                            f(std::slice::from_ref(&gap));
                            start = i;
                        }
                        prev = Some(e.seq);
                    }
                    if start < events.len() {
                        f(&events[start..]);
                    }
                    warnings.extend(warning);
                    // Dropped here, by the thread that has them in its cache.
                    events.clear();
                    match own {
                        None => own = Some(events),
                        Some(_) => {
                            let _ = empty_tx.send(events);
                        }
                    }
                    want += 1;
                    continue;
                }
                let got = match full_rx.try_recv() {
                    Ok(d) => Some(d),
                    Err(TryRecvError::Empty)
                        if held.iter().map(|d| d.events.len()).sum::<usize>() < HELD_EVENTS =>
                    {
                        match claim() {
                            Some(i) => Some(decode(i, own.take().unwrap_or_default())),
                            None => full_rx.recv().ok(),
                        }
                    }
                    Err(_) => full_rx.recv().ok(),
                };
                match got {
                    Some(d) => held.push(d),
                    // The helper stopped without the chunk it claimed: only a panic does
                    // that, and the scope raises it.
                    None => break,
                }
            }
        });
        if warnings.len() > before {
            damage.push(undecoded_damage());
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

/// What a chunk that passed its CRC and did not decode adds to the source's damage.
fn undecoded_damage() -> Damage {
    Damage {
        offset: 0,
        bytes: 0,
        reason: "a chunk did not decode".into(),
    }
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

#[cfg(test)]
mod tests {
    use super::*;

    /// A recording of `n` synthetic events with the sequence numbers from `skip_from` on
    /// moved up by 5, as if a damaged region had been cut out there.
    fn recording_with_gap(n: usize, skip_from: u64) -> Vec<u8> {
        let header = Header {
            arch: "x86_64".into(),
            module: "vfio_ap".into(),
            ..Header::default()
        };
        let mut w = crate::recording::Writer::new(Vec::new(), &header).expect("in memory");
        for mut e in crate::synth::Generator::new(7).stream(n) {
            if e.seq >= skip_from {
                e.seq += 5;
            }
            w.push(&e).expect("in memory");
        }
        w.finish().expect("in memory")
    }

    fn seen(o: &mut Opened, ahead: Ahead) -> Vec<(u64, String)> {
        let mut out = Vec::new();
        o.for_each_run_ahead(ahead, |run| {
            out.extend(run.iter().map(|e| (e.seq, format!("{:?}", e.body))))
        });
        out
    }

    #[test]
    fn reading_ahead_gives_every_event_in_order_as_inline() {
        // More chunks than both threads hold at once, with a gap inside one of them.
        let n = 60_123;
        let data = recording_with_gap(n, 20_017);
        let open =
            || Opened::recording(Recording::parse(bytes::Bytes::from(data.clone()), "t").unwrap());
        let Body::Recording(r) = &open().body else {
            panic!("a recording")
        };
        assert!(r.chunk_count() > 2 * CHUNKS_AHEAD + 8);
        let inline = seen(&mut open(), Ahead::Inline);
        assert!(
            inline.len() > n,
            "the generator's events and the gap's lost event"
        );
        assert!(inline.iter().any(|(_, b)| b.starts_with("Lost")));
        // Which thread decodes which chunk changes from run to run: the order must not.
        for _ in 0..5 {
            assert_eq!(inline, seen(&mut open(), Ahead::Thread));
        }
    }

    #[test]
    fn reading_ahead_keeps_a_damaged_chunks_warning() {
        let n = 20_000;
        let mut data = recording_with_gap(n, u64::MAX);
        // Cut the file short in its last chunk: the chunk is lost, with a warning.
        data.truncate(data.len() - 40);
        let open =
            || Opened::recording(Recording::parse(bytes::Bytes::from(data.clone()), "t").unwrap());
        let (mut a, mut b) = (open(), open());
        let inline = seen(&mut a, Ahead::Inline);
        let ahead = seen(&mut b, Ahead::Thread);
        assert_eq!(inline, ahead);
        assert_eq!(a.warnings, b.warnings);
        assert_eq!(a.damage.len(), b.damage.len());
        assert!(!b.intact(), "the cut chunk is damage");
    }
}
