//! One pass of one stage over the mix, for instruction counts under callgrind (they do not
//! move with the machine's load, unlike the criterion rates):
//!
//! ```sh
//! CARGO_PROFILE_BENCH_DEBUG=line-tables-only cargo bench -p tracer --bench instructions --no-run
//! APTRACE_BENCH_EVENTS=100000 valgrind --tool=callgrind target/release/deps/instructions-* STAGE
//! callgrind_annotate --inclusive=yes callgrind.out.* | grep stage_
//! ```
//!
//! STAGE is `audit` (`Auditor::ingest` by reference), `audit_drop` (the same, each event
//! dropped after it, as `aptrace report` streams), `audit_owned` (`ingest_owned`),
//! `reorder`, `decode`, `pipeline` (decode → reorder → audit, as the `pipeline` group of
//! the throughput bench), `recording_read` (parse with every chunk's CRC, decode every
//! event, as the `recording_read` group) or `report` (the text report of the audited mix,
//! the part of (a) after the audit). Each runs in its own `stage_*` function: its inclusive count
//! divided by the events is the figure of BENCHMARKS.md. Setup (generating and encoding the
//! mix) is outside it. Without a stage, or with `--bench`/`--test` (cargo's own runs), every
//! stage runs once.

mod common;

use std::hint::black_box;

use tracer::audit::Auditor;
use tracer::model::{decode_record, decode_record_into, Endian, Event};
use tracer::pipeline::reorder::Reorder;
use tracer::pipeline::{Pipeline, REORDER_CAPACITY, REORDER_WINDOW_NS};
use tracer::profile::Profile;
use tracer::recording::Recording;

use common::*;

#[inline(never)]
fn stage_audit(evs: &[Event]) -> usize {
    let mut a = Auditor::new(Profile::vfio_ap());
    for e in evs {
        a.ingest(e);
    }
    a.findings().len()
}

#[inline(never)]
fn stage_audit_owned(evs: Vec<Event>) -> usize {
    let mut a = Auditor::new(Profile::vfio_ap());
    for e in evs {
        black_box(a.ingest_owned(e));
    }
    a.findings().len()
}

/// By reference, each event dropped after it (as `aptrace report` streams a recording).
#[inline(never)]
fn stage_audit_drop(evs: Vec<Event>) -> usize {
    let mut a = Auditor::new(Profile::vfio_ap());
    for e in evs {
        a.ingest(&e);
    }
    a.findings().len()
}

#[inline(never)]
// The boxes are what the window moves (the pipeline boxes each event once).
#[allow(clippy::vec_box)]
fn stage_reorder(evs: Vec<Box<Event>>, out: &mut Vec<Box<Event>>) {
    let mut r = Reorder::new(REORDER_WINDOW_NS, REORDER_CAPACITY);
    for e in evs {
        r.push(e, &mut |e| out.push(e));
    }
    r.flush(&mut |e| out.push(e));
}

#[inline(never)]
fn stage_decode(raw: &[u8], items: &[Source], syms: &Syms) -> u64 {
    let mut n = 0;
    for item in items {
        if let Source::Record(o, l) = item {
            let d = decode_record(&raw[*o..*o + *l], Endian::Big, syms).expect("decodes");
            n += black_box(d.event).seq;
        }
    }
    n
}

#[inline(never)]
fn stage_recording_read(file: bytes::Bytes) -> u64 {
    let r = Recording::parse(file, "bench").expect("a recording");
    let mut warnings = Vec::new();
    let mut n = 0;
    r.for_each_event(&mut warnings, |e| n += black_box(e).seq);
    assert!(warnings.is_empty(), "{warnings:?}");
    n
}

/// The report of an audited mix: `FileReport::new` (the views taken from the auditor) and
/// its text, as `aptrace report` renders after the audit.
#[inline(never)]
fn stage_report(auditor: &Auditor) -> usize {
    let source = tracer::report::SourceInfo::new(
        "bench.aptr",
        &tracer::recording::Header::default(),
        (1, 0),
        Vec::new(),
        Vec::new(),
    );
    let file = tracer::report::FileReport::new(source, auditor, true);
    tracer::report::Report { files: vec![file] }.to_text().len()
}

#[inline(never)]
fn stage_pipeline(raw: &[u8], items: &[Source], syms: &Syms) -> usize {
    let mut p = Pipeline::new(Auditor::new(Profile::vfio_ap()), None);
    for item in items {
        match item {
            Source::Record(o, l) => {
                let mut b = p.spare_box();
                decode_record_into(&raw[*o..*o + *l], Endian::Big, syms, &mut b).expect("decodes");
                p.push_boxed(b);
            }
            Source::Made(e) => p.push((**e).clone()),
        }
    }
    let (a, err) = p.finish();
    assert!(err.is_none());
    a.findings().len()
}

fn main() {
    let stage = std::env::args()
        .skip(1)
        .find(|a| !a.starts_with('-'))
        .unwrap_or_default();
    let n = std::env::var("APTRACE_BENCH_EVENTS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(if full_run() { 100_000 } else { QUICK_EVENTS });
    let evs = mix(n);
    let all = stage.is_empty();
    if all || stage == "audit" {
        println!("audit: {} findings", stage_audit(&evs));
    }
    if all || stage == "report" {
        let mut a = Auditor::new(Profile::vfio_ap());
        evs.iter().for_each(|e| a.ingest(e));
        println!("report: {} bytes", stage_report(&a));
    }
    if all || stage == "audit_owned" {
        println!("audit_owned: {} findings", stage_audit_owned(evs.clone()));
    }
    if all || stage == "audit_drop" {
        println!("audit_drop: {} findings", stage_audit_drop(evs.clone()));
    }
    if all || stage == "reorder" {
        let mut shuffled = evs.clone();
        shuffle_locally(&mut shuffled, 30);
        let shuffled: Vec<Box<Event>> = shuffled.into_iter().map(Box::new).collect();
        let mut out = Vec::with_capacity(shuffled.len());
        stage_reorder(shuffled, &mut out);
        assert_eq!(out.len(), evs.len());
        println!("reorder: {} events", out.len());
    }
    let syms = Syms::for_events(&evs);
    let (raw, items) = agent_input(&evs, &syms);
    if all || stage == "decode" {
        println!("decode: {}", stage_decode(&raw, &items, &syms));
    }
    if all || stage == "pipeline" {
        println!("pipeline: {} findings", stage_pipeline(&raw, &items, &syms));
    }
    if all || stage == "recording_read" {
        let (file, _) = record(&evs, &header(&syms));
        let sum = stage_recording_read(bytes::Bytes::from(file));
        println!("recording_read: sequence sum {sum}");
    }
}
