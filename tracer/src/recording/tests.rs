use super::*;
use crate::synth::Generator;

fn header() -> Header {
    Header {
        arch: "s390x".into(),
        kernel_release: "6.12.57+deb13-s390x".into(),
        hostname: "lpar7".into(),
        boot_to_wall_ns: 1_764_000_000_000_000_000,
        module: "vfio_ap".into(),
        symbols: vec![Symbol {
            addr: 0x3ff_8000_1000,
            size: 0x120,
            name: "vfio_ap_mdev_probe".into(),
        }],
        profile: crate::profile::Profile::vfio_ap().to_toml(),
        probes: vec![ProbeStatus {
            name: "vfio_ap_transition_to_state".into(),
            state: ProbeState::Missing,
            detail: "not in kallsyms".into(),
        }],
        writer: "aptrace test".into(),
        source_damage: Vec::new(),
        guest: Some("vm1".into()),
    }
}

/// A recording of `n` events in small chunks (so damage tests have many chunks).
fn sample(n: usize) -> (Vec<u8>, Vec<Event>) {
    let evs = Generator::new(3).stream(n);
    let mut w = Writer::new(Vec::new(), &header()).unwrap();
    for (i, e) in evs.iter().enumerate() {
        w.push(e).unwrap();
        if i % 50 == 49 {
            w.flush_chunk().unwrap();
        }
    }
    (w.finish().unwrap(), evs)
}

fn read(data: &[u8]) -> (Recording, Vec<Event>) {
    let r = Recording::parse(bytes::Bytes::copy_from_slice(data), "test.aptr").unwrap();
    let mut w = Vec::new();
    let evs = r.events(&mut w);
    assert!(w.is_empty(), "{w:?}");
    (r, evs)
}

/// Bytes of the end marker a writer appends: a chunk of no events around its payload.
const END_BYTES: usize = CHUNK_OVERHEAD + END_PAYLOAD;

fn header_end(data: &[u8]) -> usize {
    16 + u32::from_le_bytes(data[12..16].try_into().unwrap()) as usize + 4
}

#[test]
fn round_trip_keeps_header_and_every_event() {
    let (data, evs) = sample(2000);
    let (r, back) = read(&data);
    assert_eq!(r.header, header());
    assert_eq!(r.version, (VERSION_MAJOR, VERSION_MINOR));
    assert!(r.intact());
    assert!(r.warnings.is_empty());
    assert_eq!(back, evs);
}

#[test]
fn a_finished_recording_ends_with_a_marker_counting_what_was_written() {
    let (data, evs) = sample(2000);
    let (r, _) = read(&data);
    let end = r.end.clone().expect("an end marker");
    assert_eq!(end.offset as usize, data.len() - END_BYTES);
    assert_eq!(end.bytes as usize, END_BYTES);
    assert_eq!(end.events, evs.len() as u64);
    assert_eq!(end.chunks, r.chunks.len() as u64);
    // The marker is an ordinary chunk of no events, so a 1.0 reader passes over it.
    let m = &data[end.offset as usize..];
    assert_eq!(m[..8], SYNC);
    assert_eq!(m[8..12], (END_PAYLOAD as u32).to_le_bytes());
    assert_eq!(m[12..16], 0u32.to_le_bytes());
    assert_eq!(m[16..24], END_TAG);

    // A recording of no events still says it was finished.
    let empty = Writer::new(Vec::new(), &header())
        .unwrap()
        .finish()
        .unwrap();
    let (r, back) = read(&empty);
    assert!(back.is_empty() && r.intact(), "{:?}", r.damage);
    let end = r.end.expect("an end marker");
    assert_eq!((end.events, end.chunks), (0, 0));
}

/// What a SIGKILL at a chunk boundary leaves (the writer syncs every chunk it writes): every
/// chunk before the cut, no end marker. It must not read as a finished recording.
#[test]
fn a_recording_cut_at_a_chunk_boundary_says_its_writer_did_not_finish() {
    let (data, evs) = sample(400);
    let (whole, _) = read(&data);
    let mut boundaries = vec![header_end(&data)];
    boundaries.extend(
        whole
            .chunks
            .iter()
            .map(|c| c.offset as usize + CHUNK_OVERHEAD + c.payload.len()),
    );
    assert!(boundaries.len() >= 9, "a chunk per 50 events at least");
    assert_eq!(*boundaries.last().unwrap(), data.len() - END_BYTES);
    for (k, &cut) in boundaries.iter().enumerate() {
        let (r, back) = read(&data[..cut]);
        let kept: u32 = whole.chunks[..k].iter().map(|c| c.count).sum();
        assert_eq!(r.chunks.len(), k, "cut {cut}");
        assert_eq!(back[..], evs[..kept as usize], "cut {cut}");
        assert!(r.end.is_none(), "cut {cut}");
        assert!(
            !r.intact(),
            "cut {cut} at a chunk boundary must be reported"
        );
        assert_eq!(
            r.damage,
            vec![Damage {
                offset: cut as u64,
                bytes: 0,
                reason: "no end marker: the writer did not finish".into(),
            }],
            "cut {cut}"
        );
        assert_eq!(
            r.warnings,
            vec!["test.aptr: the recording has no end marker: its writer stopped without finishing it (killed?); events after the last whole chunk are lost".to_string()],
            "cut {cut}"
        );
    }
}

#[test]
fn end_marker_counts_that_disagree_with_the_chunks_are_reported() {
    let (data, evs) = sample(400);
    let (whole, _) = read(&data);
    // The third chunk removed whole: every CRC is still good, only the counts tell.
    let c = &whole.chunks[2];
    let (a, b) = (
        c.offset as usize,
        c.offset as usize + CHUNK_OVERHEAD + c.payload.len(),
    );
    let spliced = [&data[..a], &data[b..]].concat();
    let r = Recording::parse(bytes::Bytes::from(spliced), "spliced.aptr").unwrap();
    let mut w = Vec::new();
    assert_eq!(r.events(&mut w).len(), evs.len() - c.count as usize);
    assert!(!r.intact());
    assert_eq!(r.damage.len(), 1, "{:?}", r.damage);
    assert_eq!(r.damage[0].bytes, 0);
    assert_eq!(r.damage[0].offset, r.end.as_ref().unwrap().offset);
    let said = format!(
        "spliced.aptr: the end marker says {} event(s) in {} chunk(s) were written; {} event(s) in {} chunk(s) were read before it",
        evs.len(),
        whole.chunks.len(),
        evs.len() - c.count as usize,
        whole.chunks.len() - 1
    );
    assert!(r.warnings.contains(&said), "{:?}", r.warnings);

    // A marker whose own counts are wrong (CRC recomputed): events, then chunks.
    let at = data.len() - END_BYTES;
    for (field, value) in [(24, 401u64), (32, 9u64)] {
        let mut bad = data.clone();
        bad[at + field..at + field + 8].copy_from_slice(&value.to_le_bytes());
        let crc = crc32fast::hash(&bad[at + 8..data.len() - 4]);
        let n = bad.len();
        bad[n - 4..].copy_from_slice(&crc.to_le_bytes());
        let r = Recording::parse(bytes::Bytes::from(bad), "lying.aptr").unwrap();
        assert!(r.end.is_some() && !r.intact(), "field {field}");
        assert!(
            r.warnings.iter().any(|w| w.contains("the end marker says")),
            "field {field}: {:?}",
            r.warnings
        );
    }
}

#[test]
fn bytes_after_the_end_marker_are_reported_not_read() {
    let (data, evs) = sample(200);
    let chunks = read(&data).0.chunks.len();
    let (second, _) = sample(100);
    // Junk, and a second recording's chunks: neither is part of the finished recording.
    for tail in [&b"\0\0\0\0 padding"[..], &second[header_end(&second)..]] {
        let mut bad = data.clone();
        bad.extend_from_slice(tail);
        let r = Recording::parse(bytes::Bytes::from(bad), "trailing.aptr").unwrap();
        let mut w = Vec::new();
        assert_eq!(r.events(&mut w), evs);
        assert_eq!(
            r.damage,
            vec![Damage {
                offset: data.len() as u64,
                bytes: tail.len() as u64,
                reason: "after the end marker: not part of the finished recording".into(),
            }]
        );
        assert!(
            r.warnings.iter().any(|w| w.contains(&format!(
                "{} bytes skipped; {chunks} whole chunk(s) recovered",
                tail.len()
            ))),
            "{:?}",
            r.warnings
        );
    }
}

/// Format 1.0 had no end marker: a 1.0 recording that ends on a chunk boundary is read as
/// complete, as it always was.
#[test]
fn a_version_1_0_recording_needs_no_end_marker() {
    let (data, evs) = sample(200);
    let mut v1_0 = data[..data.len() - END_BYTES].to_vec();
    v1_0[10..12].copy_from_slice(&0u16.to_le_bytes());
    let end = header_end(&v1_0) - 4;
    let crc = crc32fast::hash(&v1_0[8..end]);
    v1_0[end..end + 4].copy_from_slice(&crc.to_le_bytes());
    let (r, back) = read(&v1_0);
    assert_eq!(r.version, (1, 0));
    assert!(r.intact() && r.warnings.is_empty(), "{:?}", r.warnings);
    assert!(r.end.is_none());
    assert_eq!(back, evs);
}

#[test]
fn a_cut_at_any_byte_yields_every_whole_chunk_before_it() {
    let (data, evs) = sample(400);
    let header_end = header_end(&data);
    for cut in 0..data.len() {
        let r = Recording::parse(bytes::Bytes::copy_from_slice(&data[..cut]), "cut.aptr");
        if cut < 8 {
            assert!(r.is_err(), "cut {cut}");
            continue;
        }
        let r = r.unwrap();
        let mut w = Vec::new();
        let back = r.events(&mut w);
        // Every event recovered is a prefix of the original.
        assert_eq!(&evs[..back.len()], &back[..], "cut {cut}");
        // Chunks end at known positions: everything that ended before the cut is there.
        let whole: usize = r.chunks.iter().map(|c| c.count as usize).sum();
        assert_eq!(whole, back.len());
        // Whatever the cut, the end marker is gone: no cut reads as a finished recording.
        assert!(!r.intact(), "cut {cut} must be reported");
        if cut >= header_end {
            assert!(
                r.warnings.iter().any(|w| w.contains("has no end marker")),
                "cut {cut}: {:?}",
                r.warnings
            );
            let ends_on_boundary = r
                .chunks
                .last()
                .map(|c| c.offset as usize + CHUNK_OVERHEAD + c.payload.len() == cut)
                .unwrap_or(cut == header_end);
            if !ends_on_boundary {
                assert!(
                    r.warnings.iter().any(|w| w.contains("bytes skipped")),
                    "{:?}",
                    r.warnings
                );
            }
        }
    }
}

#[test]
fn a_flipped_byte_anywhere_loses_at_most_the_chunk_it_hits() {
    let (data, evs) = sample(300);
    let chunk_count = Recording::parse(bytes::Bytes::copy_from_slice(&data), "x")
        .unwrap()
        .chunks
        .len();
    for at in 8..data.len() {
        let mut bad = data.clone();
        bad[at] ^= 0x5a;
        let r = match Recording::parse(bytes::Bytes::from(bad), "flip.aptr") {
            Ok(r) => r,
            Err(ReadError::UnknownMajor { .. }) if (8..10).contains(&at) => continue,
            Err(e) => panic!("flip at {at}: {e}"),
        };
        let mut w = Vec::new();
        let back = r.events(&mut w);
        assert!(
            w.is_empty(),
            "flip at {at}: a chunk passed CRC but failed to decode: {w:?}"
        );
        assert!(
            r.chunks.len() + 1 >= chunk_count,
            "flip at {at} lost more than one chunk"
        );
        assert!(
            !r.intact() || back == evs,
            "flip at {at} changed events silently"
        );
        // Every recovered event is one of the originals, in order.
        let mut it = evs.iter();
        for e in &back {
            assert!(
                it.any(|o| o == e),
                "flip at {at} produced an event never written"
            );
        }
    }
}

#[test]
fn a_flipped_length_byte_does_not_desynchronize_the_rest() {
    let (data, evs) = sample(300);
    let r0 = Recording::parse(bytes::Bytes::copy_from_slice(&data), "x").unwrap();
    let second = r0.chunks[1].offset as usize;
    let mut bad = data.clone();
    bad[second + 8 + 2] ^= 0x01; // the length's third byte: claims 64 KiB more
    let r = Recording::parse(bytes::Bytes::from(bad), "len.aptr").unwrap();
    let mut w = Vec::new();
    let back = r.events(&mut w);
    assert_eq!(r.chunks.len(), r0.chunks.len() - 1);
    assert_eq!(back.len(), evs.len() - r0.chunks[1].count as usize);
    assert!(!r.intact());
}

#[test]
fn unknown_major_is_refused_and_newer_minor_is_read_with_a_warning() {
    let mut v2 = Vec::new();
    Writer::new_with_version(&mut v2, &header(), 2, 0).unwrap();
    let err = Recording::parse(bytes::Bytes::from(v2), "future.aptr").unwrap_err();
    let msg = err.to_string();
    assert!(
        msg.contains("future.aptr") && msg.contains("2.0") && msg.contains("upgrade"),
        "{msg}"
    );

    let mut v1_9 = Vec::new();
    Writer::new_with_version(&mut v1_9, &header(), 1, 9).unwrap();
    let r = Recording::parse(bytes::Bytes::from(v1_9), "minor.aptr").unwrap();
    assert_eq!(r.header, header());
    assert!(r.warnings[0].contains("1.9 is newer"), "{:?}", r.warnings);
}

#[test]
fn a_damaged_header_still_yields_the_events() {
    let (mut data, evs) = sample(200);
    data[20] ^= 0xff;
    let r = Recording::parse(bytes::Bytes::from(data), "hdr.aptr").unwrap();
    let mut w = Vec::new();
    assert_eq!(r.events(&mut w), evs);
    assert!(!r.intact());
    assert!(r.warnings.iter().any(|w| w.contains("header is damaged")));
}

#[test]
fn not_a_recording_is_a_clear_error() {
    let err = Recording::parse(bytes::Bytes::from_static(b"hello world"), "notes.txt").unwrap_err();
    assert!(err
        .to_string()
        .contains("notes.txt: not an aptrace recording"));
}

/// Written by `aptrace import` built for s390x-unknown-linux-gnu and run under qemu-s390x
/// (a big-endian host): see tests/fixtures/README.md.
#[test]
fn a_recording_from_a_big_endian_host_reads_here() {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/fixtures/written-on-s390x.aptr"
    );
    let r = Recording::open(std::path::Path::new(path)).unwrap();
    assert!(r.intact());
    let mut w = Vec::new();
    let evs = r.events(&mut w);
    let expected = crate::jsonl::read_jsonl(
        std::fs::read_to_string(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/tests/fixtures/written-on-s390x.jsonl"
        ))
        .unwrap()
        .as_bytes(),
        "fixture",
    )
    .unwrap();
    assert_eq!(evs, expected.events);
    assert_eq!(r.header.arch, "s390x");
}

#[test]
fn a_file_that_ends_inside_the_header_counts_its_bytes_once() {
    let (data, _) = sample(10);
    for cut in 8..16 {
        let r = Recording::parse(bytes::Bytes::copy_from_slice(&data[..cut]), "h.aptr").unwrap();
        let skipped: u64 = r.damage.iter().map(|d| d.bytes).sum();
        assert_eq!(skipped, (cut - 8) as u64, "cut {cut}: {:?}", r.damage);
    }
}

#[test]
fn a_lying_event_count_neither_allocates_nor_hangs() {
    // A chunk with a valid CRC that claims 4 billion events in 20 bytes.
    let c = Chunk {
        offset: 0,
        count: u32::MAX,
        payload: bytes::Bytes::from_static(&[1u8; 20]),
    };
    assert!(c.events().is_err());
}

/// A crafted file of chunk markers, each claiming a length that reaches far ahead: before
/// resynchronization used prefix CRCs, every marker cost a CRC over megabytes (quadratic:
/// hours for a 16 MiB file).
#[test]
fn resynchronizing_over_many_lying_markers_is_linear() {
    let (finished, evs) = sample(100);
    // Without its end marker, so that the reader goes on to the junk.
    let good = finished[..finished.len() - END_BYTES].to_vec();
    let mut data = good.clone();
    let fake = 4 << 20;
    for _ in 0..fake / 20 {
        data.extend_from_slice(&SYNC);
        data.extend_from_slice(&(3u32 << 20).to_le_bytes());
        data.extend_from_slice(&1u32.to_le_bytes());
        data.extend_from_slice(&[0u8; 4]);
    }
    // a good chunk after the junk is still found
    let tail_start = data.len();
    let mut w = Writer::new(Vec::new(), &header()).unwrap();
    for e in &evs[..10] {
        w.push(e).unwrap();
    }
    let tail = w.finish().unwrap();
    let hdr_len = 16 + u32::from_le_bytes(tail[12..16].try_into().unwrap()) as usize + 4;
    data.extend_from_slice(&tail[hdr_len..]);
    let t = std::time::Instant::now();
    let r = Recording::parse(bytes::Bytes::from(data), "markers.aptr").unwrap();
    assert!(
        t.elapsed() < std::time::Duration::from_secs(30),
        "{:?}",
        t.elapsed()
    );
    assert_eq!(r.chunks.last().unwrap().offset as usize, tail_start);
    // The junk, then the tail's end marker, which counts only the tail's events.
    assert_eq!(r.damage.len(), 2, "{:?}", r.damage);
    assert_eq!(r.damage[0].offset as usize, good.len());
    assert_eq!(r.damage[0].bytes as usize, tail_start - good.len());
    assert_eq!(r.damage[1].bytes, 0);
}

#[test]
fn range_crcs_equal_direct_crcs() {
    let data: Vec<u8> = (0..5000u32).map(|i| (i * 7 + i / 13) as u8).collect();
    let r = RangeCrc::new(&data);
    for (a, b) in [
        (0, 0),
        (0, 5000),
        (1, 1024),
        (1023, 1025),
        (1024, 2048),
        (17, 4999),
        (4096, 5000),
    ] {
        assert_eq!(r.crc(&data, a, b), crc32fast::hash(&data[a..b]), "{a}..{b}");
    }
}

/// The header body's fields as (tag, value), as any reader walks them.
fn fields(body: &[u8]) -> Vec<(u16, Vec<u8>)> {
    let mut b = body;
    let mut out = Vec::new();
    while b.len() >= 6 {
        let t = b.get_u16_le();
        let n = b.get_u32_le() as usize;
        out.push((t, b[..n].to_vec()));
        b.advance(n);
    }
    out
}

#[test]
fn an_imported_sources_damage_rides_the_header_and_makes_the_copy_incomplete() {
    let mut h = header();
    h.source_damage = vec![Damage {
        offset: 4096,
        bytes: 812,
        reason: "chunk CRC mismatch".into(),
    }];
    let mut w = Writer::new(Vec::new(), &h).unwrap();
    for e in Generator::new(3).stream(20) {
        w.push(&e).unwrap();
    }
    let r = Recording::parse(w.finish().unwrap().into(), "copy.aptr").unwrap();
    assert_eq!(r.version, (VERSION_MAJOR, VERSION_MINOR));
    assert_eq!(r.header, h);
    assert!(!r.intact());
    assert_eq!(r.damage, h.source_damage, "listed once, as the source said");
    assert!(
        r.warnings
            .iter()
            .any(|w| w.contains("imported from an incomplete source") && w.contains("812 bytes")),
        "{:?}",
        r.warnings
    );
}

#[test]
fn finishing_unmarked_reads_as_a_recording_without_end_marker() {
    let mut w = Writer::new(Vec::new(), &header()).unwrap();
    for e in Generator::new(3).stream(20) {
        w.push(&e).unwrap();
    }
    let r = Recording::parse(w.finish_unmarked().unwrap().into(), "u.aptr").unwrap();
    assert!(r.end.is_none());
    assert_eq!(r.damage.len(), 1);
    assert_eq!(r.damage[0].reason, NO_END_MARKER);
}

#[test]
fn a_degraded_probe_reads_back_degraded_and_as_attached_to_a_1_1_reader() {
    let mut h = header();
    h.probes.push(ProbeStatus {
        name: "vfio_ap_mdev_open_device".into(),
        state: ProbeState::Degraded,
        detail: "no offset of vfio_device.mig_data: leaks cannot be detected".into(),
    });
    let body = h.encode();
    let mut warnings = Vec::new();
    assert_eq!(Header::decode(&body, &mut warnings), h);
    // A 1.1 reader knows tags 1 to 9 only and maps state codes 0-3: the probe reads attached.
    let old: Vec<u8> = fields(&body)
        .into_iter()
        .filter(|(t, _)| *t <= tag::WRITER)
        .flat_map(|(t, v)| {
            let mut f = t.to_le_bytes().to_vec();
            f.extend((v.len() as u32).to_le_bytes());
            f.extend(v);
            f
        })
        .collect();
    let back = Header::decode(&old, &mut warnings);
    assert_eq!(back.probes[1].state, ProbeState::Attached);
    assert_eq!(back.probes[1].detail, h.probes[1].detail);
    assert!(warnings.is_empty(), "{warnings:?}");
}

#[test]
fn recordings_of_1_0_and_1_1_still_read() {
    for minor in [0u16, 1] {
        let mut out = Vec::new();
        Writer::new_with_version(&mut out, &header(), 1, minor).unwrap();
        let r = Recording::parse(out.into(), "old.aptr").unwrap();
        assert_eq!(r.version, (1, minor));
        assert_eq!(r.header, header());
        assert!(r.header.source_damage.is_empty());
    }
}

/// A chunk whose CRC holds but whose events stop decoding part way (a writer's bug, or a
/// newer writer): the events before the fault are read, the rest of that chunk only is lost.
#[test]
fn a_chunk_that_stops_decoding_keeps_the_events_before_the_fault() {
    let (data, evs) = sample(200);
    let (mut r, _) = read(&data);
    // The second chunk claims one event more than its payload holds.
    let n = r.chunks[1].count;
    r.chunks[1].count += 1;
    let mut w = Vec::new();
    assert_eq!(r.events(&mut w), evs, "every event written is read");
    assert_eq!(w.len(), 1, "{w:?}");
    let said = format!("read {n} of its {} events, skipped the other 1", n + 1);
    assert!(w[0].contains(&said), "{w:?}");
    // Cut part way through its payload instead: what precedes the cut is kept, in order.
    let (mut r, _) = read(&data);
    let c = &mut r.chunks[1];
    c.payload = c.payload.slice(..c.payload.len() / 2);
    let mut w = Vec::new();
    let back = r.events(&mut w);
    let first = r.chunks[0].count as usize;
    let after = r.chunks[2..]
        .iter()
        .map(|c| c.count as usize)
        .sum::<usize>();
    let kept = back.len() - first - after;
    assert!(kept > 0 && kept < n as usize, "kept {kept} of {n}");
    assert_eq!(back[..first + kept], evs[..first + kept]);
    assert_eq!(back[first + kept..], evs[first + n as usize..]);
    assert_eq!(w.len(), 1, "{w:?}");
}
