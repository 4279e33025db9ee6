//! Chunk payloads decoded directly, as if their CRC matched: the first 4 bytes are the
//! chunk's event count (little-endian), the rest its payload. Whatever decodes must survive
//! a round trip through the writer unchanged.
#![no_main]

use libfuzzer_sys::fuzz_target;
use tracer::recording::{Chunk, Header, Recording, Writer};

fuzz_target!(|data: &[u8]| {
    if data.len() < 4 {
        return;
    }
    let count = u32::from_le_bytes(data[..4].try_into().unwrap());
    let chunk = Chunk {
        offset: 0,
        count,
        payload: bytes::Bytes::copy_from_slice(&data[4..]),
    };
    let Ok(events) = chunk.events() else { return };
    assert_eq!(events.len() as u64, u64::from(count));

    let mut w = Writer::new(Vec::new(), &Header::default()).unwrap();
    for e in &events {
        w.push(e).unwrap();
    }
    let out = w.finish().unwrap();
    let r = Recording::parse(out.into(), "round-trip.aptr").unwrap();
    assert!(r.intact(), "{:?}", r.damage);
    let mut warnings = Vec::new();
    let back = r.events(&mut warnings);
    assert!(warnings.is_empty(), "{warnings:?}");
    assert_eq!(back, events);
});
