//! The ABI decoder: `model::decode_record` (and `decode_record_into`, into a reused event)
//! on arbitrary bytes, as written by a little- and a big-endian kernel. What decodes must
//! encode back to a record that decodes the same, and be recordable and read back unchanged.
#![no_main]

use std::sync::Arc;

use libfuzzer_sys::fuzz_target;
use tracer::model::{
    decode_record, decode_record_into, encode_record, Body, Decoded, Endian, Event, Symbolizer,
};
use tracer::recording::{Header, Recording, Writer};

/// Knows the functions at non-zero addresses whose low byte is zero, as a real symbol table
/// knows some (and not 0: the encoder writes an unknown allocation site as 0).
struct SomeSymbols;
impl Symbolizer for SomeSymbols {
    fn function_at(&self, addr: u64) -> Option<Arc<str>> {
        (addr != 0 && addr & 0xff == 0).then(|| Arc::from(format!("fn_{:x}", addr >> 8)))
    }
}

/// The inverse of `SomeSymbols`, for the encoder.
fn address_of(name: &str) -> Option<u64> {
    let a = u64::from_str_radix(name.strip_prefix("fn_")?, 16).ok()?;
    Some(a << 8)
}

fn lossy(e: &Event) -> bool {
    let bad = |s: &str| s.contains(char::REPLACEMENT_CHARACTER);
    bad(&e.task.comm) || matches!(&e.body, Body::MdevName { uuid, .. } if bad(uuid))
}

fuzz_target!(|data: &[u8]| {
    let mut events = Vec::new();
    // One event decoded into over and over, as the live agent reuses boxes: the same as
    // decoding afresh, and left as it was by bytes that do not decode.
    let mut reused = Event::placeholder();
    for endian in [Endian::Little, Endian::Big] {
        let before = reused.clone();
        let into = decode_record_into(data, endian, &SomeSymbols, &mut reused);
        let fresh = decode_record(data, endian, &SomeSymbols);
        match &fresh {
            Ok(d) => {
                assert_eq!(into, Ok(d.stack_id));
                assert_eq!(reused, d.event);
            }
            Err(e) => {
                assert_eq!(into.as_ref(), Err(e));
                assert_eq!(reused, before);
            }
        }
        if let Ok(mut d) = fresh {
            let again = |d: &Decoded| {
                let raw = encode_record(&d.event, d.stack_id, endian, &address_of).unwrap();
                decode_record(&raw, endian, &SomeSymbols).unwrap()
            };
            let d2 = again(&d);
            assert_eq!(again(&d2), d2);
            // Bytes that are not UTF-8 are decoded lossily: only valid text comes back as is.
            if !lossy(&d.event) {
                assert_eq!(d2, d);
            }
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
