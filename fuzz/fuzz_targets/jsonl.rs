//! The JSON-lines importer: `jsonl::read_jsonl` on arbitrary bytes. What it accepts must
//! survive a JSON-lines round trip unchanged, and a recording round trip (what `aptrace
//! import` does) with only the recording's documented limits applied.
#![no_main]

use std::sync::Arc;

use libfuzzer_sys::fuzz_target;
use tracer::jsonl::{read_jsonl, write_jsonl};
use tracer::model::{Body, Event};
use tracer::recording::{Recording, Writer};

/// The encoder keeps strings up to 4096 bytes, 16 arguments and 256 stack frames.
fn within_limits(e: &Event) -> Event {
    fn s(x: &Arc<str>) -> Arc<str> {
        let mut end = x.len().min(4096);
        while !x.is_char_boundary(end) {
            end -= 1;
        }
        Arc::from(&x[..end])
    }
    let mut e = e.clone();
    e.task.comm = s(&e.task.comm);
    match &mut e.body {
        Body::Enter {
            func,
            args,
            stack,
            locks,
            ..
        } => {
            *func = s(func);
            locks.truncate(64);
            locks.iter_mut().for_each(|l| l.lock = s(&l.lock));
            args.truncate(16);
            stack.truncate(256);
            stack.iter_mut().for_each(|f| *f = s(f));
        }
        Body::Exit { func, .. } => *func = s(func),
        Body::Alloc { site, stack, .. } => {
            *site = site.as_ref().map(s);
            stack.truncate(256);
            stack.iter_mut().for_each(|f| *f = s(f));
        }
        Body::Free { site, .. } => *site = site.as_ref().map(s),
        Body::MdevName { uuid, .. } => *uuid = s(uuid),
        Body::GuestName { name, .. } => *name = s(name),
        Body::Lost { .. } => {}
    }
    e
}

fuzz_target!(|data: &[u8]| {
    let Ok(j) = read_jsonl(data, "fuzz.jsonl") else {
        return;
    };
    let header = j.header.clone().unwrap_or_default();

    let mut text = Vec::new();
    write_jsonl(&mut text, &header, j.events.clone()).unwrap();
    let back = read_jsonl(&text[..], "round-trip.jsonl").unwrap();
    assert_eq!(back.header.as_ref(), Some(&header));
    assert_eq!(back.events, j.events);

    let mut w = Writer::new(Vec::new(), &header).unwrap();
    for e in &j.events {
        w.push(e).unwrap();
    }
    let r = Recording::parse(w.finish().unwrap().into(), "import.aptr").unwrap();
    assert!(r.intact());
    assert_eq!(r.header, header);
    let mut warnings = Vec::new();
    let evs = r.events(&mut warnings);
    assert!(warnings.is_empty(), "{warnings:?}");
    let expected: Vec<Event> = j.events.iter().map(within_limits).collect();
    assert_eq!(evs, expected);
});
