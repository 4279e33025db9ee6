//! The userspace ratios, each measured within one run on one machine:
//!
//! - auditor ingest rate (events/s on one core; target ≥ 20 M/s);
//! - (a) auditing a recording end to end (read, check, decode, audit, render the text
//!   report, in one streaming pass) against the floor any consumer pays (read, check CRCs,
//!   decode); target ≤ 1.5x. Also timed: `aptrace report`'s own path (`input::open`, then
//!   `offline::audit_opened` streams the events into the auditor);
//! - (f) recording bytes per event on the one-million-event mix, header excluded, against the
//!   same events as JSON lines; target ≤ 24 bytes/event.
//!
//! Rounds alternate the measured paths so that noise from other processes hits both; the
//! figures are medians over rounds. `cargo bench -p tracer --bench ratios` (full) or
//! `-- --quick` (one round on a small input: checks that it runs, measures nothing).
//! With `APTRACE_BENCH_OUT=DIR` the figures are also written to `DIR/ratios.json`.

mod common;

use std::hint::black_box;
use std::io::Write;
use std::time::Instant;

use tracer::audit::Auditor;
use tracer::input::Ahead;
use tracer::model::Event;
use tracer::profile::Profile;
use tracer::recording::Recording;
use tracer::report::Report;

use common::*;

/// Counts bytes written.
struct Count(u64);
impl Write for Count {
    fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
        self.0 += b.len() as u64;
        Ok(b.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

fn secs<T>(f: impl FnOnce() -> T) -> (f64, T) {
    let t = Instant::now();
    let r = f();
    (t.elapsed().as_secs_f64(), r)
}

/// The auditor alone, events by reference (it copies what it keeps), as `audit_ingest`:
/// the whole run at once (`ingest_all`, which asks for the next events' lines ahead, as
/// `aptrace report` hands each decoded chunk over).
fn ingest(evs: &[Event]) -> usize {
    let mut a = Auditor::new(Profile::vfio_ap());
    a.ingest_all(evs);
    a.findings().len()
}

/// The same, one `ingest` call per event (the live pipeline's way: its events come one at a
/// time out of the reorder window).
fn ingest_one_by_one(evs: &[Event]) -> usize {
    let mut a = Auditor::new(Profile::vfio_ap());
    for e in evs {
        a.ingest(e);
    }
    a.findings().len()
}

/// The floor: read the file, check every CRC, decode every event, and drop it.
fn floor(path: &std::path::Path) -> u64 {
    let r = Recording::open(path).expect("a recording");
    let mut warnings = Vec::new();
    let mut n = 0u64;
    r.for_each_event(&mut warnings, |e| {
        black_box(&e);
        n += 1;
    });
    assert!(warnings.is_empty() && r.intact());
    n
}

/// End to end in one streaming pass: read, check, decode, audit, render the text report.
/// `ahead` is where the reading and decoding run: beside the auditor on a second thread, as
/// `aptrace report` does on a machine with two cores (`offline::audit_opened`), or inline.
fn end_to_end(path: &std::path::Path, ahead: Ahead) -> (usize, [f64; 3]) {
    let name = path.display().to_string();
    let t = Instant::now();
    let mut opened = tracer::input::open(path).expect("a recording");
    let mut auditor = Auditor::new(Profile::vfio_ap());
    // Each event is audited by reference: handing it over by value (`ingest_owned`) moved
    // the event in and an `Option<Event>` back out, which cost more than the entry's copy
    // it saved.
    opened.for_each_run_ahead(ahead, |run| auditor.ingest_all(run));
    let t_audit = t.elapsed().as_secs_f64();
    let (t_report, text) = secs(|| {
        let source = tracer::report::SourceInfo::new(
            &name,
            &opened.header,
            opened.version,
            Vec::new(),
            std::mem::take(&mut opened.warnings),
        );
        let file = tracer::report::FileReport::new(source, &auditor, opened.intact());
        Report { files: vec![file] }.to_text()
    });
    (black_box(text).len(), [0.0, t_audit, t_report])
}

/// As `aptrace report FILE` does it (less writing the text out): open, stream the events
/// into the auditor, render.
fn report_command(path: &std::path::Path) -> (usize, [f64; 3]) {
    let name = path.display().to_string();
    let (t_load, opened) = secs(|| tracer::input::open(path).expect("opens"));
    let (t_audit, file) = secs(|| tracer::offline::audit_opened(&name, opened, None));
    let (t_report, text) = secs(|| Report { files: vec![file] }.to_text());
    (black_box(text).len(), [t_load, t_audit, t_report])
}

fn main() {
    let quick = !full_run();
    let evs = mix(events_for_run());
    // Whole mdev lives: a few more events than asked for.
    let n = evs.len();
    let rounds = if quick { 1 } else { 7 };
    println!(
        "aptrace userspace ratios: {n} events of the realistic mix, {rounds} round(s){}",
        if quick {
            " (quick: checks that it runs; not figures)"
        } else {
            ""
        }
    );

    let syms = Syms::for_events(&evs);
    let header = header(&syms);
    let (file, chunk_bytes) = record(&evs, &header);

    // (f) bytes per event.
    let mut json = Count(0);
    for e in &evs {
        tracer::jsonl::write_event(&mut json, e).expect("counts");
    }
    let aptr_per_event = chunk_bytes as f64 / n as f64;
    let json_per_event = json.0 as f64 / n as f64;

    let dir = tempfile::tempdir().expect("a temporary directory");
    let path = dir.path().join("mix.aptr");
    std::fs::write(&path, &file).expect("writes");
    drop(file);

    let (mut t_ingest, mut t_floor, mut t_e2e, mut r_a) = (vec![], vec![], vec![], vec![]);
    let mut t_ingest_one = vec![];
    let (mut t_e2e_inline, mut r_a_inline) = (vec![], vec![]);
    let (mut t_load, mut t_audit, mut t_report) = (vec![], vec![], vec![]);
    let mut t_cmd = vec![];
    for round in 0..rounds {
        let (ti, _) = secs(|| black_box(ingest(&evs)));
        let (ti1, _) = secs(|| black_box(ingest_one_by_one(&evs)));
        // Rotate which of the three goes first.
        let mut tf = 0.0;
        let (mut te, mut tl) = (0.0, 0.0);
        for k in 0..3 {
            match (round + k) % 3 {
                0 => {
                    let (t, got) = secs(|| floor(&path));
                    assert_eq!(got, n as u64);
                    tf = t;
                }
                1 => te = secs(|| end_to_end(&path, Ahead::Thread)).0,
                _ => tl = secs(|| end_to_end(&path, Ahead::Inline)).0,
            }
        }
        let (tc, (_, cparts)) = secs(|| report_command(&path));
        println!(
            "  round {}: ingest {:.1} M ev/s (one by one {:.1}); floor {:.3} s, end to end {:.3} s: {:.2}x (one thread {:.3} s: {:.2}x); `aptrace report` path {:.3} s (load {:.3} + audit {:.3} + report {:.3}): {:.2}x",
            round + 1,
            n as f64 / ti / 1e6,
            n as f64 / ti1 / 1e6,
            tf,
            te,
            te / tf,
            tl,
            tl / tf,
            tc,
            cparts[0],
            cparts[1],
            cparts[2],
            tc / tf
        );
        t_cmd.push(tc);
        t_ingest.push(ti);
        t_ingest_one.push(ti1);
        t_floor.push(tf);
        t_e2e.push(te);
        r_a.push(te / tf);
        t_e2e_inline.push(tl);
        r_a_inline.push(tl / tf);
        t_load.push(cparts[0]);
        t_audit.push(cparts[1]);
        t_report.push(cparts[2]);
    }
    let ingest_rate = n as f64 / median(&mut t_ingest);
    let ingest_one_rate = n as f64 / median(&mut t_ingest_one);
    let ratio_a = median(&mut r_a);
    let ratio_a_inline = median(&mut r_a_inline);
    let floor_rate = n as f64 / median(&mut t_floor);
    let e2e_rate = n as f64 / median(&mut t_e2e);
    let e2e_inline_rate = n as f64 / median(&mut t_e2e_inline);
    let cmd_ratio = median(&mut t_cmd) / median(&mut t_floor.clone());

    println!();
    println!(
        "auditor ingest: {:.2} M events/s on one core (target >= 20 M/s: {})",
        ingest_rate / 1e6,
        verdict(ingest_rate >= 20e6)
    );
    println!(
        "    one `ingest` call per event (the live pipeline's way): {:.2} M events/s",
        ingest_one_rate / 1e6
    );
    println!(
        "(a) end to end / read+CRC+decode floor: {ratio_a:.2}x (floor {:.2} M ev/s, end to end {:.2} M ev/s, decoded ahead on a second thread as `aptrace report` does; median of {rounds}; target <= 1.5x: {})",
        floor_rate / 1e6,
        e2e_rate / 1e6,
        verdict(ratio_a <= 1.5)
    );
    println!(
        "    on one thread: {ratio_a_inline:.2}x (end to end {:.2} M ev/s)",
        e2e_inline_rate / 1e6
    );
    println!(
        "    `aptrace report` path today: {cmd_ratio:.2}x the floor (medians: load all events {:.3} s, audit {:.3} s, report {:.3} s)",
        median(&mut t_load),
        median(&mut t_audit),
        median(&mut t_report)
    );
    println!(
        "(f) recording {aptr_per_event:.2} bytes/event (header excluded) vs JSON lines {json_per_event:.1} bytes/event: {:.1}x smaller (target <= 24: {})",
        json_per_event / aptr_per_event,
        verdict(aptr_per_event <= 24.0)
    );

    if let Ok(out) = std::env::var("APTRACE_BENCH_OUT") {
        std::fs::create_dir_all(&out).expect("output directory");
        let v = serde_json::json!({
            "quick": quick,
            "events": n,
            "rounds": rounds,
            "ingest_events_per_s": ingest_rate,
            "ingest_one_by_one_events_per_s": ingest_one_rate,
            "a_ratio": ratio_a,
            "a_floor_events_per_s": floor_rate,
            "a_end_to_end_events_per_s": e2e_rate,
            "a_one_thread_ratio": ratio_a_inline,
            "a_one_thread_events_per_s": e2e_inline_rate,
            "a_report_command_ratio": cmd_ratio,
            "f_recording_bytes_per_event": aptr_per_event,
            "f_jsonl_bytes_per_event": json_per_event,
        });
        std::fs::write(
            std::path::Path::new(&out).join("ratios.json"),
            serde_json::to_string_pretty(&v).expect("json"),
        )
        .expect("writes ratios.json");
    }
}

fn verdict(ok: bool) -> &'static str {
    if ok {
        "met"
    } else {
        "MISSED"
    }
}
