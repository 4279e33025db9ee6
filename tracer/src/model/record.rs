//! The probes' ABI records (`tracer-common`) to and from the event model, in an explicit
//! byte order. The decoder serves the live agent; the encoder makes the records a kernel
//! would have written, for tests, benchmarks and fuzz seeds.

use std::sync::Arc;

use tracer_common as abi;

use super::{hex_u64, Allocator, Args, Body, Event, LockObs, LockSeen, Symbolizer, Task};
use crate::bytes_reader::{Endian, OutOfBounds, Reader};

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
    #[error("record read out of bounds: {0}")]
    OutOfBounds(#[from] OutOfBounds),
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

impl From<Allocator> for u8 {
    fn from(a: Allocator) -> u8 {
        match a {
            Allocator::Kmalloc => abi::allocator::KMALLOC,
            Allocator::KmemCache => abi::allocator::KMEM_CACHE,
            Allocator::Kvmalloc => abi::allocator::KVMALLOC,
            Allocator::Vmalloc => abi::allocator::VMALLOC,
        }
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
    pub const E_OWNERS: usize = offset_of!(FuncEntry, lock_owners);
    pub const E_IDS: usize = offset_of!(FuncEntry, lock_ids);
    pub const E_STATES: usize = offset_of!(FuncEntry, lock_states);
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

/// The size of a record of `kind`, if the kind is known: the least a record must have (an
/// entry of an agent before the lock reads ends where they start).
fn record_size(kind: u16) -> Option<usize> {
    use core::mem::size_of;
    Some(match kind {
        abi::kind::FUNC_ENTRY => off::E_OWNERS,
        abi::kind::FUNC_EXIT => size_of::<abi::FuncExit>(),
        abi::kind::ALLOC => size_of::<abi::AllocRecord>(),
        abi::kind::FREE => size_of::<abi::FreeRecord>(),
        abi::kind::MDEV_NAME => size_of::<abi::NameRecord>(),
        _ => return None,
    })
}

/// A decoded record before it is given a sequence number: the stack is still an id.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Decoded {
    pub event: Event,
    /// Kernel stack id to symbolize, if the record carried one.
    pub stack_id: Option<i32>,
}

/// A NUL-padded C string; the whole buffer when it has no NUL.
fn c_string(raw: &[u8]) -> Arc<str> {
    let len = raw.iter().position(|&b| b == 0).unwrap_or(raw.len());
    Arc::from(String::from_utf8_lossy(&raw[..len]).as_ref())
}

/// A task's name, shared with the previous records of the same name: a few tasks make most
/// records, and a fresh string per record was an allocation (and a free) per event. Names
/// are remembered by their raw field (two word compares; bytes after the NUL differ only
/// when a task renamed itself shorter, which costs a miss, not a wrong name). `f` is given
/// the shared string.
fn with_comm<R>(raw: &[u8], f: impl FnOnce(&Arc<str>) -> R) -> R {
    const SLOTS: usize = 8;
    type Slot = Option<([u8; abi::COMM_LEN], Arc<str>)>;
    thread_local! {
        static RECENT: std::cell::RefCell<[Slot; SLOTS]> =
            const { std::cell::RefCell::new([const { None }; SLOTS]) };
    }
    let Ok(key) = <[u8; abi::COMM_LEN]>::try_from(raw) else {
        return f(&c_string(raw));
    };
    RECENT.with(|recent| {
        let mut recent = recent.borrow_mut();
        if let Some((_, hit)) = recent.iter().flatten().find(|(k, _)| *k == key) {
            return f(hit);
        }
        let made = c_string(raw);
        let r = f(&made);
        // Most recent first; the oldest falls off.
        recent.rotate_right(1);
        recent[0] = Some((key, made));
        r
    })
}

/// What a record says, its task's name still raw.
struct Parsed<'a> {
    ts_ns: u64,
    cpu: u32,
    pid: u32,
    tid: u32,
    comm: &'a [u8],
    body: Body,
    stack_id: Option<i32>,
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
    let p = parse(buf, endian, symbols)?;
    Ok(Decoded {
        event: Event {
            seq: 0,
            ts_ns: p.ts_ns,
            cpu: p.cpu,
            task: Task {
                pid: p.pid,
                tid: p.tid,
                comm: with_comm(p.comm, Arc::clone),
            },
            body: p.body,
        },
        stack_id: p.stack_id,
    })
}

/// [`decode_record`] into `ev`, an event that is done with (a box the auditor gave back):
/// nothing is built beside it and copied in, and its task's name is kept when the record
/// names the same task (no reference count touched). Gives the stack id. On an error `ev`
/// is as it was.
pub fn decode_record_into(
    buf: &[u8],
    endian: Endian,
    symbols: &dyn Symbolizer,
    ev: &mut Event,
) -> Result<Option<i32>, DecodeError> {
    let p = parse(buf, endian, symbols)?;
    ev.seq = 0;
    ev.ts_ns = p.ts_ns;
    ev.cpu = p.cpu;
    ev.task.pid = p.pid;
    ev.task.tid = p.tid;
    with_comm(p.comm, |c| {
        if !Arc::ptr_eq(&ev.task.comm, c) {
            ev.task.comm = c.clone();
        }
    });
    ev.body = p.body;
    Ok(p.stack_id)
}

fn parse<'a>(
    buf: &'a [u8],
    endian: Endian,
    symbols: &dyn Symbolizer,
) -> Result<Parsed<'a>, DecodeError> {
    let hdr = core::mem::size_of::<abi::RecordHeader>();
    if buf.len() < hdr {
        return Err(DecodeError::Short {
            kind: 0,
            len: buf.len(),
            need: hdr,
        });
    }
    let r = Reader::new(buf, endian);
    let kind: u16 = r.read_at(off::KIND)?;
    let need = record_size(kind).ok_or(DecodeError::UnknownKind(kind))?;
    if buf.len() < need {
        return Err(DecodeError::Short {
            kind,
            len: buf.len(),
            need,
        });
    }
    let u64_at = |o: usize| r.read_at::<u64>(o);
    let flags: u16 = r.read_at(off::FLAGS)?;
    let name = |addr: u64| {
        symbols
            .function_at(addr)
            .unwrap_or_else(|| Arc::from(format!("{addr:#x}")))
    };
    let has = |bit: u16| flags & bit != 0;
    let field_at = |o: usize| has(abi::flags::FIELD_VALID).then(|| u64_at(o)).transpose();
    let stack_at = |o: usize| {
        has(abi::flags::STACK_VALID)
            .then(|| r.read_at::<i32>(o))
            .transpose()
    };
    let mut stack_id = None;
    let body = match kind {
        abi::kind::FUNC_ENTRY => {
            let mut lock = LockObs::try_from(r.read_at::<u8>(off::E_LOCK)?)?;
            if let LockObs::HeldByOther { owner } = &mut lock {
                *owner = u64_at(off::E_OWNER)?;
            }
            stack_id = stack_at(off::E_STACK)?;
            let mut locks = Vec::new();
            if buf.len() >= core::mem::size_of::<abi::FuncEntry>() {
                for i in 0..abi::MAX_LOCK_READS {
                    let mut obs = LockObs::try_from(r.read_at::<u8>(off::E_STATES + i)?)?;
                    match &mut obs {
                        LockObs::NotChecked => continue,
                        LockObs::HeldByOther { owner } => *owner = u64_at(off::E_OWNERS + 8 * i)?,
                        _ => {}
                    }
                    locks.push(LockSeen {
                        lock: symbols.lock_name(r.read_at::<u8>(off::E_IDS + i)?),
                        obs,
                    });
                }
            }
            Body::Enter {
                func: name(u64_at(off::E_IP)?),
                args: {
                    // Filled in place: collecting through `Result` cost a growth check and
                    // an adapter per argument.
                    let mut args = [0; abi::MAX_ARGS];
                    for (i, a) in args.iter_mut().enumerate() {
                        *a = u64_at(off::E_ARGS + 8 * i)?;
                    }
                    Args::captured(args)
                },
                field: field_at(off::E_FIELD)?,
                lock,
                locks,
                untrusted: has(abi::flags::ARGS_UNTRUSTED),
                stack: Vec::new(),
            }
        }
        abi::kind::FUNC_EXIT => Body::Exit {
            func: name(u64_at(off::X_IP)?),
            ret: u64_at(off::X_RET)?,
            arg0: u64_at(off::X_ARG0)?,
            duration_ns: has(abi::flags::DURATION_VALID)
                .then(|| u64_at(off::X_DUR))
                .transpose()?,
            field: field_at(off::X_FIELD)?,
        },
        abi::kind::ALLOC => {
            stack_id = stack_at(off::A_STACK)?;
            Body::Alloc {
                ptr: u64_at(off::A_PTR)?,
                bytes: u64_at(off::A_BYTES)?,
                site: symbols.function_at(u64_at(off::A_SITE)?),
                allocator: Allocator::try_from(r.read_at::<u8>(off::A_ALLOC)?)?,
                stack: Vec::new(),
            }
        }
        abi::kind::FREE => Body::Free {
            ptr: u64_at(off::F_PTR)?,
            site: symbols.function_at(u64_at(off::F_SITE)?),
            allocator: Allocator::try_from(r.read_at::<u8>(off::F_ALLOC)?)?,
        },
        // record_size() knows no other kind.
        _ => Body::MdevName {
            mdev: u64_at(off::N_OBJ)?,
            uuid: c_string(r.bytes_at(off::N_NAME, abi::NAME_LEN)?),
        },
    };
    Ok(Parsed {
        ts_ns: u64_at(off::TS)?,
        cpu: r.read_at(off::CPU)?,
        pid: r.read_at(off::TGID)?,
        tid: r.read_at(off::PID)?,
        comm: r.bytes_at(off::COMM, abi::COMM_LEN)?,
        body,
        stack_id,
    })
}

/// Names back to addresses, for the encoder: the inverse of a [`Symbolizer`].
pub trait Addresses {
    fn address_of(&self, name: &str) -> Option<u64>;
    /// The profile's number of a lock, the inverse of [`Symbolizer::lock_name`].
    fn lock_id(&self, name: &str) -> Option<u8> {
        name.strip_prefix("lock#")?.parse().ok()
    }
}

impl<F: Fn(&str) -> Option<u64>> Addresses for F {
    fn address_of(&self, name: &str) -> Option<u64> {
        self(name)
    }
}

/// An event that has no ABI record.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum EncodeError {
    #[error("{0} events are made by userspace: the probes have no record for them")]
    NoRecord(&'static str),
    #[error("no address for function {0}")]
    UnknownFunction(String),
    #[error("no number for lock {0}")]
    UnknownLock(String),
    #[error("{0} lock reads: a record carries at most {max}", max = abi::MAX_LOCK_READS)]
    TooManyLocks(usize),
}

/// A lock observation as the probe writes it: (state, owner word).
fn lock_code(obs: &LockObs) -> (u8, u64) {
    match obs {
        LockObs::NotChecked => (abi::lock_state::NOT_CHECKED, 0),
        LockObs::Free => (abi::lock_state::FREE, 0),
        LockObs::HeldByCurrent => (abi::lock_state::HELD_BY_CURRENT, 0),
        LockObs::HeldByOther { owner } => (abi::lock_state::HELD_BY_OTHER, *owner),
    }
}

/// Writes integers at fixed offsets of a record in one byte order.
struct Patch {
    buf: Vec<u8>,
    endian: Endian,
}

impl Patch {
    fn put(&mut self, off: usize, le: &[u8], be: &[u8]) {
        let b = match self.endian {
            Endian::Little => le,
            Endian::Big => be,
        };
        self.buf[off..off + b.len()].copy_from_slice(b);
    }
    fn u16(&mut self, off: usize, v: u16) {
        self.put(off, &v.to_le_bytes(), &v.to_be_bytes());
    }
    fn u32(&mut self, off: usize, v: u32) {
        self.put(off, &v.to_le_bytes(), &v.to_be_bytes());
    }
    fn i32(&mut self, off: usize, v: i32) {
        self.put(off, &v.to_le_bytes(), &v.to_be_bytes());
    }
    fn u64(&mut self, off: usize, v: u64) {
        self.put(off, &v.to_le_bytes(), &v.to_be_bytes());
    }
    /// A NUL-padded string, cut at a character boundary to fit; one that fills the buffer
    /// has no NUL, as the decoder accepts.
    fn text(&mut self, off: usize, len: usize, s: &str) {
        let mut n = s.len().min(len);
        while !s.is_char_boundary(n) {
            n -= 1;
        }
        self.buf[off..off + n].copy_from_slice(&s.as_bytes()[..n]);
    }
}

/// The ABI record the probes would have written for `ev`, in `endian` byte order, with
/// `stack_id` as its kernel stack (the event's own stack names are not part of a record).
///
/// Function names are turned back into addresses by `addresses`, or read as the hex the
/// decoder gives an address no symbol covers. An allocation or free site that `addresses`
/// does not know is written as 0.
pub fn encode_record(
    ev: &Event,
    stack_id: Option<i32>,
    endian: Endian,
    addresses: &dyn Addresses,
) -> Result<Vec<u8>, EncodeError> {
    let func_addr = |name: &str| {
        addresses
            .address_of(name)
            .or_else(|| hex_u64::parse(name).ok())
            .ok_or_else(|| EncodeError::UnknownFunction(name.to_string()))
    };
    let site_addr = |site: &Option<Arc<str>>| {
        site.as_deref()
            .and_then(|s| addresses.address_of(s))
            .unwrap_or(0)
    };
    use core::mem::size_of;
    let (kind, size) = match &ev.body {
        Body::Enter { .. } => (abi::kind::FUNC_ENTRY, size_of::<abi::FuncEntry>()),
        Body::Exit { .. } => (abi::kind::FUNC_EXIT, size_of::<abi::FuncExit>()),
        Body::Alloc { .. } => (abi::kind::ALLOC, size_of::<abi::AllocRecord>()),
        Body::Free { .. } => (abi::kind::FREE, size_of::<abi::FreeRecord>()),
        Body::MdevName { .. } => (abi::kind::MDEV_NAME, size_of::<abi::NameRecord>()),
        Body::Lost { .. } => return Err(EncodeError::NoRecord("loss")),
        Body::GuestName { .. } => return Err(EncodeError::NoRecord("guest name")),
    };
    let mut p = Patch {
        buf: vec![0u8; size],
        endian,
    };
    let mut flags = 0u16;
    let mut flag = |bit: u16, on: bool| {
        if on {
            flags |= bit
        }
    };
    match &ev.body {
        Body::Enter {
            func,
            args,
            field,
            lock,
            locks,
            untrusted,
            ..
        } => {
            if locks.len() > abi::MAX_LOCK_READS {
                return Err(EncodeError::TooManyLocks(locks.len()));
            }
            for (i, l) in locks.iter().enumerate() {
                let id = addresses
                    .lock_id(&l.lock)
                    .ok_or_else(|| EncodeError::UnknownLock(l.lock.to_string()))?;
                let (state, owner) = lock_code(&l.obs);
                p.buf[off::E_IDS + i] = id;
                p.buf[off::E_STATES + i] = state;
                p.u64(off::E_OWNERS + 8 * i, owner);
            }
            flag(abi::flags::FIELD_VALID, field.is_some());
            flag(abi::flags::ARGS_UNTRUSTED, *untrusted);
            flag(abi::flags::STACK_VALID, stack_id.is_some());
            p.u64(off::E_IP, func_addr(func)?);
            for (i, a) in args.iter().take(abi::MAX_ARGS).enumerate() {
                p.u64(off::E_ARGS + 8 * i, *a);
            }
            p.u64(off::E_FIELD, field.unwrap_or(0));
            let (state, owner) = lock_code(lock);
            p.buf[off::E_LOCK] = state;
            p.u64(off::E_OWNER, owner);
            p.i32(off::E_STACK, stack_id.unwrap_or(0));
        }
        Body::Exit {
            func,
            ret,
            arg0,
            duration_ns,
            field,
        } => {
            flag(abi::flags::FIELD_VALID, field.is_some());
            flag(abi::flags::DURATION_VALID, duration_ns.is_some());
            p.u64(off::X_IP, func_addr(func)?);
            p.u64(off::X_RET, *ret);
            p.u64(off::X_ARG0, *arg0);
            p.u64(off::X_DUR, duration_ns.unwrap_or(0));
            p.u64(off::X_FIELD, field.unwrap_or(0));
        }
        Body::Alloc {
            ptr,
            bytes,
            site,
            allocator,
            ..
        } => {
            flag(abi::flags::STACK_VALID, stack_id.is_some());
            p.u64(off::A_PTR, *ptr);
            p.u64(off::A_BYTES, *bytes);
            p.u64(off::A_SITE, site_addr(site));
            p.buf[off::A_ALLOC] = u8::from(*allocator);
            p.i32(off::A_STACK, stack_id.unwrap_or(0));
        }
        Body::Free {
            ptr,
            site,
            allocator,
        } => {
            p.u64(off::F_PTR, *ptr);
            p.u64(off::F_SITE, site_addr(site));
            p.buf[off::F_ALLOC] = u8::from(*allocator);
        }
        Body::MdevName { mdev, uuid } => {
            p.u64(off::N_OBJ, *mdev);
            p.text(off::N_NAME, abi::NAME_LEN, uuid);
        }
        // Refused above.
        Body::Lost { .. } | Body::GuestName { .. } => {}
    }
    p.u16(off::KIND, kind);
    p.u16(off::FLAGS, flags);
    p.u32(off::CPU, ev.cpu);
    p.u64(off::TS, ev.ts_ns);
    p.u32(off::TGID, ev.task.pid);
    p.u32(off::PID, ev.task.tid);
    p.text(off::COMM, abi::COMM_LEN, &ev.task.comm);
    Ok(p.buf)
}

#[cfg(test)]
mod tests;
