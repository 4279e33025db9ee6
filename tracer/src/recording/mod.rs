//! The `.aptr` recording: a self-describing header, then chunks of encoded events, each
//! behind a sync marker and covered by a CRC (length included), so that damage costs only
//! the chunks it touches. docs/recording-format.md is the byte-level specification.

pub mod codec;
mod header;
mod writer;

pub use header::{Header, ProbeState, ProbeStatus, Symbol};
pub use writer::{create_private, open_private_append, Writer};

use std::io;
use std::path::Path;

use bytes::Buf;
use serde::{Deserialize, Serialize};

use crate::model::Event;
use codec::ChunkDecoder;
#[cfg(test)]
use header::tag;
use header::HeaderRead;

/// First bytes of every recording. The high byte and CR LF catch text-mode mangling.
pub const MAGIC: [u8; 8] = *b"\x89APTR\r\n\x1a";
/// Starts every chunk.
pub const SYNC: [u8; 8] = *b"\xf5\x0bAPCHK\x9e";
pub const VERSION_MAJOR: u16 = 1;
/// 1.1 added the end marker: a 1.1 recording without one was not finished. 1.2 added the
/// damage of an imported source and the degraded probe state (header tags 10 and 11). 1.3
/// added the guest a live run was limited to (tag 12). 1.4 added the other declared locks an
/// entry read (entry flag bit 4 in a chunk's events).
pub const VERSION_MINOR: u16 = 4;
/// The first version whose writer ends every recording with an end marker.
pub const END_MARKER_SINCE: (u16, u16) = (1, 1);
/// Starts the payload of the end marker: a chunk of no events, so that a 1.0 reader reads
/// past it as an empty chunk instead of reporting damage.
pub const END_TAG: [u8; 8] = *b"APTR-END";
/// End marker payload: tag, events written, chunks written (a newer minor may append more).
pub const END_PAYLOAD: usize = 8 + 8 + 8;
/// A chunk is flushed when its payload reaches this size.
pub const CHUNK_TARGET: usize = 64 * 1024;
/// Largest payload a reader accepts: a damaged length cannot make it allocate more.
pub const CHUNK_MAX: u32 = 16 * 1024 * 1024;
/// Largest header a reader accepts.
pub const HEADER_MAX: u32 = 64 * 1024 * 1024;
/// Chunk bytes around the payload: sync, length, count, crc.
pub const CHUNK_OVERHEAD: usize = 8 + 4 + 4 + 4;

/// A recording that cannot be read at all.
#[derive(Debug, thiserror::Error)]
pub enum ReadError {
    #[error("{path}: not an aptrace recording (bad magic); expected a .aptr file written by `aptrace live --record` or `aptrace import`")]
    NotARecording { path: String },
    #[error("{path}: recording format version {major}.{minor} is newer than this aptrace reads ({VERSION_MAJOR}.x); upgrade aptrace to read it")]
    UnknownMajor {
        path: String,
        major: u16,
        minor: u16,
    },
    #[error("cannot read {path}: {source}")]
    Io { path: String, source: io::Error },
}

/// The reason of the damage entry of a recording without its end marker.
pub const NO_END_MARKER: &str = "no end marker: the writer did not finish";

/// A stretch of the file that was skipped.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Damage {
    pub offset: u64,
    pub bytes: u64,
    pub reason: String,
}

/// A recording read back, possibly partially.
#[derive(Debug)]
pub struct Recording {
    pub header: Header,
    /// Whole good chunks of events, in file order (the end marker is not one).
    pub chunks: Vec<Chunk>,
    /// The end marker, when the file has a good one. Nothing after it is read.
    pub end: Option<EndMarker>,
    pub damage: Vec<Damage>,
    pub warnings: Vec<String>,
    pub version: (u16, u16),
}

/// What the writer said it wrote when it finished (format 1.1 and later).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EndMarker {
    pub offset: u64,
    /// Its size in the file, framing included.
    pub bytes: u64,
    /// Events in the chunks before it.
    pub events: u64,
    /// Chunks of events before it.
    pub chunks: u64,
}

impl EndMarker {
    /// The end marker, if `c` is one: a chunk of no events whose payload carries the tag.
    fn from_chunk(c: &Chunk) -> Option<EndMarker> {
        if c.count != 0 || c.payload.len() < END_PAYLOAD || c.payload[..8] != END_TAG {
            return None;
        }
        let mut p = &c.payload[8..];
        Some(EndMarker {
            offset: c.offset,
            bytes: (CHUNK_OVERHEAD + c.payload.len()) as u64,
            events: p.get_u64_le(),
            chunks: p.get_u64_le(),
        })
    }
}

/// A chunk that passed its CRC (events are decoded on demand).
#[derive(Debug)]
pub struct Chunk {
    pub offset: u64,
    pub count: u32,
    pub payload: bytes::Bytes,
}

impl Chunk {
    /// Decodes the chunk's events.
    /// The chunk's event count, capped by what its payload can hold (every event takes at
    /// least MIN_EVENT_BYTES): the count is data, and a lying one must not size allocations.
    pub fn plausible_count(&self) -> usize {
        (self.count as usize).min(self.payload.len() / codec::MIN_EVENT_BYTES)
    }

    pub fn events(&self) -> Result<Vec<Event>, codec::CodecError> {
        let mut out = Vec::with_capacity(self.plausible_count());
        self.events_into(&mut out)?;
        Ok(out)
    }

    /// [`Chunk::events`] appended to `out` (on an error, `out` holds part of the chunk).
    fn events_into(&self, out: &mut Vec<Event>) -> Result<(), codec::CodecError> {
        out.reserve(self.plausible_count());
        self.decode_each(|e| out.push(e)).map_err(|(_, e)| e)
    }

    /// The warning for a chunk that passed its CRC and stopped decoding after `read` events.
    fn undecodable(&self, read: u32, e: &codec::CodecError) -> String {
        format!(
            "chunk at offset {} passed its CRC but does not decode ({e}): \
             read {read} of its {} events, skipped the other {}",
            self.offset,
            self.count,
            self.count - read
        )
    }

    /// Hands each event on as it is decoded; on a fault, how many were handed on, and why.
    fn decode_each(&self, mut f: impl FnMut(Event)) -> Result<(), (u32, codec::CodecError)> {
        let mut dec = ChunkDecoder::new();
        let mut b: &[u8] = &self.payload;
        for i in 0..self.count {
            f(dec.decode(&mut b).map_err(|e| (i, e))?);
        }
        Ok(())
    }
}

impl Recording {
    /// Reads a recording file.
    pub fn open(path: &Path) -> Result<Recording, ReadError> {
        let data = std::fs::read(path).map_err(|source| ReadError::Io {
            path: path.display().to_string(),
            source,
        })?;
        Recording::parse(bytes::Bytes::from(data), &path.display().to_string())
    }

    /// Parses a recording held in memory. `origin` names it in errors.
    pub fn parse(data: bytes::Bytes, origin: &str) -> Result<Recording, ReadError> {
        if data.len() < 8 || data[..8] != MAGIC {
            return Err(ReadError::NotARecording {
                path: origin.to_string(),
            });
        }
        let mut warnings = Vec::new();
        let mut damage = Vec::new();
        let HeaderRead {
            header,
            version,
            chunks_at: mut pos,
        } = header::read(&data, origin, &mut warnings, &mut damage)?;
        let mut chunks = Vec::new();
        let mut end = None;
        let mut skip_start: Option<usize> = None;
        let mut skip_reason = String::new();
        // Built on the first damage: while resynchronizing, every marker is a candidate
        // whose (possibly lying) length may cover most of the file, so its CRC is computed
        // from prefix CRCs instead of over its bytes (else a file of markers is quadratic).
        let mut ranges: Option<RangeCrc> = None;
        while pos < data.len() {
            let crc_of = |a: usize, b: usize| match &ranges {
                Some(r) => r.crc(&data, a, b),
                None => crc32fast::hash(&data[a..b]),
            };
            match try_chunk(&data, pos, crc_of) {
                Ok((chunk, next)) => {
                    if let Some(s) = skip_start.take() {
                        damage.push(Damage {
                            offset: s as u64,
                            bytes: (pos - s) as u64,
                            reason: std::mem::take(&mut skip_reason),
                        });
                    }
                    pos = next;
                    if let Some(m) = EndMarker::from_chunk(&chunk) {
                        // The writer finished here: what follows is not its recording.
                        end = Some(m);
                        break;
                    }
                    chunks.push(chunk);
                }
                Err(reason) => {
                    if ranges.is_none() {
                        ranges = Some(RangeCrc::new(&data));
                    }
                    if skip_start.is_none() {
                        skip_start = Some(pos);
                        skip_reason = reason;
                    }
                    // Resynchronize on the next marker.
                    pos = match find(&data[pos + 1..], &SYNC) {
                        Some(i) => pos + 1 + i,
                        None => data.len(),
                    };
                }
            }
        }
        if let Some(s) = skip_start {
            damage.push(Damage {
                offset: s as u64,
                bytes: (data.len() - s) as u64,
                reason: skip_reason,
            });
        }
        if end.is_some() && pos < data.len() {
            damage.push(Damage {
                offset: pos as u64,
                bytes: (data.len() - pos) as u64,
                reason: "after the end marker: not part of the finished recording".into(),
            });
        }
        if !damage.is_empty() {
            let bytes: u64 = damage.iter().map(|d| d.bytes).sum();
            warnings.push(format!(
                "{origin}: {} damaged region(s), {bytes} bytes skipped; {} whole chunk(s) recovered: {}",
                damage.len(),
                chunks.len(),
                damage
                    .iter()
                    .map(|d| format!("{} bytes at offset {} ({})", d.bytes, d.offset, d.reason))
                    .collect::<Vec<_>>()
                    .join("; ")
            ));
        }
        // Checked after the summary above, which counts skipped bytes: these notes skip none.
        let events_read: u64 = chunks.iter().map(|c| u64::from(c.count)).sum();
        let chunks_read = chunks.len() as u64;
        match &end {
            None if version >= END_MARKER_SINCE => {
                damage.push(Damage {
                    offset: data.len() as u64,
                    bytes: 0,
                    reason: NO_END_MARKER.into(),
                });
                warnings.push(format!(
                    "{origin}: the recording has no end marker: its writer stopped without finishing it (killed?); events after the last whole chunk are lost"
                ));
            }
            Some(m) if (m.events, m.chunks) != (events_read, chunks_read) => {
                damage.push(Damage {
                    offset: m.offset,
                    bytes: 0,
                    reason: "the end marker's counts disagree with the chunks read".into(),
                });
                warnings.push(format!(
                    "{origin}: the end marker says {} event(s) in {} chunk(s) were written; {events_read} event(s) in {chunks_read} chunk(s) were read before it",
                    m.events, m.chunks
                ));
            }
            _ => {}
        }
        Ok(Recording {
            header,
            chunks,
            end,
            damage,
            warnings,
            version,
        })
    }

    /// True when nothing was skipped and, from format 1.1, the writer finished the recording
    /// (its end marker is there and agrees with the chunks read).
    pub fn intact(&self) -> bool {
        self.damage.is_empty()
    }

    /// Every event of every good chunk. A chunk whose events do not decode is skipped with a
    /// warning pushed to `warnings`.
    pub fn events(&self, warnings: &mut Vec<String>) -> Vec<Event> {
        // A CRC does not make a count honest (anyone can write one): cap each by its payload.
        let total: usize = self.chunks.iter().map(Chunk::plausible_count).sum();
        let mut out = Vec::with_capacity(total);
        self.for_each_event(warnings, |e| out.push(e));
        out
    }

    /// Streams events one at a time, without holding them all. A chunk whose events stop
    /// decoding hands on those before the fault and skips the rest, with a warning pushed
    /// to `warnings`.
    pub fn for_each_event(&self, warnings: &mut Vec<String>, mut f: impl FnMut(Event)) {
        // Each event goes on as soon as it is decoded: decoding a chunk whole first moved
        // every event twice more and walked the chunk's events out of the cache.
        for c in &self.chunks {
            if let Err((i, e)) = c.decode_each(&mut f) {
                warnings.push(c.undecodable(i, &e));
            }
        }
    }

    /// How many whole chunks were read: each decodes on its own, in any order or thread.
    pub fn chunk_count(&self) -> usize {
        self.chunks.len()
    }

    /// Appends the events of chunk `i` to `out`. A chunk that stops decoding appends those
    /// before the fault and gives the warning [`Recording::for_each_event`] would push.
    pub fn decode_chunk(&self, i: usize, out: &mut Vec<Event>) -> Option<String> {
        let c = self.chunks.get(i)?;
        let before = out.len();
        c.events_into(out)
            .err()
            .map(|e| c.undecodable((out.len() - before) as u32, &e))
    }
}

/// CRC-32 of any stretch of a file in O(RANGE_BLOCK) time, from the CRCs of its prefixes.
struct RangeCrc {
    /// `prefix[i]` is the CRC of the file's first `i * RANGE_BLOCK` bytes.
    prefix: Vec<u32>,
}

const RANGE_BLOCK: usize = 1024;

impl RangeCrc {
    fn new(data: &[u8]) -> RangeCrc {
        let mut prefix = Vec::with_capacity(data.len() / RANGE_BLOCK + 1);
        let mut h = crc32fast::Hasher::new();
        prefix.push(0);
        for block in data.chunks_exact(RANGE_BLOCK) {
            h.update(block);
            prefix.push(h.clone().finalize());
        }
        RangeCrc { prefix }
    }

    /// CRC of `data[..end]`.
    fn prefix_crc(&self, data: &[u8], end: usize) -> u32 {
        let i = end / RANGE_BLOCK;
        let mut h =
            crc32fast::Hasher::new_with_initial_len(self.prefix[i], (i * RANGE_BLOCK) as u64);
        h.update(&data[i * RANGE_BLOCK..end]);
        h.finalize()
    }

    /// CRC of `data[a..b]`: crc(AB) = shift(crc(A), |B|) ^ crc(B), and shift is what
    /// combining with the CRC 0 of |B| bytes does.
    fn crc(&self, data: &[u8], a: usize, b: usize) -> u32 {
        let crc_a = self.prefix_crc(data, a);
        let crc_ab = self.prefix_crc(data, b);
        let mut shifted = crc32fast::Hasher::new_with_initial_len(crc_a, a as u64);
        shifted.combine(&crc32fast::Hasher::new_with_initial_len(0, (b - a) as u64));
        crc_ab ^ shifted.finalize()
    }
}

fn try_chunk(
    data: &bytes::Bytes,
    pos: usize,
    crc_of: impl Fn(usize, usize) -> u32,
) -> Result<(Chunk, usize), String> {
    let rest = &data[pos..];
    if rest.len() < 8 || rest[..8] != SYNC {
        return Err("no chunk marker".into());
    }
    if rest.len() < 16 {
        return Err("file ends inside a chunk header".into());
    }
    let len = u32::from_le_bytes(rest[8..12].try_into().expect("4 bytes"));
    let count = u32::from_le_bytes(rest[12..16].try_into().expect("4 bytes"));
    if len > CHUNK_MAX {
        return Err(format!(
            "chunk length {len} is larger than any writer makes"
        ));
    }
    let end = 16 + len as usize;
    if rest.len() < end + 4 {
        return Err("file ends inside a chunk (cut off)".into());
    }
    let crc = u32::from_le_bytes(rest[end..end + 4].try_into().expect("4 bytes"));
    if crc_of(pos + 8, pos + end) != crc {
        return Err("chunk CRC mismatch".into());
    }
    Ok((
        Chunk {
            offset: pos as u64,
            count,
            payload: data.slice(pos + 16..pos + end),
        },
        pos + end + 4,
    ))
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

#[cfg(test)]
mod tests;
