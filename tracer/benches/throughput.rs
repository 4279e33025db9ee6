//! Throughput of each userspace stage, in events per second, on the realistic mix of
//! `common::mix` (one million events; `APTRACE_BENCH_EVENTS` overrides, `-- --test` runs each
//! once on a small input).
//!
//! `cargo bench -p tracer --bench throughput [-- FILTER]`; the auditor's is `audit_ingest`, the
//! whole agent path (decode → reorder → audit) is `pipeline`.

mod common;

use std::hint::black_box;
use std::time::{Duration, Instant};

use criterion::{criterion_group, criterion_main, Criterion, SamplingMode, Throughput};

use tracer::audit::Auditor;
use tracer::model::{decode_record, decode_record_into, prefetch, Endian, Event};
use tracer::pipeline::reorder::Reorder;
use tracer::pipeline::{Pipeline, REORDER_CAPACITY, REORDER_WINDOW_NS};
use tracer::profile::Profile;
use tracer::recording::{Recording, Writer};
use tracer::report::{FileReport, Report, SourceInfo};

use common::*;

fn config() -> Criterion {
    Criterion::default()
        .sample_size(10)
        .warm_up_time(Duration::from_secs(2))
        .measurement_time(Duration::from_secs(10))
}

/// How many events ahead the reorder group brings an input box into the cache.
const WARM_AHEAD: usize = 8;

fn stages(c: &mut Criterion) {
    let evs = mix(events_for_run());
    let n = evs.len();
    let id = format!("mix_{n}");
    let syms = Syms::for_events(&evs);
    let header = header(&syms);

    // Raw ring-buffer records, big-endian as an s390x host writes them, back to back.
    let mut raw = Vec::new();
    let mut spans = Vec::new();
    for e in &evs {
        if let Some(r) = to_raw(e, Endian::Big, &syms) {
            spans.push((raw.len(), r.len()));
            raw.extend_from_slice(&r);
        }
    }
    let mut g = c.benchmark_group("abi_decode");
    g.sampling_mode(SamplingMode::Flat);
    g.throughput(Throughput::Elements(spans.len() as u64));
    g.bench_function(&id, |b| {
        b.iter(|| {
            for &(o, l) in &spans {
                black_box(decode_record(&raw[o..o + l], Endian::Big, &syms).expect("decodes"));
            }
        })
    });
    g.finish();
    drop((raw, spans));

    // Reorder: events moved by up to 30 places, as per-CPU buffers interleave them. Events
    // travel boxed from the decoder on (`Pipeline::push_boxed`): the window takes and
    // hands on boxes, made before the clock starts as the decoder's stage makes them. The
    // released ones go by value into the next stage's vector; dropping them is that stage's
    // cost (the `pipeline` group below times everything, drops included). The vector is
    // kept across iterations, as the pipeline keeps its own: a fresh one would time the
    // kernel's first touch of its pages, which no stage pays.
    //
    // In the pipeline the window reads the timestamp of a box the decoder wrote a moment
    // before, in the cache. These million boxes were made before the clock, and are cold:
    // reading each one's timestamp waits on memory, which timed the memory and not the
    // window (a profile put two thirds of the stage's time on that one load). Each box is
    // asked for a few events ahead, as the decoder's write would have brought it in.
    let mut shuffled = evs.clone();
    shuffle_locally(&mut shuffled, 30);
    let mut g = c.benchmark_group("reorder");
    g.sampling_mode(SamplingMode::Flat);
    g.throughput(Throughput::Elements(n as u64));
    g.bench_function(&id, |b| {
        let mut out: Vec<Box<Event>> = Vec::with_capacity(n);
        b.iter_custom(|iters| {
            let mut total = Duration::ZERO;
            for _ in 0..iters {
                out.clear();
                let mut input: Vec<Option<Box<Event>>> = shuffled
                    .iter()
                    .cloned()
                    .map(|e| Some(Box::new(e)))
                    .collect();
                let t = Instant::now();
                let mut r = Reorder::new(REORDER_WINDOW_NS, REORDER_CAPACITY);
                // Taken out one by one, so that freeing the input's buffer is not timed.
                for i in 0..input.len() {
                    if let Some(Some(ahead)) = input.get(i + WARM_AHEAD) {
                        prefetch(&ahead.ts_ns, 1);
                    }
                    if let Some(e) = input[i].take() {
                        r.push(e, &mut |e| out.push(e));
                    }
                }
                r.flush(&mut |e| out.push(e));
                total += t.elapsed();
                drop(input);
                black_box(out.len());
            }
            total
        })
    });
    g.finish();
    drop(shuffled);

    // The whole agent path on one core: raw s390x records (moved by up to 30 places) decoded,
    // ordered by the window, audited (`Pipeline::push`, no recorder, no sinks), then drained.
    let (raw, items) = agent_input(&evs, &syms);
    let mut g = c.benchmark_group("pipeline");
    g.sampling_mode(SamplingMode::Flat);
    g.throughput(Throughput::Elements(n as u64));
    g.bench_function(&id, |b| {
        b.iter(|| {
            let mut p = Pipeline::new(Auditor::new(Profile::vfio_ap()), None);
            for item in &items {
                match item {
                    Source::Record(o, l) => {
                        let mut b = p.spare_box();
                        decode_record_into(&raw[*o..*o + *l], Endian::Big, &syms, &mut b)
                            .expect("decodes");
                        p.push_boxed(b);
                    }
                    Source::Made(e) => p.push((**e).clone()),
                }
            }
            let (a, err) = p.finish();
            assert!(err.is_none());
            black_box(a.findings().len())
        })
    });
    g.finish();
    drop((raw, items));

    let mut g = c.benchmark_group("audit_ingest");
    g.sampling_mode(SamplingMode::Flat);
    g.throughput(Throughput::Elements(n as u64));
    // By reference, as `aptrace report` and (a) audit: the auditor copies what it keeps (the
    // pipeline hands boxes over instead, through `ingest_boxed`), and nothing here drops
    // events. The run at once, as `aptrace report` hands each decoded chunk over
    // (`ingest_all` asks for the next events' lines ahead); `ratios` also times one call per
    // event.
    g.bench_function(&id, |b| {
        b.iter(|| {
            let mut a = Auditor::new(Profile::vfio_ap());
            a.ingest_all(&evs);
            black_box(a.findings().len())
        })
    });
    g.finish();

    let (file, _) = record(&evs, &header);
    let mut g = c.benchmark_group("recording_write");
    g.sampling_mode(SamplingMode::Flat);
    g.throughput(Throughput::Elements(n as u64));
    g.bench_function(&id, |b| {
        b.iter(|| {
            let mut w = Writer::new(Vec::with_capacity(file.len()), &header).expect("in memory");
            for e in &evs {
                w.push(e).expect("in memory");
            }
            black_box(w.finish().expect("in memory").len())
        })
    });
    g.finish();

    let bytes = bytes::Bytes::from(file);
    let mut g = c.benchmark_group("recording_read");
    g.sampling_mode(SamplingMode::Flat);
    g.throughput(Throughput::Elements(n as u64));
    g.bench_function(&id, |b| {
        b.iter(|| {
            let r = Recording::parse(bytes.clone(), "bench").expect("a recording");
            let mut warnings = Vec::new();
            let mut count = 0u64;
            r.for_each_event(&mut warnings, |e| count += black_box(e.seq));
            assert!(warnings.is_empty());
            count
        })
    });
    g.finish();

    let mut auditor = Auditor::new(Profile::vfio_ap());
    evs.iter().for_each(|e| auditor.ingest(e));
    let source = || SourceInfo::new("bench.aptr", &header, (1, 0), Vec::new(), Vec::new());
    let mut g = c.benchmark_group("report");
    g.sampling_mode(SamplingMode::Flat);
    g.throughput(Throughput::Elements(n as u64));
    g.bench_function(format!("text_{id}"), |b| {
        b.iter(|| {
            let r = Report {
                files: vec![FileReport::new(source(), &auditor, true)],
            };
            black_box(r.to_text().len())
        })
    });
    g.bench_function(format!("json_{id}"), |b| {
        b.iter(|| {
            let r = Report {
                files: vec![FileReport::new(source(), &auditor, true)],
            };
            black_box(r.to_json().len())
        })
    });
    g.finish();
}

criterion_group! {
    name = benches;
    config = config();
    targets = stages
}
criterion_main!(benches);
