//! The path `report`, `import` and `tui` take for JSON lines: `jsonl::read_jsonl_ordered` on
//! arbitrary bytes (the reorder window), then the auditor, then the recording `import` writes.
//! What the window accepts must be the file's events in timestamp order (ties in file order),
//! numbered 1..n; it refuses a file only for disorder beyond the window, naming a line of an
//! event; and the imported recording says what the source line said about completeness.
#![no_main]

use libfuzzer_sys::fuzz_target;
use tracer::audit::Auditor;
use tracer::jsonl::{read_jsonl, read_jsonl_ordered, JsonlError};
use tracer::model::Event;
use tracer::pipeline::REORDER_WINDOW_NS;
use tracer::profile::Profile;
use tracer::recording::{Recording, Writer};

/// How far the file goes back in time at worst: the largest gap from the newest timestamp
/// seen so far to an event after it.
fn worst_step_back(events: &[Event]) -> u64 {
    let mut newest = 0u64;
    let mut worst = 0u64;
    for e in events {
        worst = worst.max(newest.saturating_sub(e.ts_ns));
        newest = newest.max(e.ts_ns);
    }
    worst
}

fuzz_target!(|data: &[u8]| {
    let raw = read_jsonl(data, "fuzz.jsonl");
    let ordered = read_jsonl_ordered(data, "fuzz.jsonl");
    let (raw, ordered) = match (raw, ordered) {
        (Err(_), Err(_)) => return,
        (Err(e), Ok(_)) => panic!("the window accepted what the reader refused: {e}"),
        (Ok(raw), Err(JsonlError::Line { line, message, .. })) => {
            // Refused only for disorder beyond the window (the fuzzer's inputs are far
            // shorter than the window's capacity), naming the line of an event.
            assert!(
                worst_step_back(&raw.events) > REORDER_WINDOW_NS,
                "refused a file within the window: {message}"
            );
            assert!(raw.lines.contains(&line), "line {line}: {message}");
            assert!(message.contains("reorder window"), "{message}");
            return;
        }
        (Ok(_), Err(e)) => panic!("the window failed otherwise: {e}"),
        (Ok(raw), Ok(ordered)) => (raw, ordered),
    };

    // The file's events, stably sorted by timestamp, renumbered in delivery order.
    let mut expected = raw.events.clone();
    expected.sort_by_key(|e| e.ts_ns);
    for (i, e) in expected.iter_mut().enumerate() {
        e.seq = i as u64 + 1;
    }
    assert_eq!(ordered.events, expected);
    assert_eq!(ordered.header, raw.header);
    assert_eq!(ordered.source, raw.source);

    // `report`: the auditor takes any ordered stream without panicking.
    let mut auditor = Auditor::new(Profile::vfio_ap());
    for e in &ordered.events {
        auditor.ingest(e);
    }
    let _ = auditor.findings_total();

    // `import`: the recording keeps the source line's damage and end marker.
    let mut header = ordered.header.clone().unwrap_or_default();
    let (end_marker, damage) = match &ordered.source {
        Some(n) => (n.end_marker, n.damage.clone()),
        None => (true, Vec::new()),
    };
    header.source_damage = damage.clone();
    let mut w = Writer::new(Vec::new(), &header).unwrap();
    for e in &ordered.events {
        w.push(e).unwrap();
    }
    let bytes = if end_marker {
        w.finish().unwrap()
    } else {
        w.finish_unmarked().unwrap()
    };
    let r = Recording::parse(bytes.into(), "import.aptr").unwrap();
    assert_eq!(r.header.source_damage, damage);
    assert_eq!(r.end.is_some(), end_marker);
    assert_eq!(r.intact(), end_marker && damage.is_empty());
    let mut warnings = Vec::new();
    let back = r.events(&mut warnings);
    assert!(warnings.is_empty(), "{warnings:?}");
    assert_eq!(back.len(), ordered.events.len());
    assert!(back
        .iter()
        .zip(&ordered.events)
        .all(|(a, b)| (a.seq, a.ts_ns) == (b.seq, b.ts_ns)));
});
