//! The ABI decoder: `model::decode_record` on arbitrary bytes, as written by a little- and
//! a big-endian kernel. What decodes must be recordable and read back unchanged.
#![no_main]

use std::sync::Arc;

use libfuzzer_sys::fuzz_target;
use tracer::model::{decode_record, Endian, Symbolizer};
use tracer::recording::{Header, Recording, Writer};

/// Knows the functions at addresses whose low byte is zero, as a real symbol table knows some.
struct SomeSymbols;
impl Symbolizer for SomeSymbols {
    fn function_at(&self, addr: u64) -> Option<Arc<str>> {
        (addr & 0xff == 0).then(|| Arc::from(format!("fn_{:x}", addr >> 8)))
    }
}

fuzz_target!(|data: &[u8]| {
    let mut events = Vec::new();
    for endian in [Endian::Little, Endian::Big] {
        if let Ok(mut d) = decode_record(data, endian, &SomeSymbols) {
            d.event.seq = events.len() as u64 + 1;
            events.push(d.event);
        }
    }
    if events.is_empty() {
        return;
    }
    let mut w = Writer::new(Vec::new(), &Header::default()).unwrap();
    for e in &events {
        w.push(e).unwrap();
    }
    let r = Recording::parse(w.finish().unwrap().into(), "abi.aptr").unwrap();
    let mut warnings = Vec::new();
    assert_eq!(r.events(&mut warnings), events);
    assert!(warnings.is_empty());
});
