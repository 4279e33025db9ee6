//! Workloads shared by the benchmarks: the realistic event mix, its ABI records, a
//! symbolizer, recordings in memory, and a streaming generator for runs larger than memory.
//!
//! Each bench binary includes this file with `mod common;` and uses what it needs.
#![allow(dead_code)]

use std::sync::Arc;

use tracer::model::{encode_record, Addresses, Endian, Event, Symbolizer};
use tracer::recording::{Header, Writer};
use tracer::synth::{Fault, Generator};

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
}

impl Addresses for Syms {
    fn address_of(&self, name: &str) -> Option<u64> {
        self.table
            .iter()
            .find(|(_, _, n)| &**n == name)
            .map(|(a, _, _)| *a)
    }
}

impl Symbolizer for Syms {
    fn function_at(&self, addr: u64) -> Option<Arc<str>> {
        let i = self.table.partition_point(|(a, _, _)| *a <= addr);
        let (a, size, name) = self.table.get(i.checked_sub(1)?)?;
        (addr < a + size).then(|| name.clone())
    }
}

/// The ABI record the probes would have written for a call event, in `endian` byte order.
/// The decoding benchmark measures call records: other events give `None`.
pub fn to_raw(ev: &Event, endian: Endian, syms: &Syms) -> Option<Vec<u8>> {
    ev.body.func()?;
    encode_record(ev, None, endian, syms).ok()
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
        ..Header::default()
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

/// One item of what an agent reads: a ring-buffer record (its span in the byte buffer), or
/// an event userspace makes itself (losses, guest names), which has no record. The few made
/// events are boxed: inline, every item took an event's size, and reading the items took
/// a twelfth of the pipeline's time, which an agent reading its ring buffer never pays.
pub enum Source {
    Record(usize, usize),
    Made(Box<Event>),
}

/// The mix as the probes of an s390x host would hand it over: each event moved by up to 30
/// places (per-CPU buffers interleave), written as big-endian records back to back.
pub fn agent_input(evs: &[Event], syms: &Syms) -> (Vec<u8>, Vec<Source>) {
    let mut shuffled = evs.to_vec();
    shuffle_locally(&mut shuffled, 30);
    let mut raw = Vec::new();
    let mut items = Vec::with_capacity(shuffled.len());
    for e in shuffled {
        match encode_record(&e, None, Endian::Big, syms) {
            Ok(r) => {
                items.push(Source::Record(raw.len(), r.len()));
                raw.extend_from_slice(&r);
            }
            Err(_) => items.push(Source::Made(Box::new(e))),
        }
    }
    (raw, items)
}
