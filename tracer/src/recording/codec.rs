//! Compact encoding of events inside a chunk: varints, deltas against the previous event,
//! and a string table local to the chunk (so every chunk decodes on its own).

use std::collections::HashMap;
use std::sync::Arc;

use bytes::{Buf, BufMut, BytesMut};

use crate::model::{Allocator, Args, Body, Event, LockObs, LockSeen, LossSource, Task};

/// Fewest bytes an encoded event takes: tag, seq, ts, cpu, pid, tid, comm, one body byte.
pub const MIN_EVENT_BYTES: usize = 8;
/// Longest string a chunk may define (comm, function, uuid, stack frame).
const MAX_STRING: usize = 4096;
/// Most arguments / stack frames one event may carry.
const MAX_ARGS: usize = 16;
const MAX_STACK: usize = 256;
/// Most declared locks one entry may list.
const MAX_LOCKS: usize = 64;
/// Entry flag (format 1.4): the reads of the other declared locks follow.
const E_LOCKS: u8 = 1 << 4;

const T_ENTER: u8 = 1;
const T_EXIT: u8 = 2;
const T_ALLOC: u8 = 3;
const T_FREE: u8 = 4;
const T_LOST: u8 = 5;
const T_MDEV_NAME: u8 = 6;
const T_GUEST_NAME: u8 = 7;

/// A chunk payload that does not decode (its CRC matched, so a bug or a newer writer).
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum CodecError {
    #[error("event truncated")]
    Truncated,
    #[error("unknown event tag {0}")]
    UnknownTag(u8),
    #[error("bad string reference {0}")]
    BadString(u64),
    #[error("field out of range: {0}")]
    Range(&'static str),
}

fn zigzag(v: i64) -> u64 {
    ((v << 1) ^ (v >> 63)) as u64
}

fn unzigzag(v: u64) -> i64 {
    ((v >> 1) as i64) ^ -((v & 1) as i64)
}

fn put_varint(b: &mut BytesMut, mut v: u64) {
    while v >= 0x80 {
        b.put_u8((v as u8) | 0x80);
        v >>= 7;
    }
    b.put_u8(v as u8);
}

fn get_varint(b: &mut &[u8]) -> Result<u64, CodecError> {
    let mut v = 0u64;
    for shift in (0..70).step_by(7) {
        if !b.has_remaining() {
            return Err(CodecError::Truncated);
        }
        let byte = b.get_u8();
        if shift == 63 && byte > 1 {
            return Err(CodecError::Range("varint"));
        }
        v |= u64::from(byte & 0x7f) << shift;
        if byte & 0x80 == 0 {
            return Ok(v);
        }
    }
    Err(CodecError::Range("varint"))
}

fn get_u8(b: &mut &[u8]) -> Result<u8, CodecError> {
    if b.has_remaining() {
        Ok(b.get_u8())
    } else {
        Err(CodecError::Truncated)
    }
}

/// Delta state shared by the encoder and decoder of one chunk.
#[derive(Default)]
struct Deltas {
    seq: u64,
    ts: u64,
    /// Previous values per pointer slot: 0..4 args, 4 field, 5 alloc ptr.
    slots: [u64; 6],
}

/// Encodes events into one chunk's payload.
#[derive(Default)]
pub struct ChunkEncoder {
    strings: HashMap<Arc<str>, u64>,
    d: Deltas,
    pub events: u32,
}

impl ChunkEncoder {
    pub fn new() -> Self {
        Self::default()
    }

    fn string(&mut self, b: &mut BytesMut, s: &Arc<str>) {
        let s_trunc: &str = if s.len() > MAX_STRING {
            let mut end = MAX_STRING;
            while !s.is_char_boundary(end) {
                end -= 1;
            }
            &s[..end]
        } else {
            s
        };
        if let Some(&i) = self.strings.get(s_trunc) {
            put_varint(b, i);
            return;
        }
        let i = self.strings.len() as u64;
        put_varint(b, i);
        put_varint(b, s_trunc.len() as u64);
        b.put_slice(s_trunc.as_bytes());
        self.strings.insert(Arc::from(s_trunc), i);
    }

    fn opt_string(&mut self, b: &mut BytesMut, s: &Option<Arc<str>>) {
        match s {
            None => b.put_u8(0),
            Some(s) => {
                b.put_u8(1);
                self.string(b, s)
            }
        }
    }

    fn slot(&mut self, b: &mut BytesMut, slot: usize, v: u64) {
        put_varint(b, zigzag(v.wrapping_sub(self.d.slots[slot]) as i64));
        self.d.slots[slot] = v;
    }

    fn stack(&mut self, b: &mut BytesMut, stack: &[Arc<str>]) {
        let n = stack.len().min(MAX_STACK);
        put_varint(b, n as u64);
        for f in &stack[..n] {
            self.string(b, f);
        }
    }

    /// Appends one event to `b`.
    pub fn encode(&mut self, b: &mut BytesMut, ev: &Event) {
        let tag = match &ev.body {
            Body::Enter { .. } => T_ENTER,
            Body::Exit { .. } => T_EXIT,
            Body::Alloc { .. } => T_ALLOC,
            Body::Free { .. } => T_FREE,
            Body::Lost { .. } => T_LOST,
            Body::MdevName { .. } => T_MDEV_NAME,
            Body::GuestName { .. } => T_GUEST_NAME,
        };
        b.put_u8(tag);
        put_varint(b, zigzag(ev.seq.wrapping_sub(self.d.seq) as i64));
        self.d.seq = ev.seq;
        put_varint(b, zigzag(ev.ts_ns.wrapping_sub(self.d.ts) as i64));
        self.d.ts = ev.ts_ns;
        put_varint(b, u64::from(ev.cpu));
        put_varint(b, u64::from(ev.task.pid));
        put_varint(b, zigzag(i64::from(ev.task.tid) - i64::from(ev.task.pid)));
        let comm = ev.task.comm.clone();
        self.string(b, &comm);
        match &ev.body {
            Body::Enter {
                func,
                args,
                field,
                lock,
                locks,
                untrusted,
                stack,
            } => {
                self.string(b, func);
                let n = args.len().min(MAX_ARGS);
                put_varint(b, n as u64);
                for (i, &a) in args[..n].iter().enumerate() {
                    if i < 4 {
                        self.slot(b, i, a);
                    } else {
                        put_varint(b, a);
                    }
                }
                let n_locks = locks.len().min(MAX_LOCKS);
                let bits = obs_code(lock)
                    | (u8::from(*untrusted) << 2)
                    | (u8::from(field.is_some()) << 3)
                    | if n_locks > 0 { E_LOCKS } else { 0 };
                b.put_u8(bits);
                if let LockObs::HeldByOther { owner } = lock {
                    put_varint(b, *owner);
                }
                if let Some(f) = field {
                    self.slot(b, 4, *f);
                }
                self.stack(b, stack);
                if n_locks > 0 {
                    put_varint(b, n_locks as u64);
                    for l in &locks[..n_locks] {
                        self.string(b, &l.lock);
                        b.put_u8(obs_code(&l.obs));
                        if let LockObs::HeldByOther { owner } = l.obs {
                            put_varint(b, owner);
                        }
                    }
                }
            }
            Body::Exit {
                func,
                ret,
                arg0,
                duration_ns,
                field,
            } => {
                self.string(b, func);
                put_varint(b, zigzag(*ret as i64));
                self.slot(b, 0, *arg0);
                b.put_u8(u8::from(duration_ns.is_some()) | (u8::from(field.is_some()) << 1));
                if let Some(d) = duration_ns {
                    put_varint(b, *d);
                }
                if let Some(f) = field {
                    self.slot(b, 4, *f);
                }
            }
            Body::Alloc {
                ptr,
                bytes,
                site,
                allocator,
                stack,
            } => {
                self.slot(b, 5, *ptr);
                put_varint(b, *bytes);
                self.opt_string(b, site);
                b.put_u8(allocator_code(*allocator));
                self.stack(b, stack);
            }
            Body::Free {
                ptr,
                site,
                allocator,
            } => {
                self.slot(b, 5, *ptr);
                self.opt_string(b, site);
                b.put_u8(allocator_code(*allocator));
            }
            Body::Lost { count, source } => {
                put_varint(b, *count);
                b.put_u8(match source {
                    LossSource::RingBuffer => 0,
                    LossSource::KretprobeMiss => 1,
                    LossSource::ExitWithoutEntry => 2,
                    LossSource::Recording => 3,
                });
            }
            Body::MdevName { mdev, uuid } => {
                self.slot(b, 0, *mdev);
                self.string(b, uuid);
            }
            Body::GuestName { guest_pid, name } => {
                put_varint(b, u64::from(*guest_pid));
                self.string(b, name);
            }
        }
        self.events += 1;
    }
}

fn obs_code(obs: &LockObs) -> u8 {
    match obs {
        LockObs::NotChecked => 0,
        LockObs::Free => 1,
        LockObs::HeldByCurrent => 2,
        LockObs::HeldByOther { .. } => 3,
    }
}

fn allocator_code(a: Allocator) -> u8 {
    match a {
        Allocator::Kmalloc => 0,
        Allocator::KmemCache => 1,
        Allocator::Kvmalloc => 2,
        Allocator::Vmalloc => 3,
    }
}

/// The observation of code `c` (0..=3); a lock held by another task is followed by its owner.
fn obs_from(c: u8, b: &mut &[u8]) -> Result<LockObs, CodecError> {
    Ok(match c {
        0 => LockObs::NotChecked,
        1 => LockObs::Free,
        2 => LockObs::HeldByCurrent,
        _ => LockObs::HeldByOther {
            owner: get_varint(b)?,
        },
    })
}

fn allocator_from(c: u8) -> Result<Allocator, CodecError> {
    Ok(match c {
        0 => Allocator::Kmalloc,
        1 => Allocator::KmemCache,
        2 => Allocator::Kvmalloc,
        3 => Allocator::Vmalloc,
        _ => return Err(CodecError::Range("allocator")),
    })
}

/// Decodes one chunk's payload.
#[derive(Default)]
pub struct ChunkDecoder {
    strings: Vec<Arc<str>>,
    d: Deltas,
}

impl ChunkDecoder {
    pub fn new() -> Self {
        Self::default()
    }

    fn string(&mut self, b: &mut &[u8]) -> Result<Arc<str>, CodecError> {
        let i = get_varint(b)?;
        if let Some(s) = self.strings.get(i as usize) {
            return Ok(s.clone());
        }
        if i != self.strings.len() as u64 {
            return Err(CodecError::BadString(i));
        }
        let len = get_varint(b)? as usize;
        if len > MAX_STRING || len > b.remaining() {
            return Err(CodecError::Range("string length"));
        }
        let s: Arc<str> = Arc::from(String::from_utf8_lossy(&b[..len]).as_ref());
        b.advance(len);
        self.strings.push(s.clone());
        Ok(s)
    }

    fn opt_string(&mut self, b: &mut &[u8]) -> Result<Option<Arc<str>>, CodecError> {
        match get_u8(b)? {
            0 => Ok(None),
            1 => Ok(Some(self.string(b)?)),
            _ => Err(CodecError::Range("option")),
        }
    }

    fn slot(&mut self, b: &mut &[u8], slot: usize) -> Result<u64, CodecError> {
        let v = self.d.slots[slot].wrapping_add(unzigzag(get_varint(b)?) as u64);
        self.d.slots[slot] = v;
        Ok(v)
    }

    fn stack(&mut self, b: &mut &[u8]) -> Result<Vec<Arc<str>>, CodecError> {
        let n = get_varint(b)? as usize;
        if n > MAX_STACK {
            return Err(CodecError::Range("stack depth"));
        }
        (0..n).map(|_| self.string(b)).collect()
    }

    fn u32_of(v: u64, what: &'static str) -> Result<u32, CodecError> {
        u32::try_from(v).map_err(|_| CodecError::Range(what))
    }

    /// Decodes the next event from `b`.
    pub fn decode(&mut self, b: &mut &[u8]) -> Result<Event, CodecError> {
        let tag = get_u8(b)?;
        let seq = self.d.seq.wrapping_add(unzigzag(get_varint(b)?) as u64);
        self.d.seq = seq;
        let ts_ns = self.d.ts.wrapping_add(unzigzag(get_varint(b)?) as u64);
        self.d.ts = ts_ns;
        let cpu = Self::u32_of(get_varint(b)?, "cpu")?;
        let pid = Self::u32_of(get_varint(b)?, "pid")?;
        // The delta is data: pid + delta must not overflow before the range check.
        let tid = i64::from(pid)
            .checked_add(unzigzag(get_varint(b)?))
            .and_then(|t| u32::try_from(t).ok())
            .ok_or(CodecError::Range("tid"))?;
        let comm = self.string(b)?;
        let body = match tag {
            T_ENTER => {
                let func = self.string(b)?;
                let n = get_varint(b)? as usize;
                if n > MAX_ARGS {
                    return Err(CodecError::Range("argument count"));
                }
                let mut args = Args::new();
                for i in 0..n {
                    args.push(if i < 4 {
                        self.slot(b, i)?
                    } else {
                        get_varint(b)?
                    });
                }
                let bits = get_u8(b)?;
                if bits >> 5 != 0 {
                    return Err(CodecError::Range("entry flags"));
                }
                let lock = obs_from(bits & 3, b)?;
                let field = if bits & 8 != 0 {
                    Some(self.slot(b, 4)?)
                } else {
                    None
                };
                let stack = self.stack(b)?;
                let mut locks = Vec::new();
                if bits & E_LOCKS != 0 {
                    let n = get_varint(b)? as usize;
                    if n > MAX_LOCKS {
                        return Err(CodecError::Range("lock count"));
                    }
                    for _ in 0..n {
                        let name = self.string(b)?;
                        let code = get_u8(b)?;
                        if code > 3 {
                            return Err(CodecError::Range("lock state"));
                        }
                        locks.push(LockSeen {
                            lock: name,
                            obs: obs_from(code, b)?,
                        });
                    }
                }
                Body::Enter {
                    func,
                    args,
                    field,
                    lock,
                    locks,
                    untrusted: bits & 4 != 0,
                    stack,
                }
            }
            T_EXIT => {
                let func = self.string(b)?;
                let ret = unzigzag(get_varint(b)?) as u64;
                let arg0 = self.slot(b, 0)?;
                let bits = get_u8(b)?;
                if bits >> 2 != 0 {
                    return Err(CodecError::Range("exit flags"));
                }
                let duration_ns = if bits & 1 != 0 {
                    Some(get_varint(b)?)
                } else {
                    None
                };
                let field = if bits & 2 != 0 {
                    Some(self.slot(b, 4)?)
                } else {
                    None
                };
                Body::Exit {
                    func,
                    ret,
                    arg0,
                    duration_ns,
                    field,
                }
            }
            T_ALLOC => Body::Alloc {
                ptr: self.slot(b, 5)?,
                bytes: get_varint(b)?,
                site: self.opt_string(b)?,
                allocator: allocator_from(get_u8(b)?)?,
                stack: self.stack(b)?,
            },
            T_FREE => Body::Free {
                ptr: self.slot(b, 5)?,
                site: self.opt_string(b)?,
                allocator: allocator_from(get_u8(b)?)?,
            },
            T_LOST => Body::Lost {
                count: get_varint(b)?,
                source: match get_u8(b)? {
                    0 => LossSource::RingBuffer,
                    1 => LossSource::KretprobeMiss,
                    2 => LossSource::ExitWithoutEntry,
                    3 => LossSource::Recording,
                    _ => return Err(CodecError::Range("loss source")),
                },
            },
            T_MDEV_NAME => Body::MdevName {
                mdev: self.slot(b, 0)?,
                uuid: self.string(b)?,
            },
            T_GUEST_NAME => Body::GuestName {
                guest_pid: Self::u32_of(get_varint(b)?, "guest pid")?,
                name: self.string(b)?,
            },
            other => return Err(CodecError::UnknownTag(other)),
        };
        Ok(Event {
            seq,
            ts_ns,
            cpu,
            task: Task { pid, tid, comm },
            body,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn varints_and_zigzag_round_trip() {
        for v in [0u64, 1, 127, 128, 300, u64::MAX, 0xffff_8880_0000_0000] {
            let mut b = BytesMut::new();
            put_varint(&mut b, v);
            let mut s: &[u8] = &b;
            assert_eq!(get_varint(&mut s).unwrap(), v);
        }
        for v in [0i64, -1, 1, i64::MIN, i64::MAX, -22] {
            assert_eq!(unzigzag(zigzag(v)), v);
        }
    }

    #[test]
    fn an_overlong_varint_is_an_error() {
        let mut s: &[u8] = &[0xff; 11];
        assert!(get_varint(&mut s).is_err());
    }

    mod props {
        use super::*;
        use proptest::collection::vec;
        use proptest::option::of;
        use proptest::prelude::*;

        fn text() -> impl Strategy<Value = Arc<str>> {
            "[a-z_.0-9-]{0,12}".prop_map(Arc::from)
        }

        fn allocator() -> impl Strategy<Value = Allocator> {
            (0u8..4).prop_map(|c| allocator_from(c).unwrap())
        }

        fn lock() -> impl Strategy<Value = LockObs> {
            (0u8..4, any::<u64>()).prop_map(|(c, owner)| match c {
                0 => LockObs::NotChecked,
                1 => LockObs::Free,
                2 => LockObs::HeldByCurrent,
                _ => LockObs::HeldByOther { owner },
            })
        }

        fn body() -> impl Strategy<Value = Body> {
            prop_oneof![
                (
                    text(),
                    vec(any::<u64>(), 0..=MAX_ARGS),
                    any::<Option<u64>>(),
                    lock(),
                    any::<bool>(),
                    vec(text(), 0..3),
                    vec((text(), lock()), 0..5)
                )
                    .prop_map(
                        |(func, args, field, lock, untrusted, stack, locks)| {
                            Body::Enter {
                                func,
                                args: args.into(),
                                field,
                                lock,
                                locks: locks
                                    .into_iter()
                                    .map(|(lock, obs)| LockSeen { lock, obs })
                                    .collect(),
                                untrusted,
                                stack,
                            }
                        }
                    ),
                (
                    text(),
                    any::<u64>(),
                    any::<u64>(),
                    any::<Option<u64>>(),
                    any::<Option<u64>>()
                )
                    .prop_map(|(func, ret, arg0, duration_ns, field)| Body::Exit {
                        func,
                        ret,
                        arg0,
                        duration_ns,
                        field
                    }),
                (
                    any::<u64>(),
                    any::<u64>(),
                    of(text()),
                    allocator(),
                    vec(text(), 0..3)
                )
                    .prop_map(|(ptr, bytes, site, allocator, stack)| Body::Alloc {
                        ptr,
                        bytes,
                        site,
                        allocator,
                        stack
                    }),
                (any::<u64>(), of(text()), allocator()).prop_map(|(ptr, site, allocator)| {
                    Body::Free {
                        ptr,
                        site,
                        allocator,
                    }
                }),
                (any::<u64>(), 0u8..4).prop_map(|(count, s)| Body::Lost {
                    count,
                    source: [
                        LossSource::RingBuffer,
                        LossSource::KretprobeMiss,
                        LossSource::ExitWithoutEntry,
                        LossSource::Recording,
                    ][usize::from(s)],
                }),
                (any::<u64>(), text()).prop_map(|(mdev, uuid)| Body::MdevName { mdev, uuid }),
                (any::<u32>(), text())
                    .prop_map(|(guest_pid, name)| Body::GuestName { guest_pid, name }),
            ]
        }

        fn event() -> impl Strategy<Value = Event> {
            (
                any::<u64>(),
                any::<u64>(),
                any::<u32>(),
                any::<u32>(),
                any::<u32>(),
                text(),
                body(),
            )
                .prop_map(|(seq, ts_ns, cpu, pid, tid, comm, body)| Event {
                    seq,
                    ts_ns,
                    cpu,
                    task: Task { pid, tid, comm },
                    body,
                })
        }

        proptest! {
            #[test]
            fn events_within_the_limits_round_trip(evs in vec(event(), 0..16)) {
                let mut enc = ChunkEncoder::new();
                let mut b = BytesMut::new();
                for e in &evs {
                    enc.encode(&mut b, e);
                }
                let mut dec = ChunkDecoder::new();
                let mut s: &[u8] = &b;
                for e in &evs {
                    prop_assert_eq!(&dec.decode(&mut s).unwrap(), e);
                }
                prop_assert!(s.is_empty());
            }

            #[test]
            fn any_bytes_decode_to_events_or_an_error(data in vec(any::<u8>(), 0..512)) {
                let mut dec = ChunkDecoder::new();
                let mut s: &[u8] = &data;
                while !s.is_empty() && dec.decode(&mut s).is_ok() {}
            }
        }
    }
}
