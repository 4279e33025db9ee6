//! Workloads shared by the benchmarks: the realistic event mix, its ABI records, a
//! symbolizer, recordings in memory, and a streaming generator for runs larger than memory.
//!
//! Each bench binary includes this file with `mod common;` and uses what it needs.
#![allow(dead_code)]

use std::sync::Arc;

use tracer::model::{Body, Endian, Event, LockObs, Symbolizer};
use tracer::recording::{Header, Writer};
use tracer::synth::{Fault, Generator};
use tracer_common as abi;

/// Events in the standard mix (the issue asks for at least one million).
pub const MIX_EVENTS: usize = 1_000_000;
/// Events in the `--quick` / `--test` runs (CI checks the benches run, nothing more).
pub const QUICK_EVENTS: usize = 20_000;
/// One mdev life in this many carries a fault (the mix is mostly clean).
pub const FAULT_EVERY: u64 = 500;
pub const SEED: u64 = 0x005e_eda9;

/// Whether the binary was started by `cargo bench` (criterion's rule: `--bench` present) and
/// not by `cargo test --benches` or with `--quick`.
pub fn full_run() -> bool {
    let args: Vec<String> = std::env::args().collect();
    args.iter().any(|a| a == "--bench") && !args.iter().any(|a| a == "--quick" || a == "--test")
}

/// The number of events for this run: `APTRACE_BENCH_EVENTS`, else the mix or the quick size.
pub fn events_for_run() -> usize {
    if let Some(n) = std::env::var("APTRACE_BENCH_EVENTS")
        .ok()
        .and_then(|s| s.parse().ok())
    {
        return n;
    }
    if full_run() {
        MIX_EVENTS
    } else {
        QUICK_EVENTS
    }
}

pub fn all_faults() -> Vec<Fault> {
    vec![
        Fault::Leak,
        Fault::OverwriteLeak,
        Fault::LockNotHeld,
        Fault::InvalidArc,
        Fault::ErrorPathLeak,
    ]
}

fn generator(seed: u64) -> Generator {
    let mut g = Generator::new(seed);
    g.fault_every = FAULT_EVERY;
    g.faults = all_faults();
    g.migrations = 2;
    g
}

/// The realistic mix: 4096 mdev addresses reused over thousands of lives, 1–3 guest opens per
/// life, two migration round trips per open, one mig_data allocation per open; one life in
/// [`FAULT_EVERY`] carries one of the five faults.
pub fn mix(n: usize) -> Vec<Event> {
    generator(SEED).stream(n)
}

/// The same mix, generated one mdev life at a time, so that a run of ten million events
/// holds only one life in memory. Sequence numbers and timestamps continue across lives.
pub struct Stream {
    life: u64,
    seq: u64,
    ts: u64,
    buf: std::vec::IntoIter<Event>,
    pub left: usize,
}

impl Stream {
    pub fn new(n: usize) -> Stream {
        Stream {
            life: 0,
            seq: 0,
            ts: 0,
            buf: Vec::new().into_iter(),
            left: n,
        }
    }
}

impl Iterator for Stream {
    type Item = Event;
    fn next(&mut self) -> Option<Event> {
        if self.left == 0 {
            return None;
        }
        loop {
            if let Some(mut e) = self.buf.next() {
                e.seq += self.seq;
                e.ts_ns += self.ts;
                self.left -= 1;
                if self.buf.len() == 0 {
                    self.seq = e.seq;
                    self.ts = e.ts_ns - 5_000_000_000;
                }
                return Some(e);
            }
            let i = self.life;
            self.life += 1;
            let mut g = generator(SEED ^ i.wrapping_mul(0x9e37_79b9_7f4a_7c15));
            g.life(i, 1 + (i % 3) as u32);
            self.buf = g.into_events().into_iter();
        }
    }
}

/// Moves each event by up to `by` places, as per-CPU ring buffers interleave them.
pub fn shuffle_locally(evs: &mut [Event], by: u64) {
    let mut rng = tracer::synth::Rng::new(99);
    for i in 0..evs.len() {
        let j = (i + rng.below(by) as usize).min(evs.len() - 1);
        evs.swap(i, j);
    }
}

/// Module text addresses for the profiled functions, as kallsyms would list them.
pub struct Syms {
    /// (start, size, name), sorted by start.
    table: Vec<(u64, u64, Arc<str>)>,
}

pub const TEXT_BASE: u64 = 0xffff_ffff_c0a0_0000;

impl Syms {
    pub fn for_events(evs: &[Event]) -> Syms {
        let mut names: Vec<Arc<str>> = Vec::new();
        for e in evs {
            if let Some(f) = e.body.func() {
                if !names.iter().any(|n| &**n == f) {
                    names.push(Arc::from(f));
                }
            }
        }
        names.sort();
        let table = names
            .into_iter()
            .enumerate()
            .map(|(i, n)| (TEXT_BASE + 0x400 * i as u64, 0x3c0, n))
            .collect();
        Syms { table }
    }

    pub fn addr_of(&self, name: &str) -> u64 {
        self.table
            .iter()
            .find(|(_, _, n)| &**n == name)
            .map(|(a, _, _)| *a)
            .expect("a profiled function")
    }
}

impl Symbolizer for Syms {
    fn function_at(&self, addr: u64) -> Option<Arc<str>> {
        let i = self.table.partition_point(|(a, _, _)| *a <= addr);
        let (a, size, name) = self.table.get(i.checked_sub(1)?)?;
        (addr < a + size).then(|| name.clone())
    }
}

fn put<const N: usize>(b: &mut [u8], off: usize, le: [u8; N], be: [u8; N], endian: Endian) {
    b[off..off + N].copy_from_slice(match endian {
        Endian::Little => &le,
        Endian::Big => &be,
    });
}

/// The ABI record the probes would have written for a call event, in `endian` byte order.
/// Events userspace makes itself (names) have no record: `None`.
pub fn to_raw(ev: &Event, endian: Endian, syms: &Syms) -> Option<Vec<u8>> {
    use abi::{FuncEntry, FuncExit, RecordHeader};
    use core::mem::{offset_of, size_of};
    let p16 = |b: &mut [u8], o: usize, v: u16| put(b, o, v.to_le_bytes(), v.to_be_bytes(), endian);
    let p32 = |b: &mut [u8], o: usize, v: u32| put(b, o, v.to_le_bytes(), v.to_be_bytes(), endian);
    let p64 = |b: &mut [u8], o: usize, v: u64| put(b, o, v.to_le_bytes(), v.to_be_bytes(), endian);
    let header = |b: &mut [u8], kind: u16, flags: u16| {
        p16(b, offset_of!(RecordHeader, kind), kind);
        p16(b, offset_of!(RecordHeader, flags), flags);
        p32(b, offset_of!(RecordHeader, cpu), ev.cpu);
        p64(b, offset_of!(RecordHeader, ts_ns), ev.ts_ns);
        p32(b, offset_of!(RecordHeader, tgid), ev.task.pid);
        p32(b, offset_of!(RecordHeader, pid), ev.task.tid);
        let c = ev.task.comm.as_bytes();
        let n = c.len().min(abi::COMM_LEN);
        let o = offset_of!(RecordHeader, comm);
        b[o..o + n].copy_from_slice(&c[..n]);
    };
    match &ev.body {
        Body::Enter {
            func,
            args,
            field,
            lock,
            untrusted,
            ..
        } => {
            let mut b = vec![0u8; size_of::<FuncEntry>()];
            let mut flags = 0;
            if field.is_some() {
                flags |= abi::flags::FIELD_VALID;
            }
            if *untrusted {
                flags |= abi::flags::ARGS_UNTRUSTED;
            }
            header(&mut b, abi::kind::FUNC_ENTRY, flags);
            p64(&mut b, offset_of!(FuncEntry, func_ip), syms.addr_of(func));
            for (i, a) in args.iter().take(abi::MAX_ARGS).enumerate() {
                p64(&mut b, offset_of!(FuncEntry, args) + 8 * i, *a);
            }
            p64(&mut b, offset_of!(FuncEntry, field), field.unwrap_or(0));
            let (state, owner) = match lock {
                LockObs::NotChecked => (abi::lock_state::NOT_CHECKED, 0),
                LockObs::Free => (abi::lock_state::FREE, 0),
                LockObs::HeldByCurrent => (abi::lock_state::HELD_BY_CURRENT, 0),
                LockObs::HeldByOther { owner } => (abi::lock_state::HELD_BY_OTHER, *owner),
            };
            b[offset_of!(FuncEntry, lock_state)] = state;
            p64(&mut b, offset_of!(FuncEntry, lock_owner), owner);
            Some(b)
        }
        Body::Exit {
            func,
            ret,
            arg0,
            duration_ns,
            field,
        } => {
            let mut b = vec![0u8; size_of::<FuncExit>()];
            let mut flags = 0;
            if field.is_some() {
                flags |= abi::flags::FIELD_VALID;
            }
            if duration_ns.is_some() {
                flags |= abi::flags::DURATION_VALID;
            }
            header(&mut b, abi::kind::FUNC_EXIT, flags);
            p64(&mut b, offset_of!(FuncExit, func_ip), syms.addr_of(func));
            p64(&mut b, offset_of!(FuncExit, ret), *ret);
            p64(&mut b, offset_of!(FuncExit, arg0), *arg0);
            p64(
                &mut b,
                offset_of!(FuncExit, duration_ns),
                duration_ns.unwrap_or(0),
            );
            p64(&mut b, offset_of!(FuncExit, field), field.unwrap_or(0));
            Some(b)
        }
        _ => None,
    }
}

/// The recording header of the benchmarks (a realistic size: the built-in profile and a
/// symbol table of the module).
pub fn header(syms: &Syms) -> Header {
    Header {
        arch: "s390x".into(),
        kernel_release: "6.12.0-bench".into(),
        hostname: "bench".into(),
        boot_to_wall_ns: 0,
        module: "vfio_ap".into(),
        symbols: syms
            .table
            .iter()
            .map(|(a, s, n)| tracer::recording::Symbol {
                addr: *a,
                size: *s as u32,
                name: n.to_string(),
            })
            .collect(),
        profile: tracer::profile::Profile::vfio_ap().to_toml(),
        probes: Vec::new(),
        writer: tracer::writer_id(),
    }
}

/// Writes `evs` as a recording in memory; returns its bytes and the bytes after the header
/// (chunks: sync marker, length, count, payload, CRC).
pub fn record(evs: &[Event], header: &Header) -> (Vec<u8>, u64) {
    let mut w = Writer::new(Vec::with_capacity(evs.len() * 24), header).expect("in memory");
    for e in evs {
        w.push(e).expect("in memory");
    }
    let out = w.finish().expect("in memory");
    let chunk_bytes = out.len() as u64 - header_len(&out);
    (out, chunk_bytes)
}

/// Bytes of a recording's header: magic (8), version (4), length (4), body, CRC (4).
pub fn header_len(file: &[u8]) -> u64 {
    let len = u32::from_le_bytes(file[12..16].try_into().expect("4 bytes")) as u64;
    16 + len + 4
}

/// Median of a list of measurements.
pub fn median(v: &mut [f64]) -> f64 {
    v.sort_by(|a, b| a.partial_cmp(b).expect("no NaN"));
    let n = v.len();
    if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    }
}
