//! The recording reader on arbitrary bytes: `Recording::parse`, then every chunk's events.
//!
//! Inputs that start with `F` have their header and chunk CRCs recomputed first, so the
//! fuzzer also reaches the header and event decoders behind the CRCs (a file handed over
//! by someone else can carry valid CRCs around any content).
#![no_main]

use libfuzzer_sys::fuzz_target;
use tracer::recording::{Recording, CHUNK_MAX, CHUNK_OVERHEAD, HEADER_MAX, MAGIC, SYNC};

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

fn le32(b: &[u8]) -> usize {
    u32::from_le_bytes(b[..4].try_into().unwrap()) as usize
}

fn fix_crcs(data: &mut [u8]) {
    if data.len() >= 16 && data[..8] == MAGIC {
        let len = le32(&data[12..]);
        let end = 16 + len;
        if len <= HEADER_MAX as usize && end + 4 <= data.len() {
            let crc = crc32fast::hash(&data[8..end]);
            data[end..end + 4].copy_from_slice(&crc.to_le_bytes());
        }
    }
    let mut pos = 0;
    while let Some(i) = find(&data[pos..], &SYNC) {
        let at = pos + i;
        pos = at + 1;
        if at + 16 <= data.len() {
            let len = le32(&data[at + 8..]);
            let end = at + 16 + len;
            if len <= CHUNK_MAX as usize && end + 4 <= data.len() {
                let crc = crc32fast::hash(&data[at + 8..end]);
                data[end..end + 4].copy_from_slice(&crc.to_le_bytes());
                pos = end + 4;
            }
        }
    }
}

fn check(input: &[u8]) {
    let Ok(r) = Recording::parse(bytes::Bytes::copy_from_slice(input), "fuzz.aptr") else {
        return;
    };
    let mut warnings = Vec::new();
    let events = r.events(&mut warnings);
    // Whole chunks that decode give all their events; one that stops decoding gives those
    // before the fault, and a warning.
    let decodes: Vec<bool> = r.chunks.iter().map(|c| c.events().is_ok()).collect();
    let whole: u64 = r
        .chunks
        .iter()
        .zip(&decodes)
        .filter(|(_, ok)| **ok)
        .map(|(c, _)| u64::from(c.count))
        .sum();
    let claimed: u64 = r.chunks.iter().map(|c| u64::from(c.count)).sum();
    assert!(whole <= events.len() as u64 && events.len() as u64 <= claimed);
    let faulty = decodes.iter().filter(|ok| !**ok).count();
    assert_eq!(
        warnings
            .iter()
            .filter(|w| w.contains("does not decode"))
            .count(),
        faulty
    );

    // Chunks lie inside the file, in order, without overlapping.
    let mut last_end = 8u64;
    let mut chunk_bytes = 0u64;
    for c in &r.chunks {
        assert!(c.offset >= last_end, "chunks overlap");
        last_end = c.offset + (CHUNK_OVERHEAD + c.payload.len()) as u64;
        chunk_bytes += (CHUNK_OVERHEAD + c.payload.len()) as u64;
        assert!(last_end <= input.len() as u64);
    }
    // The end marker, if any, comes after every chunk.
    let end_bytes = match &r.end {
        Some(m) => {
            assert!(m.offset >= last_end, "the end marker precedes a chunk");
            assert!(m.offset + m.bytes <= input.len() as u64);
            m.bytes
        }
        None => 0,
    };
    // Every byte is accounted for exactly once: magic, header, whole chunks, end marker,
    // skipped bytes.
    // So "N bytes skipped" is exact.
    let skipped: u64 = r.damage.iter().map(|d| d.bytes).sum();
    for d in &r.damage {
        assert!(d.offset + d.bytes <= input.len() as u64, "{d:?}");
    }
    let header_damaged = r.damage.iter().any(|d| d.offset == 8 && d.bytes == 0);
    let header_bytes = if header_damaged || input.len() < 16 {
        0
    } else {
        (16 + le32(&input[12..]) + 4 - 8) as u64
    };
    assert_eq!(
        8 + header_bytes + chunk_bytes + end_bytes + skipped,
        input.len() as u64,
        "bytes not accounted for: damage {:?}",
        r.damage
    );
    assert_eq!(r.intact(), r.damage.is_empty());
}

fuzz_target!(|data: &[u8]| {
    if let Some(rest) = data.strip_prefix(b"F") {
        let mut buf = rest.to_vec();
        fix_crcs(&mut buf);
        check(&buf);
    } else {
        check(data);
    }
});
