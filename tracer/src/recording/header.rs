//! The recording's header: where a recording came from (host, kernel, symbols, probes,
//! profile), its tagged encoding, and the format version check that precedes it.

use bytes::{Buf, BufMut, BytesMut};
use serde::{Deserialize, Serialize};

use super::{Damage, ReadError, HEADER_MAX, VERSION_MAJOR, VERSION_MINOR};

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

pub(super) mod tag {
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
    pub(super) fn encode(&self) -> BytesMut {
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
    pub(super) fn decode(mut b: &[u8], warnings: &mut Vec<String>) -> Header {
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

/// Where the header left the reader.
pub(super) struct HeaderRead {
    pub header: Header,
    pub version: (u16, u16),
    /// Offset of the first chunk.
    pub chunks_at: usize,
}

/// Reads the format version and the header after the magic. A damaged header is damage,
/// not an error (the chunks may still be good); only a newer major version refuses the file.
pub(super) fn read(
    data: &[u8],
    origin: &str,
    warnings: &mut Vec<String>,
    damage: &mut Vec<Damage>,
) -> Result<HeaderRead, ReadError> {
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
            header = Header::decode(&data[16..end], warnings);
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
    Ok(HeaderRead {
        header,
        version,
        chunks_at: pos,
    })
}
