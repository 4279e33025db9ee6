//! Memory is bounded by live objects, not by the number of events: a counting global
//! allocator measures the heap while the live path (reorder window → recorder → auditor)
//! takes 1 M and then 10 M events of the realistic mix, generated one mdev life at a time so
//! the generator holds almost nothing.
//!
//! `cargo bench -p tracer --bench memory` (full: 1 M and 10 M) or `-- --quick` (20 k and
//! 200 k). With `APTRACE_BENCH_OUT=DIR` the figures are also written to `DIR/memory.json`.

mod common;

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicUsize, Ordering::Relaxed};

use tracer::audit::Auditor;
use tracer::model::Event;
use tracer::pipeline::reorder::Reorder;
use tracer::pipeline::{REORDER_CAPACITY, REORDER_WINDOW_NS};
use tracer::profile::Profile;
use tracer::recording::{Header, Writer};

use common::*;

struct Counting;
static LIVE: AtomicUsize = AtomicUsize::new(0);
static PEAK: AtomicUsize = AtomicUsize::new(0);
static ALLOCS: AtomicUsize = AtomicUsize::new(0);

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, l: Layout) -> *mut u8 {
        let p = System.alloc(l);
        if !p.is_null() {
            let now = LIVE.fetch_add(l.size(), Relaxed) + l.size();
            PEAK.fetch_max(now, Relaxed);
            ALLOCS.fetch_add(1, Relaxed);
        }
        p
    }
    unsafe fn dealloc(&self, p: *mut u8, l: Layout) {
        System.dealloc(p, l);
        LIVE.fetch_sub(l.size(), Relaxed);
    }
    unsafe fn realloc(&self, p: *mut u8, l: Layout, new: usize) -> *mut u8 {
        let q = System.realloc(p, l, new);
        if !q.is_null() {
            if new >= l.size() {
                let now = LIVE.fetch_add(new - l.size(), Relaxed) + (new - l.size());
                PEAK.fetch_max(now, Relaxed);
            } else {
                LIVE.fetch_sub(l.size() - new, Relaxed);
            }
            ALLOCS.fetch_add(1, Relaxed);
        }
        q
    }
}

#[global_allocator]
static A: Counting = Counting;

struct Run {
    events: usize,
    peak: usize,
    end: usize,
    allocs: usize,
    findings: usize,
    outstanding: usize,
    mdevs: usize,
}

/// The live path over `n` streamed events; heap figures are net of what existed before.
fn run(n: usize, header: &Header) -> Run {
    let base = LIVE.load(Relaxed);
    PEAK.store(base, Relaxed);
    let allocs0 = ALLOCS.load(Relaxed);
    let mut reorder = Reorder::new(REORDER_WINDOW_NS, REORDER_CAPACITY);
    let mut auditor = Auditor::new(Profile::vfio_ap());
    let mut writer = Writer::new(std::io::sink(), header).expect("a sink");
    let mut deliver = |e: Box<Event>, auditor: &mut Auditor| {
        writer.push(&e).expect("a sink");
        auditor.ingest_boxed(e);
    };
    for e in Stream::new(n) {
        reorder.push(Box::new(e), &mut |e| deliver(e, &mut auditor));
    }
    reorder.flush(&mut |e| deliver(e, &mut auditor));
    let snap = auditor.snapshot();
    let end = LIVE.load(Relaxed) - base;
    let run = Run {
        events: n,
        peak: PEAK.load(Relaxed) - base,
        end,
        allocs: ALLOCS.load(Relaxed) - allocs0,
        findings: auditor.findings().len(),
        outstanding: snap.outstanding as usize,
        mdevs: snap.mdevs.len(),
    };
    drop(snap);
    run
}

fn mib(b: usize) -> f64 {
    b as f64 / (1024.0 * 1024.0)
}

fn main() {
    let quick = !full_run();
    let sizes: [usize; 2] = if quick {
        [QUICK_EVENTS, 10 * QUICK_EVENTS]
    } else {
        [MIX_EVENTS, 10 * MIX_EVENTS]
    };
    println!(
        "aptrace memory: heap of reorder + recorder + auditor over a streamed mix{}",
        if quick { " (quick: small sizes)" } else { "" }
    );
    let syms = Syms::for_events(&mix(2000));
    let header = header(&syms);
    let runs: Vec<Run> = sizes.iter().map(|&n| run(n, &header)).collect();
    println!(
        "  {:>10}  {:>10}  {:>12}  {:>12}  {:>8}  {:>11}  {:>11}",
        "events",
        "peak heap",
        "heap at end",
        "allocations",
        "findings",
        "outstanding",
        "mdevs kept"
    );
    for r in &runs {
        println!(
            "  {:>10}  {:>7.1} MiB  {:>8.1} MiB  {:>12}  {:>8}  {:>11}  {:>11}",
            r.events,
            mib(r.peak),
            mib(r.end),
            r.allocs,
            r.findings,
            r.outstanding,
            r.mdevs
        );
    }
    let growth = runs[1].peak as f64 / runs[0].peak as f64;
    println!(
        "peak heap at {} events / at {} events: {growth:.2}x for {}x the events (bounded by live objects: {})",
        runs[1].events,
        runs[0].events,
        runs[1].events / runs[0].events,
        if growth < 1.5 { "yes" } else { "NO" }
    );
    if let Ok(out) = std::env::var("APTRACE_BENCH_OUT") {
        std::fs::create_dir_all(&out).expect("output directory");
        let rows: Vec<_> = runs
            .iter()
            .map(|r| {
                serde_json::json!({
                    "events": r.events, "peak_heap_bytes": r.peak, "end_heap_bytes": r.end,
                    "allocations": r.allocs, "findings": r.findings,
                    "outstanding": r.outstanding, "mdevs_kept": r.mdevs,
                })
            })
            .collect();
        let v = serde_json::json!({ "quick": quick, "runs": rows, "peak_growth": growth });
        std::fs::write(
            std::path::Path::new(&out).join("memory.json"),
            serde_json::to_string_pretty(&v).expect("json"),
        )
        .expect("writes memory.json");
    }
}
