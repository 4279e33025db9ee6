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

#[test]
fn round_trip_keeps_header_and_every_event() {
    let (data, evs) = sample(2000);
    let (r, back) = read(&data);
    assert_eq!(r.header, header());
    assert!(r.intact());
    assert!(r.warnings.is_empty());
    assert_eq!(back, evs);
}

#[test]
fn a_cut_at_any_byte_yields_every_whole_chunk_before_it() {
    let (data, evs) = sample(400);
    let header_end = {
        let len = u32::from_le_bytes(data[12..16].try_into().unwrap()) as usize;
        16 + len + 4
    };
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
        if cut > header_end && cut < data.len() {
            let ends_on_boundary = r
                .chunks
                .last()
                .map(|c| c.offset as usize + CHUNK_OVERHEAD + c.payload.len() == cut)
                .unwrap_or(cut == header_end);
            if !ends_on_boundary {
                assert!(!r.intact(), "cut {cut} mid-chunk must be reported");
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
