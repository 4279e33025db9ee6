//! The typed, architecture-neutral event model, decoded from the ABI records of
//! `tracer-common` with an explicit byte order.
//!
//! Everything after the source (reorder, auditor, recorder, sinks) speaks this model; a
//! recording stores it, and the JSON-lines format is its serde form.

use std::sync::Arc;

use serde::{Deserialize, Serialize};
use tracer_common as abi;

/// Byte order of the machine that produced raw records.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Endian {
    Little,
    Big,
}

impl Endian {
    /// The byte order of the architecture named as `uname -m` prints it.
    pub fn of_arch(arch: &str) -> Endian {
        match arch {
            "s390x" | "s390" | "ppc64" | "sparc64" | "mips" | "bpfeb" => Endian::Big,
            _ => Endian::Little,
        }
    }
}

/// How a probe saw `matrix_dev->mdevs_lock` when a function was entered.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "kebab-case", tag = "state")]
pub enum LockObs {
    /// Not read (no lock address known, or the function has no contract).
    #[default]
    NotChecked,
    Free,
    HeldByCurrent,
    HeldByOther {
        #[serde(with = "hex_u64")]
        owner: u64,
    },
}

/// Which allocator an allocation or free went through.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Allocator {
    Kmalloc,
    KmemCache,
    Kvmalloc,
    Vmalloc,
}

impl TryFrom<u8> for Allocator {
    type Error = DecodeError;
    fn try_from(v: u8) -> Result<Self, DecodeError> {
        Ok(match v {
            abi::allocator::KMALLOC => Allocator::Kmalloc,
            abi::allocator::KMEM_CACHE => Allocator::KmemCache,
            abi::allocator::KVMALLOC => Allocator::Kvmalloc,
            abi::allocator::VMALLOC => Allocator::Vmalloc,
            other => return Err(DecodeError::UnknownAllocator(other)),
        })
    }
}

impl TryFrom<u8> for LockObs {
    type Error = DecodeError;
    fn try_from(v: u8) -> Result<Self, DecodeError> {
        Ok(match v {
            abi::lock_state::NOT_CHECKED => LockObs::NotChecked,
            abi::lock_state::FREE => LockObs::Free,
            abi::lock_state::HELD_BY_CURRENT => LockObs::HeldByCurrent,
            abi::lock_state::HELD_BY_OTHER => LockObs::HeldByOther { owner: 0 },
            other => return Err(DecodeError::UnknownLockState(other)),
        })
    }
}

/// Why events were lost.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum LossSource {
    /// The ring buffer was full.
    RingBuffer,
    /// A kretprobe had no free instance (the kernel's `nmissed`).
    KretprobeMiss,
    /// A return arrived without its entry.
    ExitWithoutEntry,
    /// Chunks of a recording were damaged and skipped.
    Recording,
}

/// The task an event happened in.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Task {
    /// Process id (tgid).
    pub pid: u32,
    /// Thread id.
    pub tid: u32,
    pub comm: Arc<str>,
}

/// One event.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Event {
    /// Position in the ordered stream; findings cite these.
    pub seq: u64,
    /// Kernel boot-clock nanoseconds.
    #[serde(with = "dec_u64")]
    pub ts_ns: u64,
    pub cpu: u32,
    #[serde(flatten)]
    pub task: Task,
    #[serde(flatten)]
    pub body: Body,
}

/// What happened.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "kebab-case")]
pub enum Body {
    /// A profiled function was entered.
    Enter {
        func: Arc<str>,
        /// Argument registers (as many as the probe captured).
        #[serde(with = "hex_vec")]
        args: Vec<u64>,
        /// The profile's field read on entry, if any.
        #[serde(default, skip_serializing_if = "Option::is_none", with = "hex_opt")]
        field: Option<u64>,
        #[serde(default)]
        lock: LockObs,
        /// Arguments are not trustworthy (compiler clone).
        #[serde(default, skip_serializing_if = "is_false")]
        untrusted: bool,
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        stack: Vec<Arc<str>>,
    },
    /// A profiled function returned.
    Exit {
        func: Arc<str>,
        /// The raw return register; errors are negative as i64.
        #[serde(with = "hex_u64")]
        ret: u64,
        /// First argument as seen at entry (0 if unknown).
        #[serde(with = "hex_u64")]
        arg0: u64,
        #[serde(default, skip_serializing_if = "Option::is_none", with = "dec_opt")]
        duration_ns: Option<u64>,
        #[serde(default, skip_serializing_if = "Option::is_none", with = "hex_opt")]
        field: Option<u64>,
    },
    /// The allocator returned memory to the traced module.
    Alloc {
        #[serde(with = "hex_u64")]
        ptr: u64,
        bytes: u64,
        /// Function of the call site (symbolized), if known.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        site: Option<Arc<str>>,
        allocator: Allocator,
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        stack: Vec<Arc<str>>,
    },
    /// Memory was freed.
    Free {
        #[serde(with = "hex_u64")]
        ptr: u64,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        site: Option<Arc<str>>,
        allocator: Allocator,
    },
    /// Events were dropped before this point.
    Lost { count: u64, source: LossSource },
    /// Userspace learned an mdev's name (the vfio device's `dev_name()`).
    MdevName {
        #[serde(with = "hex_u64")]
        mdev: u64,
        uuid: Arc<str>,
    },
    /// Userspace learned a guest's name (`-name guest=` of a QEMU process).
    GuestName { guest_pid: u32, name: Arc<str> },
}

fn is_false(b: &bool) -> bool {
    !*b
}

impl Body {
    /// The function this event belongs to, if it is a call event.
    pub fn func(&self) -> Option<&str> {
        match self {
            Body::Enter { func, .. } | Body::Exit { func, .. } => Some(func),
            _ => None,
        }
    }
}

/// A raw record that could not be decoded.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum DecodeError {
    #[error("record of {len} bytes is shorter than the {need} bytes its kind {kind} needs")]
    Short { kind: u16, len: usize, need: usize },
    #[error("unknown record kind {0}")]
    UnknownKind(u16),
    #[error("unknown allocator id {0}")]
    UnknownAllocator(u8),
    #[error("unknown lock state {0}")]
    UnknownLockState(u8),
}

/// Resolves kernel addresses to names (functions, call sites, stack frames).
pub trait Symbolizer {
    /// The function containing `addr`, as `name` (or `name+0xoff` where `exact` is false).
    fn function_at(&self, addr: u64) -> Option<Arc<str>>;
    /// A stack frame for display: `name+0xoff [module]` or the raw address.
    fn frame(&self, addr: u64) -> Arc<str> {
        self.function_at(addr)
            .unwrap_or_else(|| Arc::from(format!("{addr:#x}")))
    }
}

/// A symbolizer that knows nothing, for tests and replays of raw captures.
pub struct NoSymbols;
impl Symbolizer for NoSymbols {
    fn function_at(&self, _addr: u64) -> Option<Arc<str>> {
        None
    }
}

/// Reads integers in a fixed byte order from a raw record.
struct Raw<'a> {
    buf: &'a [u8],
    endian: Endian,
}

impl Raw<'_> {
    fn u8(&self, off: usize) -> u8 {
        self.buf[off]
    }
    fn u16(&self, off: usize) -> u16 {
        let b = [self.buf[off], self.buf[off + 1]];
        match self.endian {
            Endian::Little => u16::from_le_bytes(b),
            Endian::Big => u16::from_be_bytes(b),
        }
    }
    fn u32(&self, off: usize) -> u32 {
        let b: [u8; 4] = self.buf[off..off + 4].try_into().expect("4 bytes");
        match self.endian {
            Endian::Little => u32::from_le_bytes(b),
            Endian::Big => u32::from_be_bytes(b),
        }
    }
    fn u64(&self, off: usize) -> u64 {
        let b: [u8; 8] = self.buf[off..off + 8].try_into().expect("8 bytes");
        match self.endian {
            Endian::Little => u64::from_le_bytes(b),
            Endian::Big => u64::from_be_bytes(b),
        }
    }
}

/// Offsets of the ABI fields, derived from the `repr(C)` layout.
mod off {
    use core::mem::offset_of;
    use tracer_common::*;
    pub const KIND: usize = offset_of!(RecordHeader, kind);
    pub const FLAGS: usize = offset_of!(RecordHeader, flags);
    pub const CPU: usize = offset_of!(RecordHeader, cpu);
    pub const TS: usize = offset_of!(RecordHeader, ts_ns);
    pub const TGID: usize = offset_of!(RecordHeader, tgid);
    pub const PID: usize = offset_of!(RecordHeader, pid);
    pub const COMM: usize = offset_of!(RecordHeader, comm);
    pub const E_IP: usize = offset_of!(FuncEntry, func_ip);
    pub const E_ARGS: usize = offset_of!(FuncEntry, args);
    pub const E_FIELD: usize = offset_of!(FuncEntry, field);
    pub const E_OWNER: usize = offset_of!(FuncEntry, lock_owner);
    pub const E_LOCK: usize = offset_of!(FuncEntry, lock_state);
    pub const E_STACK: usize = offset_of!(FuncEntry, stack_id);
    pub const X_IP: usize = offset_of!(FuncExit, func_ip);
    pub const X_RET: usize = offset_of!(FuncExit, ret);
    pub const X_ARG0: usize = offset_of!(FuncExit, arg0);
    pub const X_DUR: usize = offset_of!(FuncExit, duration_ns);
    pub const X_FIELD: usize = offset_of!(FuncExit, field);
    pub const A_PTR: usize = offset_of!(AllocRecord, ptr);
    pub const A_BYTES: usize = offset_of!(AllocRecord, bytes_req);
    pub const A_SITE: usize = offset_of!(AllocRecord, call_site);
    pub const A_ALLOC: usize = offset_of!(AllocRecord, allocator);
    pub const A_STACK: usize = offset_of!(AllocRecord, stack_id);
    pub const F_PTR: usize = offset_of!(FreeRecord, ptr);
    pub const F_SITE: usize = offset_of!(FreeRecord, call_site);
    pub const F_ALLOC: usize = offset_of!(FreeRecord, allocator);
    pub const N_OBJ: usize = offset_of!(NameRecord, obj);
    pub const N_NAME: usize = offset_of!(NameRecord, name);
}

/// A decoded record before it is given a sequence number: the stack is still an id.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Decoded {
    pub event: Event,
    /// Kernel stack id to symbolize, if the record carried one.
    pub stack_id: Option<i32>,
}

/// Decodes one raw ring-buffer record.
///
/// `endian` is the byte order of the machine that wrote it. Function addresses are named
/// through `symbols`; an address it does not know is kept as hex.
pub fn decode_record(
    buf: &[u8],
    endian: Endian,
    symbols: &dyn Symbolizer,
) -> Result<Decoded, DecodeError> {
    use core::mem::size_of;
    let hdr = size_of::<abi::RecordHeader>();
    if buf.len() < hdr {
        return Err(DecodeError::Short {
            kind: 0,
            len: buf.len(),
            need: hdr,
        });
    }
    let r = Raw { buf, endian };
    let kind = r.u16(off::KIND);
    let need = match kind {
        abi::kind::FUNC_ENTRY => size_of::<abi::FuncEntry>(),
        abi::kind::FUNC_EXIT => size_of::<abi::FuncExit>(),
        abi::kind::ALLOC => size_of::<abi::AllocRecord>(),
        abi::kind::FREE => size_of::<abi::FreeRecord>(),
        abi::kind::MDEV_NAME => size_of::<abi::NameRecord>(),
        other => return Err(DecodeError::UnknownKind(other)),
    };
    if buf.len() < need {
        return Err(DecodeError::Short {
            kind,
            len: buf.len(),
            need,
        });
    }
    let flags = r.u16(off::FLAGS);
    let comm_raw = &buf[off::COMM..off::COMM + abi::COMM_LEN];
    let comm_len = comm_raw
        .iter()
        .position(|&b| b == 0)
        .unwrap_or(abi::COMM_LEN);
    let task = Task {
        pid: r.u32(off::TGID),
        tid: r.u32(off::PID),
        comm: Arc::from(String::from_utf8_lossy(&comm_raw[..comm_len]).as_ref()),
    };
    let name = |addr: u64| {
        symbols
            .function_at(addr)
            .unwrap_or_else(|| Arc::from(format!("{addr:#x}")))
    };
    let field_valid = flags & abi::flags::FIELD_VALID != 0;
    let mut stack_id = None;
    let body = match kind {
        abi::kind::FUNC_ENTRY => {
            let mut lock = LockObs::try_from(r.u8(off::E_LOCK))?;
            if let LockObs::HeldByOther { owner } = &mut lock {
                *owner = r.u64(off::E_OWNER);
            }
            if flags & abi::flags::STACK_VALID != 0 {
                stack_id = Some(r.u32(off::E_STACK) as i32);
            }
            Body::Enter {
                func: name(r.u64(off::E_IP)),
                args: (0..abi::MAX_ARGS)
                    .map(|i| r.u64(off::E_ARGS + 8 * i))
                    .collect(),
                field: field_valid.then(|| r.u64(off::E_FIELD)),
                lock,
                untrusted: flags & abi::flags::ARGS_UNTRUSTED != 0,
                stack: Vec::new(),
            }
        }
        abi::kind::FUNC_EXIT => Body::Exit {
            func: name(r.u64(off::X_IP)),
            ret: r.u64(off::X_RET),
            arg0: r.u64(off::X_ARG0),
            duration_ns: (flags & abi::flags::DURATION_VALID != 0).then(|| r.u64(off::X_DUR)),
            field: field_valid.then(|| r.u64(off::X_FIELD)),
        },
        abi::kind::ALLOC => {
            if flags & abi::flags::STACK_VALID != 0 {
                stack_id = Some(r.u32(off::A_STACK) as i32);
            }
            Body::Alloc {
                ptr: r.u64(off::A_PTR),
                bytes: r.u64(off::A_BYTES),
                site: symbols.function_at(r.u64(off::A_SITE)),
                allocator: Allocator::try_from(r.u8(off::A_ALLOC))?,
                stack: Vec::new(),
            }
        }
        abi::kind::FREE => Body::Free {
            ptr: r.u64(off::F_PTR),
            site: symbols.function_at(r.u64(off::F_SITE)),
            allocator: Allocator::try_from(r.u8(off::F_ALLOC))?,
        },
        abi::kind::MDEV_NAME => {
            let raw = &buf[off::N_NAME..off::N_NAME + abi::NAME_LEN];
            let len = raw.iter().position(|&b| b == 0).unwrap_or(abi::NAME_LEN);
            Body::MdevName {
                mdev: r.u64(off::N_OBJ),
                uuid: Arc::from(String::from_utf8_lossy(&raw[..len]).as_ref()),
            }
        }
        _ => unreachable!("kind checked above"),
    };
    Ok(Decoded {
        event: Event {
            seq: 0,
            ts_ns: r.u64(off::TS),
            cpu: r.u32(off::CPU),
            task,
            body,
        },
        stack_id,
    })
}

/// Kernel pointers as `"0xffff..."` strings: they do not fit a JSON double.
pub mod hex_u64 {
    use serde::{de::Error, Deserialize, Deserializer, Serializer};
    pub fn serialize<S: Serializer>(v: &u64, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&format!("{v:#x}"))
    }
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<u64, D::Error> {
        let s = String::deserialize(d)?;
        parse(&s).map_err(D::Error::custom)
    }
    /// Parses `0x...` hex or plain decimal.
    pub fn parse(s: &str) -> Result<u64, String> {
        let t = s.trim();
        let r = match t.strip_prefix("0x").or_else(|| t.strip_prefix("0X")) {
            Some(h) => u64::from_str_radix(h, 16),
            None => t.parse::<u64>(),
        };
        r.map_err(|e| format!("bad integer {s:?}: {e}"))
    }
}

/// Optional kernel pointer as a hex string.
pub mod hex_opt {
    use serde::{Deserialize, Deserializer, Serializer};
    pub fn serialize<S: Serializer>(v: &Option<u64>, s: S) -> Result<S::Ok, S::Error> {
        match v {
            Some(v) => super::hex_u64::serialize(v, s),
            None => s.serialize_none(),
        }
    }
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<u64>, D::Error> {
        let s: Option<String> = Option::deserialize(d)?;
        s.map(|s| super::hex_u64::parse(&s).map_err(serde::de::Error::custom))
            .transpose()
    }
}

/// A list of register values as hex strings.
pub mod hex_vec {
    use serde::{ser::SerializeSeq, Deserialize, Deserializer, Serializer};
    pub fn serialize<S: Serializer>(v: &[u64], s: S) -> Result<S::Ok, S::Error> {
        let mut seq = s.serialize_seq(Some(v.len()))?;
        for x in v {
            seq.serialize_element(&format!("{x:#x}"))?;
        }
        seq.end()
    }
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<u64>, D::Error> {
        let v: Vec<String> = Vec::deserialize(d)?;
        v.iter()
            .map(|s| super::hex_u64::parse(s).map_err(serde::de::Error::custom))
            .collect()
    }
}

/// Nanosecond times as decimal strings: they do not fit a JSON double.
pub mod dec_u64 {
    use serde::{Deserialize, Deserializer, Serializer};
    pub fn serialize<S: Serializer>(v: &u64, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&v.to_string())
    }
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<u64, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum StrOrNum {
            S(String),
            N(u64),
        }
        match StrOrNum::deserialize(d)? {
            StrOrNum::S(s) => super::hex_u64::parse(&s).map_err(serde::de::Error::custom),
            StrOrNum::N(n) => Ok(n),
        }
    }
}

/// Optional nanoseconds as a decimal string.
pub mod dec_opt {
    use serde::{Deserialize, Deserializer, Serializer};
    pub fn serialize<S: Serializer>(v: &Option<u64>, s: S) -> Result<S::Ok, S::Error> {
        match v {
            Some(v) => super::dec_u64::serialize(v, s),
            None => s.serialize_none(),
        }
    }
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<u64>, D::Error> {
        #[derive(Deserialize)]
        struct W(#[serde(with = "super::dec_u64")] u64);
        Ok(Option::<W>::deserialize(d)?.map(|w| w.0))
    }
}

impl Event {
    /// One line a person can read: what happened, without the time and task.
    pub fn describe(&self) -> String {
        match &self.body {
            Body::Enter {
                func,
                args,
                field,
                lock,
                untrusted,
                ..
            } => {
                let mut s = format!("→ {func}(");
                let shown: Vec<String> = args
                    .iter()
                    .take(2)
                    .map(|a| {
                        if *a > 0xffff {
                            format!("{a:#x}")
                        } else {
                            a.to_string()
                        }
                    })
                    .collect();
                s.push_str(&shown.join(", "));
                s.push(')');
                if let Some(f) = field {
                    s.push_str(&format!(" field={f:#x}"));
                }
                match lock {
                    LockObs::NotChecked => {}
                    LockObs::Free => s.push_str(" [mdevs_lock free]"),
                    LockObs::HeldByCurrent => s.push_str(" [mdevs_lock held by this task]"),
                    LockObs::HeldByOther { owner } => {
                        s.push_str(&format!(" [mdevs_lock held by task {owner:#x}]"))
                    }
                }
                if *untrusted {
                    s.push_str(" (clone: args untrusted)");
                }
                s
            }
            Body::Exit {
                func,
                ret,
                field,
                duration_ns,
                ..
            } => {
                let r = *ret as i64;
                let shown =
                    if (-4095..0).contains(&r) || (*ret as u32 as i32) < 0 && (*ret >> 32) == 0 {
                        format!("{}", *ret as u32 as i32)
                    } else if *ret > 0xffff {
                        format!("{ret:#x}")
                    } else {
                        ret.to_string()
                    };
                let mut s = format!("← {func} = {shown}");
                if let Some(f) = field {
                    s.push_str(&format!(" field={f:#x}"));
                }
                if let Some(d) = duration_ns {
                    s.push_str(&format!(" ({})", human_ns(*d)));
                }
                s
            }
            Body::Alloc {
                ptr,
                bytes,
                site,
                allocator,
                ..
            } => format!(
                "alloc {ptr:#x} {bytes} bytes via {allocator:?} from {}",
                site.as_deref().unwrap_or("?")
            ),
            Body::Free { ptr, site, .. } => {
                format!("free {ptr:#x} from {}", site.as_deref().unwrap_or("?"))
            }
            Body::Lost { count, source } => format!("{count} events lost ({source:?})"),
            Body::MdevName { mdev, uuid } => format!("mdev {mdev:#x} is {uuid}"),
            Body::GuestName { guest_pid, name } => format!("pid {guest_pid} is guest {name}"),
        }
    }
}

/// `1.2µs`, `35ms`, `2.0s`.
pub fn human_ns(ns: u64) -> String {
    match ns {
        0..=999 => format!("{ns}ns"),
        1_000..=999_999 => format!("{:.1}µs", ns as f64 / 1e3),
        1_000_000..=999_999_999 => format!("{:.1}ms", ns as f64 / 1e6),
        _ => format!("{:.2}s", ns as f64 / 1e9),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry_record(endian: Endian) -> Vec<u8> {
        let mut b = vec![0u8; core::mem::size_of::<abi::FuncEntry>()];
        let put16 = |b: &mut Vec<u8>, o: usize, v: u16| {
            let x = match endian {
                Endian::Little => v.to_le_bytes(),
                Endian::Big => v.to_be_bytes(),
            };
            b[o..o + 2].copy_from_slice(&x)
        };
        let put32 = |b: &mut Vec<u8>, o: usize, v: u32| {
            let x = match endian {
                Endian::Little => v.to_le_bytes(),
                Endian::Big => v.to_be_bytes(),
            };
            b[o..o + 4].copy_from_slice(&x)
        };
        let put64 = |b: &mut Vec<u8>, o: usize, v: u64| {
            let x = match endian {
                Endian::Little => v.to_le_bytes(),
                Endian::Big => v.to_be_bytes(),
            };
            b[o..o + 8].copy_from_slice(&x)
        };
        put16(&mut b, off::KIND, abi::kind::FUNC_ENTRY);
        put16(&mut b, off::FLAGS, abi::flags::FIELD_VALID);
        put32(&mut b, off::CPU, 1);
        put64(&mut b, off::TS, 123_456_789);
        put32(&mut b, off::TGID, 4242);
        put32(&mut b, off::PID, 4243);
        b[off::COMM..off::COMM + 4].copy_from_slice(b"qemu");
        put64(&mut b, off::E_IP, 0xffff_ffff_c000_1000);
        put64(&mut b, off::E_ARGS, 0xffff_8880_1234_5600);
        put64(&mut b, off::E_FIELD, 0xffff_8880_0000_0040);
        b[off::E_LOCK] = abi::lock_state::HELD_BY_OTHER;
        put64(&mut b, off::E_OWNER, 0xffff_8880_dead_0000);
        b
    }

    struct OneSym;
    impl Symbolizer for OneSym {
        fn function_at(&self, addr: u64) -> Option<Arc<str>> {
            (addr == 0xffff_ffff_c000_1000).then(|| Arc::from("vfio_ap_mdev_open_device"))
        }
    }

    #[test]
    fn big_and_little_endian_records_decode_to_the_same_event() {
        let le = decode_record(&entry_record(Endian::Little), Endian::Little, &OneSym).unwrap();
        let be = decode_record(&entry_record(Endian::Big), Endian::Big, &OneSym).unwrap();
        assert_eq!(le, be);
        assert_eq!(le.event.ts_ns, 123_456_789);
        assert_eq!(le.event.task.pid, 4242);
        assert_eq!(&*le.event.task.comm, "qemu");
        match &le.event.body {
            Body::Enter {
                func,
                args,
                field,
                lock,
                ..
            } => {
                assert_eq!(&**func, "vfio_ap_mdev_open_device");
                assert_eq!(args[0], 0xffff_8880_1234_5600);
                assert_eq!(*field, Some(0xffff_8880_0000_0040));
                assert_eq!(
                    *lock,
                    LockObs::HeldByOther {
                        owner: 0xffff_8880_dead_0000
                    }
                );
            }
            other => panic!("not an entry: {other:?}"),
        }
    }

    #[test]
    fn wrong_byte_order_is_not_silently_equal() {
        let be = entry_record(Endian::Big);
        // Read as little-endian, the kind is 0x0100: an unknown kind, an error value.
        assert_eq!(
            decode_record(&be, Endian::Little, &NoSymbols),
            Err(DecodeError::UnknownKind(0x0100))
        );
    }

    #[test]
    fn short_and_unknown_records_are_errors() {
        let rec = entry_record(Endian::Little);
        for len in 0..rec.len() {
            assert!(decode_record(&rec[..len], Endian::Little, &NoSymbols).is_err());
        }
        let mut bad = rec.clone();
        bad[off::KIND] = 99;
        assert_eq!(
            decode_record(&bad, Endian::Little, &NoSymbols),
            Err(DecodeError::UnknownKind(99))
        );
        let mut bad_lock = rec;
        bad_lock[off::E_LOCK] = 7;
        assert_eq!(
            decode_record(&bad_lock, Endian::Little, &NoSymbols),
            Err(DecodeError::UnknownLockState(7))
        );
    }
}
