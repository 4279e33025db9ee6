//! The probes' ABI records (`tracer-common`) to and from the event model, in an explicit
//! byte order. The decoder serves the live agent; the encoder makes the records a kernel
//! would have written, for tests, benchmarks and fuzz seeds.

use std::sync::Arc;

use tracer_common as abi;

use super::{hex_u64, Allocator, Body, Event, LockObs, LockSeen, Symbolizer, Task};
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
/// when a task renamed itself shorter, which costs a miss, not a wrong name).
fn comm(raw: &[u8]) -> Arc<str> {
    const SLOTS: usize = 8;
    type Slot = Option<([u8; abi::COMM_LEN], Arc<str>)>;
    thread_local! {
        static RECENT: std::cell::RefCell<[Slot; SLOTS]> =
            const { std::cell::RefCell::new([const { None }; SLOTS]) };
    }
    let Ok(key) = <[u8; abi::COMM_LEN]>::try_from(raw) else {
        return c_string(raw);
    };
    RECENT.with(|recent| {
        let mut recent = recent.borrow_mut();
        if let Some((_, hit)) = recent.iter().flatten().find(|(k, _)| *k == key) {
            return hit.clone();
        }
        let made = c_string(raw);
        // Most recent first; the oldest falls off.
        recent.rotate_right(1);
        recent[0] = Some((key, made.clone()));
        made
    })
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
    let task = Task {
        pid: r.read_at(off::TGID)?,
        tid: r.read_at(off::PID)?,
        comm: comm(r.bytes_at(off::COMM, abi::COMM_LEN)?),
    };
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
                    // Sized once, filled in place: collecting through `Result` cost a
                    // growth check and an adapter per argument.
                    let mut args = Vec::with_capacity(abi::MAX_ARGS);
                    for i in 0..abi::MAX_ARGS {
                        args.push(u64_at(off::E_ARGS + 8 * i)?);
                    }
                    args
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
    Ok(Decoded {
        event: Event {
            seq: 0,
            ts_ns: u64_at(off::TS)?,
            cpu: r.read_at(off::CPU)?,
            task,
            body,
        },
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
mod tests {
    use super::*;
    use crate::model::NoSymbols;

    const OPEN: u64 = 0xffff_ffff_c000_1000;

    struct OneSym;
    impl Symbolizer for OneSym {
        fn function_at(&self, addr: u64) -> Option<Arc<str>> {
            (addr == OPEN).then(|| Arc::from("vfio_ap_mdev_open_device"))
        }
    }
    fn addr_of(name: &str) -> Option<u64> {
        (name == "vfio_ap_mdev_open_device").then_some(OPEN)
    }

    fn event(body: Body) -> Event {
        Event {
            seq: 0,
            ts_ns: 123_456_789,
            cpu: 1,
            task: Task {
                pid: 4242,
                tid: 4243,
                comm: Arc::from("qemu"),
            },
            body,
        }
    }

    fn entry() -> Event {
        event(Body::Enter {
            func: Arc::from("vfio_ap_mdev_open_device"),
            args: vec![0xffff_8880_1234_5600, 1, 2, 3],
            field: Some(0xffff_8880_0000_0040),
            lock: LockObs::HeldByOther {
                owner: 0xffff_8880_dead_0000,
            },
            locks: vec![
                LockSeen {
                    lock: Arc::from("lock#0"),
                    obs: LockObs::Free,
                },
                LockSeen {
                    lock: Arc::from("lock#4"),
                    obs: LockObs::HeldByCurrent,
                },
                LockSeen {
                    lock: Arc::from("lock#1"),
                    obs: LockObs::HeldByOther {
                        owner: 0xffff_8880_beef_0000,
                    },
                },
            ],
            untrusted: false,
            stack: Vec::new(),
        })
    }

    /// One event of every kind a record carries.
    fn every_kind() -> Vec<(Event, Option<i32>)> {
        vec![
            (entry(), Some(7)),
            (
                event(Body::Exit {
                    func: Arc::from("vfio_ap_mdev_open_device"),
                    ret: (-22i64) as u64,
                    arg0: 0xffff_8880_1234_5600,
                    duration_ns: Some(12_345),
                    field: None,
                }),
                None,
            ),
            (
                event(Body::Alloc {
                    ptr: 0xffff_8880_0000_0040,
                    bytes: 96,
                    site: Some(Arc::from("vfio_ap_mdev_open_device")),
                    allocator: Allocator::Kvmalloc,
                    stack: Vec::new(),
                }),
                Some(-3),
            ),
            (
                event(Body::Free {
                    ptr: 0xffff_8880_0000_0040,
                    site: None,
                    allocator: Allocator::Kmalloc,
                }),
                None,
            ),
            (
                event(Body::MdevName {
                    mdev: 0xffff_8880_1234_5600,
                    uuid: Arc::from("0000000b-0000-4000-8000-00000000000b"),
                }),
                None,
            ),
        ]
    }

    #[test]
    fn every_kind_round_trips_in_both_byte_orders() {
        for endian in [Endian::Little, Endian::Big] {
            for (ev, stack_id) in every_kind() {
                let raw = encode_record(&ev, stack_id, endian, &addr_of).unwrap();
                let d = decode_record(&raw, endian, &OneSym).unwrap();
                assert_eq!(
                    d,
                    Decoded {
                        event: ev,
                        stack_id
                    }
                );
            }
        }
    }

    /// Records of one task share its name's string; another task's name is its own.
    #[test]
    fn records_of_one_task_share_its_name() {
        let decode = |comm: &str| {
            let mut ev = entry();
            ev.task.comm = Arc::from(comm);
            let raw = encode_record(&ev, None, Endian::Big, &addr_of).unwrap();
            decode_record(&raw, Endian::Big, &OneSym)
                .unwrap()
                .event
                .task
                .comm
        };
        let (a, b, other) = (
            decode("qemu-kvm"),
            decode("qemu-kvm"),
            decode("kworker/0:1"),
        );
        assert_eq!(&*a, "qemu-kvm");
        assert!(Arc::ptr_eq(&a, &b));
        assert_eq!(&*other, "kworker/0:1");
        // Nine other names push it out of the remembered few: still decoded right.
        for i in 0..9 {
            decode(&format!("task{i}"));
        }
        assert_eq!(&*decode("qemu-kvm"), "qemu-kvm");
        // A task renamed shorter keeps its old name's bytes after the NUL: the name is what
        // comes before it, whatever follows.
        let mut raw = encode_record(&entry(), None, Endian::Big, &addr_of).unwrap();
        raw[off::COMM..off::COMM + abi::COMM_LEN].copy_from_slice(b"vm\0u-kvm\0\0\0\0\0\0\0\0");
        let renamed = decode_record(&raw, Endian::Big, &OneSym).unwrap().event;
        assert_eq!(&*renamed.task.comm, "vm");
        assert_eq!(&*decode("vm"), "vm");
    }

    #[test]
    fn the_byte_order_is_the_one_asked_for() {
        let le = encode_record(&entry(), None, Endian::Little, &addr_of).unwrap();
        let be = encode_record(&entry(), None, Endian::Big, &addr_of).unwrap();
        assert_eq!(le[off::KIND..off::KIND + 2], [1, 0]);
        assert_eq!(be[off::KIND..off::KIND + 2], [0, 1]);
        assert_eq!(be[off::TS..off::TS + 8], 123_456_789u64.to_be_bytes());
        assert_eq!(be[off::COMM..off::COMM + 5], *b"qemu\0");
        assert_eq!(
            decode_record(&le, Endian::Little, &OneSym),
            decode_record(&be, Endian::Big, &OneSym)
        );
    }

    #[test]
    fn unknown_functions_are_hex_both_ways() {
        let mut ev = entry();
        let raw = encode_record(&ev, None, Endian::Big, &addr_of).unwrap();
        let d = decode_record(&raw, Endian::Big, &NoSymbols).unwrap();
        assert!(
            matches!(&d.event.body, Body::Enter { func, .. } if &**func == "0xffffffffc0001000")
        );
        assert_eq!(
            encode_record(&d.event, None, Endian::Big, &|_: &str| None),
            Ok(raw)
        );
        if let Body::Enter { func, .. } = &mut ev.body {
            *func = Arc::from("nowhere");
        }
        assert_eq!(
            encode_record(&ev, None, Endian::Big, &addr_of),
            Err(EncodeError::UnknownFunction("nowhere".into()))
        );
        let lost = event(Body::Lost {
            count: 1,
            source: crate::model::LossSource::RingBuffer,
        });
        assert!(encode_record(&lost, None, Endian::Big, &addr_of).is_err());
    }

    #[test]
    fn long_names_are_cut_at_a_character_boundary() {
        let mut ev = entry();
        ev.task.comm = Arc::from("worker-thread-ééé");
        let raw = encode_record(&ev, None, Endian::Little, &addr_of).unwrap();
        let d = decode_record(&raw, Endian::Little, &OneSym).unwrap();
        assert_eq!(&*d.event.task.comm, "worker-thread-é");
    }

    proptest::proptest! {
        /// Any bytes with a known kind: an error or an event, never a panic; and what
        /// decodes encodes back to a record that decodes the same.
        #[test]
        fn any_record_decodes_or_fails_cleanly(
            mut data in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..120),
            kind in 1u16..=5,
            big: bool,
        ) {
            let endian = if big { Endian::Big } else { Endian::Little };
            if data.len() >= 2 {
                let k = if big { kind.to_be_bytes() } else { kind.to_le_bytes() };
                data[..2].copy_from_slice(&k);
            }
            if let Ok(d) = decode_record(&data, endian, &OneSym) {
                let lossy = |s: &str| s.contains(char::REPLACEMENT_CHARACTER);
                let text_ok = !lossy(&d.event.task.comm)
                    && !matches!(&d.event.body, Body::MdevName { uuid, .. } if lossy(uuid));
                let raw = encode_record(&d.event, d.stack_id, endian, &addr_of).unwrap();
                let back = decode_record(&raw, endian, &OneSym).unwrap();
                proptest::prop_assert!(!text_ok || back == d);
            }
        }
    }

    #[test]
    fn wrong_byte_order_is_not_silently_equal() {
        let be = encode_record(&entry(), None, Endian::Big, &addr_of).unwrap();
        // Read as little-endian, the kind is 0x0100: an unknown kind, an error value.
        assert_eq!(
            decode_record(&be, Endian::Little, &NoSymbols),
            Err(DecodeError::UnknownKind(0x0100))
        );
    }

    #[test]
    fn short_and_unknown_records_are_errors() {
        for (ev, stack_id) in every_kind() {
            let rec = encode_record(&ev, stack_id, Endian::Little, &addr_of).unwrap();
            // An entry of an agent before the lock reads is shorter, and complete.
            let least = match ev.body {
                Body::Enter { .. } => off::E_OWNERS,
                _ => rec.len(),
            };
            for len in 0..least {
                assert!(decode_record(&rec[..len], Endian::Little, &NoSymbols).is_err());
            }
        }
        let rec = encode_record(&entry(), None, Endian::Little, &addr_of).unwrap();
        let mut bad = rec.clone();
        bad[off::KIND] = 99;
        assert_eq!(
            decode_record(&bad, Endian::Little, &NoSymbols),
            Err(DecodeError::UnknownKind(99))
        );
        let mut bad_lock = rec.clone();
        bad_lock[off::E_LOCK] = 7;
        assert_eq!(
            decode_record(&bad_lock, Endian::Little, &NoSymbols),
            Err(DecodeError::UnknownLockState(7))
        );
        let mut bad_read = rec;
        bad_read[off::E_STATES + 1] = 9;
        assert_eq!(
            decode_record(&bad_read, Endian::Little, &NoSymbols),
            Err(DecodeError::UnknownLockState(9))
        );
    }

    /// An entry written before the lock reads (104 bytes) reads as reading none; the reads
    /// of a current one keep their order, drop the failed ones, and name each lock by the
    /// profile's number through the symbolizer.
    #[test]
    fn lock_reads_decode_and_older_entries_have_none() {
        let rec = encode_record(&entry(), None, Endian::Big, &addr_of).unwrap();
        assert_eq!(rec.len(), 144);
        let old = decode_record(&rec[..off::E_OWNERS], Endian::Big, &OneSym).unwrap();
        match old.event.body {
            Body::Enter { locks, lock, .. } => {
                assert!(locks.is_empty());
                assert!(
                    matches!(lock, LockObs::HeldByOther { .. }),
                    "the probed lock stays"
                );
            }
            other => panic!("{other:?}"),
        }
        struct Named;
        impl Symbolizer for Named {
            fn function_at(&self, _: u64) -> Option<Arc<str>> {
                None
            }
            fn lock_name(&self, id: u8) -> Arc<str> {
                Arc::from(
                    [
                        "ap_attr_mutex",
                        "guests_lock",
                        "kvm_lock",
                        "mdevs_lock",
                        "dev_set_lock",
                    ][id as usize],
                )
            }
        }
        let mut with_failed = rec.clone();
        // A fourth read that failed: NOT_CHECKED, not listed.
        with_failed[off::E_IDS + 3] = 2;
        with_failed[off::E_STATES + 3] = abi::lock_state::NOT_CHECKED;
        let d = decode_record(&with_failed, Endian::Big, &Named).unwrap();
        let Body::Enter { locks, .. } = d.event.body else {
            panic!("not an entry");
        };
        let seen: Vec<(&str, LockObs)> = locks.iter().map(|l| (&*l.lock, l.obs)).collect();
        assert_eq!(
            seen,
            [
                ("ap_attr_mutex", LockObs::Free),
                ("dev_set_lock", LockObs::HeldByCurrent),
                (
                    "guests_lock",
                    LockObs::HeldByOther {
                        owner: 0xffff_8880_beef_0000
                    }
                ),
            ]
        );
    }
}
