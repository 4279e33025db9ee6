//! The `.aptr` recording: a self-describing header, then chunks of encoded events, each
//! behind a sync marker and covered by a CRC (length included), so that damage costs only
//! the chunks it touches. docs/recording-format.md is the byte-level specification.

pub mod codec;
mod writer;

pub use writer::{create_private, open_private_append, Writer};

use std::io;
use std::path::Path;

use bytes::{Buf, BufMut, BytesMut};
use serde::{Deserialize, Serialize};

use crate::model::Event;
use codec::ChunkDecoder;

/// First bytes of every recording. The high byte and CR LF catch text-mode mangling.
pub const MAGIC: [u8; 8] = *b"\x89APTR\r\n\x1a";
/// Starts every chunk.
pub const SYNC: [u8; 8] = *b"\xf5\x0bAPCHK\x9e";
pub const VERSION_MAJOR: u16 = 1;
/// 1.1 added the end marker: a 1.1 recording without one was not finished. 1.2 added the
/// damage of an imported source and the degraded probe state (header tags 10 and 11). 1.3
/// added the guest a live run was limited to (tag 12).
pub const VERSION_MINOR: u16 = 3;
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

/// A function symbol of the traced module.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Symbol {
    #[serde(with = "crate::model::hex_u64")]
    pub addr: u64,
    pub size: u32,
    pub name: String,
}

/// Whether a probe attached.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum ProbeState {
    Attached,
    /// Not in the running kernel (or inlined: without debug info the two look alike).
    Missing,
    /// Attached for timing only: a compiler clone whose arguments are not trusted.
    Clone,
    Failed,
    /// Attached, but without a read some check needs (a struct offset BTF could not give and
    /// no `--offset` supplied): the findings that need it cannot be detected. Stored as
    /// attached (code 0) in the probes field, so a 1.1 reader does not take it for a failure,
    /// and named in the degraded field (tag 11).
    Degraded,
}

impl ProbeState {
    fn code(self) -> u8 {
        match self {
            ProbeState::Attached | ProbeState::Degraded => 0,
            ProbeState::Missing => 1,
            ProbeState::Clone => 2,
            ProbeState::Failed => 3,
        }
    }
    fn from_code(c: u8) -> Option<ProbeState> {
        Some(match c {
            0 => ProbeState::Attached,
            1 => ProbeState::Missing,
            2 => ProbeState::Clone,
            3 => ProbeState::Failed,
            _ => return None,
        })
    }
    pub fn name(self) -> &'static str {
        match self {
            ProbeState::Attached => "attached",
            ProbeState::Missing => "missing",
            ProbeState::Clone => "clone",
            ProbeState::Failed => "failed",
            ProbeState::Degraded => "degraded",
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProbeStatus {
    pub name: String,
    pub state: ProbeState,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub detail: String,
}

/// What a recording says about where it came from.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Header {
    /// `uname -m` of the traced host.
    pub arch: String,
    pub kernel_release: String,
    pub hostname: String,
    /// Add to a kernel boot-clock timestamp to get Unix nanoseconds.
    pub boot_to_wall_ns: i64,
    pub module: String,
    pub symbols: Vec<Symbol>,
    /// The profile used, as TOML.
    pub profile: String,
    pub probes: Vec<ProbeStatus>,
    /// The aptrace that wrote it.
    pub writer: String,
    /// Damage of the source this recording was imported from (format 1.2): the import copies
    /// the events that survived, and this says what did not. JSON lines carry it in their
    /// `source` record, not in the header line.
    #[serde(skip)]
    pub source_damage: Vec<Damage>,
    /// `live --guest`: the run was limited to this guest's devices (format 1.3), as given:
    /// a QEMU pid or a `-name guest=` name. Reports of the recording list only them.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub guest: Option<String>,
}

mod tag {
    pub const ARCH: u16 = 1;
    pub const KERNEL: u16 = 2;
    pub const HOSTNAME: u16 = 3;
    pub const BOOT_TO_WALL: u16 = 4;
    pub const MODULE: u16 = 5;
    pub const SYMBOLS: u16 = 6;
    pub const PROFILE: u16 = 7;
    pub const PROBES: u16 = 8;
    pub const WRITER: u16 = 9;
    pub const SOURCE_DAMAGE: u16 = 10;
    pub const DEGRADED: u16 = 11;
    pub const GUEST: u16 = 12;
}

fn put_str(b: &mut BytesMut, s: &str) {
    b.put_u32_le(s.len() as u32);
    b.put_slice(s.as_bytes());
}

fn get_str(b: &mut &[u8]) -> Option<String> {
    if b.remaining() < 4 {
        return None;
    }
    let n = b.get_u32_le() as usize;
    if n > b.remaining() {
        return None;
    }
    let s = String::from_utf8_lossy(&b[..n]).into_owned();
    b.advance(n);
    Some(s)
}

impl Header {
    fn encode(&self) -> BytesMut {
        let mut out = BytesMut::new();
        let mut field = |t: u16, f: &dyn Fn(&mut BytesMut)| {
            let mut v = BytesMut::new();
            f(&mut v);
            out.put_u16_le(t);
            out.put_u32_le(v.len() as u32);
            out.put_slice(&v);
        };
        field(tag::ARCH, &|b| b.put_slice(self.arch.as_bytes()));
        field(tag::KERNEL, &|b| {
            b.put_slice(self.kernel_release.as_bytes())
        });
        field(tag::HOSTNAME, &|b| b.put_slice(self.hostname.as_bytes()));
        field(tag::BOOT_TO_WALL, &|b| b.put_i64_le(self.boot_to_wall_ns));
        field(tag::MODULE, &|b| b.put_slice(self.module.as_bytes()));
        field(tag::SYMBOLS, &|b| {
            b.put_u32_le(self.symbols.len() as u32);
            for s in &self.symbols {
                b.put_u64_le(s.addr);
                b.put_u32_le(s.size);
                put_str(b, &s.name);
            }
        });
        field(tag::PROFILE, &|b| b.put_slice(self.profile.as_bytes()));
        field(tag::PROBES, &|b| {
            b.put_u32_le(self.probes.len() as u32);
            for p in &self.probes {
                put_str(b, &p.name);
                b.put_u8(p.state.code());
                put_str(b, &p.detail);
            }
        });
        field(tag::WRITER, &|b| b.put_slice(self.writer.as_bytes()));
        if !self.source_damage.is_empty() {
            field(tag::SOURCE_DAMAGE, &|b| {
                b.put_u32_le(self.source_damage.len() as u32);
                for d in &self.source_damage {
                    b.put_u64_le(d.offset);
                    b.put_u64_le(d.bytes);
                    put_str(b, &d.reason);
                }
            });
        }
        let degraded: Vec<&ProbeStatus> = self
            .probes
            .iter()
            .filter(|p| p.state == ProbeState::Degraded)
            .collect();
        if !degraded.is_empty() {
            field(tag::DEGRADED, &|b| {
                b.put_u32_le(degraded.len() as u32);
                for p in &degraded {
                    put_str(b, &p.name);
                }
            });
        }
        if let Some(g) = &self.guest {
            field(tag::GUEST, &|b| b.put_slice(g.as_bytes()));
        }
        out
    }

    /// Decodes the header's fields; unknown tags (a newer minor version) are skipped.
    fn decode(mut b: &[u8], warnings: &mut Vec<String>) -> Header {
        let mut h = Header::default();
        let mut degraded = Vec::new();
        let text = |v: &[u8]| String::from_utf8_lossy(v).into_owned();
        while b.remaining() >= 6 {
            let t = b.get_u16_le();
            let n = b.get_u32_le() as usize;
            if n > b.remaining() {
                warnings.push(format!(
                    "header field {t} claims {n} bytes, only {} remain",
                    b.remaining()
                ));
                break;
            }
            let mut v = &b[..n];
            b.advance(n);
            match t {
                tag::ARCH => h.arch = text(v),
                tag::KERNEL => h.kernel_release = text(v),
                tag::HOSTNAME => h.hostname = text(v),
                tag::BOOT_TO_WALL if n == 8 => h.boot_to_wall_ns = v.get_i64_le(),
                tag::MODULE => h.module = text(v),
                tag::SYMBOLS if n >= 4 => {
                    let count = v.get_u32_le();
                    for _ in 0..count {
                        if v.remaining() < 12 {
                            break;
                        }
                        let addr = v.get_u64_le();
                        let size = v.get_u32_le();
                        let Some(name) = get_str(&mut v) else { break };
                        h.symbols.push(Symbol { addr, size, name });
                    }
                }
                tag::PROFILE => h.profile = text(v),
                tag::PROBES if n >= 4 => {
                    let count = v.get_u32_le();
                    for _ in 0..count {
                        let Some(name) = get_str(&mut v) else { break };
                        if !v.has_remaining() {
                            break;
                        }
                        let state = ProbeState::from_code(v.get_u8()).unwrap_or(ProbeState::Failed);
                        let Some(detail) = get_str(&mut v) else { break };
                        h.probes.push(ProbeStatus {
                            name,
                            state,
                            detail,
                        });
                    }
                }
                tag::WRITER => h.writer = text(v),
                tag::SOURCE_DAMAGE if n >= 4 => {
                    let count = v.get_u32_le();
                    for _ in 0..count {
                        if v.remaining() < 16 {
                            break;
                        }
                        let offset = v.get_u64_le();
                        let bytes = v.get_u64_le();
                        let Some(reason) = get_str(&mut v) else { break };
                        h.source_damage.push(Damage {
                            offset,
                            bytes,
                            reason,
                        });
                    }
                }
                tag::GUEST => h.guest = Some(text(v)),
                tag::DEGRADED if n >= 4 => {
                    let count = v.get_u32_le();
                    for _ in 0..count {
                        let Some(name) = get_str(&mut v) else { break };
                        degraded.push(name);
                    }
                }
                _ => {}
            }
        }
        // The probes field comes first and stores a degraded probe as attached.
        for p in &mut h.probes {
            if p.state == ProbeState::Attached && degraded.contains(&p.name) {
                p.state = ProbeState::Degraded;
            }
        }
        h
    }
}

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
        let mut dec = ChunkDecoder::new();
        let mut b: &[u8] = &self.payload;
        let mut out = Vec::with_capacity(self.plausible_count());
        for _ in 0..self.count {
            out.push(dec.decode(&mut b)?);
        }
        Ok(out)
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
        let mut version = (VERSION_MAJOR, 0);
        let mut header = Header::default();
        let mut pos = 8usize;
        if data.len() >= 16 {
            let major = u16::from_le_bytes([data[8], data[9]]);
            let minor = u16::from_le_bytes([data[10], data[11]]);
            let len = u32::from_le_bytes(data[12..16].try_into().expect("4 bytes"));
            let end = 16usize.saturating_add(len as usize);
            let crc_ok = len <= HEADER_MAX
                && end + 4 <= data.len()
                && crc32fast::hash(&data[8..end])
                    == u32::from_le_bytes(data[end..end + 4].try_into().expect("4 bytes"));
            if crc_ok {
                if major != VERSION_MAJOR {
                    return Err(ReadError::UnknownMajor {
                        path: origin.to_string(),
                        major,
                        minor,
                    });
                }
                if minor > VERSION_MINOR {
                    warnings.push(format!(
                        "{origin}: format version {major}.{minor} is newer than this aptrace ({VERSION_MAJOR}.{VERSION_MINOR}); reading what this version knows"
                    ));
                }
                version = (major, minor);
                header = Header::decode(&data[16..end], &mut warnings);
                pos = end + 4;
                if !header.source_damage.is_empty() {
                    let bytes: u64 = header.source_damage.iter().map(|d| d.bytes).sum();
                    warnings.push(format!(
                        "{origin}: imported from an incomplete source: {} damaged region(s), {bytes} bytes, were lost before the import",
                        header.source_damage.len()
                    ));
                    damage.extend(header.source_damage.iter().cloned());
                }
            } else {
                warnings.push(format!(
                    "{origin}: the header is damaged (bad CRC or length); its host, kernel and symbols are unknown; scanning for event chunks"
                ));
                damage.push(Damage {
                    offset: 8,
                    bytes: 0,
                    reason: "damaged header".into(),
                });
            }
        } else {
            damage.push(Damage {
                offset: 8,
                bytes: (data.len() - 8) as u64,
                reason: "file ends inside the header".into(),
            });
            // Those bytes are counted: do not scan them again as a second skipped region.
            pos = data.len();
        }
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

    /// Streams events chunk by chunk, without holding them all.
    pub fn for_each_event(&self, warnings: &mut Vec<String>, mut f: impl FnMut(Event)) {
        for c in &self.chunks {
            match c.events() {
                Ok(evs) => evs.into_iter().for_each(&mut f),
                Err(e) => warnings.push(format!(
                    "chunk at offset {} passed its CRC but does not decode ({e}): skipped {} events",
                    c.offset, c.count
                )),
            }
        }
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
