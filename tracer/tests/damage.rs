//! Damaged recordings through the `aptrace report` a user runs: cut at many points, a byte
//! flipped in every part of every chunk, a damaged header, unknown major and newer minor
//! versions, a recording whose writer was killed (no end marker). Each case checks the exit
//! code, `complete`, the exact bytes skipped (in the JSON and in the warning's wording) and
//! that nothing panicked.
//!
//! The layout of the sample is read here independently of the reader under test.

mod common;

use common::{aptrace, root};

use std::path::{Path, PathBuf};

use serde_json::Value;

/// A format 1.0 recording (no end marker), as shipped.
const SAMPLE: &str = "samples/synthetic-mixed.aptr";
const SYNC: [u8; 8] = *b"\xf5\x0bAPCHK\x9e";

fn le32(b: &[u8]) -> usize {
    u32::from_le_bytes(b[..4].try_into().unwrap()) as usize
}

/// Where the header ends and each chunk lies: (offset, total size, event count).
struct Layout {
    header_end: usize,
    chunks: Vec<(usize, usize, u64)>,
}

fn layout(data: &[u8]) -> Layout {
    let header_end = 16 + le32(&data[12..]) + 4;
    let mut chunks = Vec::new();
    let mut pos = header_end;
    while pos < data.len() {
        assert_eq!(data[pos..pos + 8], SYNC, "sample chunk at {pos}");
        let size = 16 + le32(&data[pos + 8..]) + 4;
        chunks.push((pos, size, le32(&data[pos + 12..]) as u64));
        pos += size;
    }
    assert_eq!(pos, data.len());
    Layout { header_end, chunks }
}

/// A chunk of no events around `payload`: how the end marker is framed.
fn end_chunk(payload: &[u8]) -> Vec<u8> {
    let mut c = SYNC.to_vec();
    c.extend_from_slice(&(payload.len() as u32).to_le_bytes());
    c.extend_from_slice(&0u32.to_le_bytes());
    c.extend_from_slice(payload);
    let crc = common::crc32(&c[8..]);
    c.extend_from_slice(&crc.to_le_bytes());
    c
}

/// Rewrites the header's CRC after editing it.
fn fix_header_crc(data: &mut [u8]) {
    let end = 16 + le32(&data[12..]);
    let crc = common::crc32(&data[8..end]);
    data[end..end + 4].copy_from_slice(&crc.to_le_bytes());
}

struct Run {
    code: i32,
    json: Value,
    stderr: String,
}

fn report_json(dir: &Path, name: &str, data: &[u8]) -> Run {
    let file = dir.join(name);
    std::fs::write(&file, data).unwrap();
    let out = aptrace(&["report", "--format", "json", file.to_str().unwrap()]);
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    let code = out
        .status
        .code()
        .unwrap_or_else(|| panic!("{name}: killed by a signal; stderr: {stderr}"));
    assert!(!stderr.contains("panicked"), "{name}: {stderr}");
    let json = if code == 2 {
        Value::Null
    } else {
        serde_json::from_slice(&out.stdout)
            .unwrap_or_else(|e| panic!("{name}: stdout is not JSON ({e}); stderr: {stderr}"))
    };
    Run { code, json, stderr }
}

/// The exit status agrees with the report: 1 with a finding other than `events-lost`, else 3
/// when incomplete, else 0; 2 (nothing readable) has no report at all.
fn assert_status(run: &Run, what: &str) {
    if run.code == 2 {
        assert!(
            run.stderr.contains("no readable event"),
            "{what}: exit 2 must name the unreadable input: {}",
            run.stderr
        );
        return;
    }
    let by_kind = run.json["summary"]["findings_by_kind"].as_object().unwrap();
    let found = by_kind.keys().any(|k| k != "events-lost");
    let want = if found {
        1
    } else if run.json["complete"] == false {
        3
    } else {
        0
    };
    assert_eq!(run.code, want, "{what}: {}", run.stderr);
}

fn skipped(run: &Run) -> u64 {
    run.json["sources"][0]["damage"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["bytes"].as_u64().unwrap())
        .sum()
}

/// The report's top level: `complete`, `summary`, `findings` (one file per report here).
fn file0(run: &Run) -> &Value {
    &run.json
}

/// What the report says about its one source: damage, warnings, version, header fields.
fn source(run: &Run) -> &Value {
    &run.json["sources"][0]
}

fn sample() -> (Vec<u8>, Layout, Run, tempfile::TempDir) {
    let data = std::fs::read(root().join(SAMPLE)).unwrap();
    let l = layout(&data);
    assert!(l.chunks.len() >= 5, "the sample needs several chunks");
    let dir = tempfile::tempdir().unwrap();
    let whole = report_json(dir.path(), "whole.aptr", &data);
    assert_eq!(whole.code, 1);
    assert_eq!(file0(&whole)["complete"], true);
    (data, l, whole, dir)
}

#[test]
fn a_cut_anywhere_recovers_every_whole_chunk_and_says_exactly_what_was_skipped() {
    let (data, l, _, dir) = sample();
    let mut cuts: Vec<usize> = vec![8, 9, 12, 15, 16, 17, 40, l.header_end - 1, l.header_end];
    for &(off, size, _) in &l.chunks {
        cuts.extend([
            off + 1,
            off + 7,
            off + 8,
            off + 15,
            off + 16,
            off + size / 2,
        ]);
        cuts.extend([off + size - 4, off + size - 1, off + size]);
    }
    cuts.extend((1..24).map(|i| 8 + i * (data.len() - 8) / 24));
    cuts.sort_unstable();
    cuts.dedup();
    cuts.retain(|&c| c <= data.len());
    for cut in cuts {
        let run = report_json(dir.path(), &format!("cut-{cut}.aptr"), &data[..cut]);
        let whole: Vec<_> = l.chunks.iter().filter(|c| c.0 + c.1 <= cut).collect();
        let kept_to = whole.last().map(|c| c.0 + c.1).unwrap_or(l.header_end);
        let events: u64 = whole.iter().map(|c| c.2).sum();
        assert_status(&run, &format!("cut {cut}"));
        if cut < l.header_end {
            // The header is gone: everything after the magic is skipped, no events: nothing
            // to audit (exit 2), and the reader says what it skipped.
            assert_eq!(run.code, 2, "cut {cut}: {}", run.stderr);
            assert!(
                cut == 8
                    || run.stderr.contains(&format!(
                        "{} bytes skipped; 0 whole chunk(s) recovered",
                        cut - 8
                    )),
                "cut {cut}: {}",
                run.stderr
            );
            continue;
        }
        if events == 0 {
            // Inside the first chunk: no whole chunk, nothing to audit.
            assert_eq!(run.code, 2, "cut {cut}: {}", run.stderr);
            continue;
        }
        let f = file0(&run);
        assert_eq!(f["summary"]["events"], events, "cut {cut}");
        if cut == kept_to {
            // Cut exactly between chunks of a 1.0 recording (which has no end marker): nothing
            // tells it from a recording that ended. 1.1 tells: see the writer-killed test.
            assert_eq!(f["complete"], true, "cut {cut}");
            assert_eq!(skipped(&run), 0, "cut {cut}");
        } else {
            let lost = cut - kept_to;
            assert_eq!(f["complete"], false, "cut {cut}");
            assert_eq!(skipped(&run), lost as u64, "cut {cut}");
            let wording = format!(
                "1 damaged region(s), {lost} bytes skipped; {} whole chunk(s) recovered: \
                 {lost} bytes at offset {kept_to} (",
                whole.len()
            );
            assert!(
                run.stderr.contains(&wording),
                "cut {cut}: want {wording:?} in {}",
                run.stderr
            );
            let w = source(&run)["warnings"].as_array().unwrap();
            assert!(
                w.iter().any(|w| w.as_str().unwrap().contains(&wording)),
                "cut {cut}: the report's warnings lack {wording:?}"
            );
        }
    }
}

#[test]
fn a_flipped_byte_in_any_part_of_a_chunk_loses_exactly_that_chunk() {
    let (data, l, whole, dir) = sample();
    let total = file0(&whole)["summary"]["events"].as_u64().unwrap();
    let n = l.chunks.len();
    for (k, &(off, size, count)) in l.chunks.iter().enumerate() {
        // sync marker, length (every byte), count, payload start/middle/end, CRC
        let parts = [
            0,
            7,
            8,
            9,
            10,
            11,
            12,
            15,
            16,
            16 + (size - 20) / 2,
            size - 5,
            size - 4,
            size - 1,
        ];
        for (i, p) in parts.into_iter().enumerate() {
            let at = off + p;
            let mut bad = data.clone();
            bad[at] ^= [0x01, 0x40, 0x80, 0xff][i % 4];
            let run = report_json(dir.path(), &format!("flip-{at}.aptr"), &bad);
            let f = file0(&run);
            assert_status(&run, &format!("flip at {at}"));
            assert_eq!(f["complete"], false, "flip at {at}");
            let damage = source(&run)["damage"].as_array().unwrap();
            assert_eq!(damage.len(), 1, "flip at {at}: {damage:?}");
            assert_eq!(damage[0]["offset"], off as u64, "flip at {at}");
            assert_eq!(damage[0]["bytes"], size as u64, "flip at {at}");
            let wording = format!(
                "1 damaged region(s), {size} bytes skipped; {} whole chunk(s) recovered: \
                 {size} bytes at offset {off} (",
                n - 1
            );
            assert!(
                run.stderr.contains(&wording),
                "flip at {at}: want {wording:?} in {}",
                run.stderr
            );
            // The chunk's events are gone, the others are all there; a gap in the middle is
            // marked by one `lost` event so findings across it are uncertain.
            let gap = u64::from(k > 0 && k + 1 < n);
            assert_eq!(f["summary"]["events"], total - count + gap, "flip at {at}");
        }
    }
}

#[test]
fn a_damaged_header_loses_the_header_and_nothing_else() {
    let (data, l, whole, dir) = sample();
    let total = &file0(&whole)["summary"]["events"];
    let mut at = 8;
    while at < l.header_end {
        let mut bad = data.clone();
        bad[at] ^= 0x20;
        let run = report_json(dir.path(), &format!("hdr-{at}.aptr"), &bad);
        let f = file0(&run);
        assert_eq!(run.code, 1, "header flip at {at}: {}", run.stderr);
        assert_eq!(f["complete"], false, "header flip at {at}");
        assert_eq!(&f["summary"]["events"], total, "header flip at {at}");
        assert_eq!(
            skipped(&run),
            (l.header_end - 8) as u64,
            "header flip at {at}"
        );
        assert!(
            run.stderr.contains("the header is damaged (bad CRC or length); its host, kernel and symbols are unknown"),
            "header flip at {at}: {}",
            run.stderr
        );
        assert_eq!(source(&run)["arch"], "", "header flip at {at}");
        at += 1 + at / 7;
    }
    // A flipped magic: not a recording; read as JSON lines, it fails clearly naming the file.
    for at in [0, 3, 7] {
        let mut bad = data.clone();
        bad[at] ^= 0x02;
        let run = report_json(dir.path(), &format!("magic-{at}.aptr"), &bad);
        assert_eq!(run.code, 2, "magic flip at {at}");
        assert!(
            run.stderr.contains(&format!("magic-{at}.aptr")),
            "{}",
            run.stderr
        );
    }
}

#[test]
fn an_unknown_major_version_is_refused_with_exit_2() {
    let (data, _, _, dir) = sample();
    for major in [2u16, 9, 0x100, u16::MAX] {
        let mut v = data.clone();
        v[8..10].copy_from_slice(&major.to_le_bytes());
        v[10..12].copy_from_slice(&3u16.to_le_bytes());
        fix_header_crc(&mut v);
        let name = format!("major-{major}.aptr");
        let file = dir.path().join(&name);
        std::fs::write(&file, &v).unwrap();
        let out = aptrace(&["report", "--format", "json", file.to_str().unwrap()]);
        assert_eq!(out.status.code(), Some(2), "major {major}");
        assert!(out.stdout.is_empty(), "major {major}: no report");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(
            err.contains(&name)
                && err.contains(&format!("recording format version {major}.3 is newer than this aptrace reads (1.x); upgrade aptrace to read it")),
            "major {major}: {err}"
        );
    }
}

#[test]
fn a_newer_minor_version_is_read_as_far_as_known_with_a_warning() {
    let (data, l, whole, dir) = sample();
    let mut v = data.clone();
    v[10..12].copy_from_slice(&9u16.to_le_bytes());
    // A field this version does not know, as a newer minor version may add.
    let field: Vec<u8> = [&99u16.to_le_bytes()[..], &5u32.to_le_bytes()[..], b"later"].concat();
    let body_end = l.header_end - 4;
    v.splice(body_end..body_end, field.iter().copied());
    let len = le32(&v[12..]) + field.len();
    v[12..16].copy_from_slice(&(len as u32).to_le_bytes());
    fix_header_crc(&mut v);
    // Since 1.1 a finished recording ends with the end marker; a newer minor may add fields
    // to its payload, which this version skips.
    let events: u64 = l.chunks.iter().map(|c| c.2).sum();
    let payload = [
        &b"APTR-END"[..],
        &events.to_le_bytes(),
        &(l.chunks.len() as u64).to_le_bytes(),
        b"a later field",
    ]
    .concat();
    v.extend_from_slice(&end_chunk(&payload));
    let run = report_json(dir.path(), "minor.aptr", &v);
    assert_eq!(run.code, 1, "{}", run.stderr);
    let f = file0(&run);
    let w = "minor.aptr: format version 1.9 is newer than this aptrace (1.4); reading what this version knows";
    assert!(run.stderr.contains(w), "{}", run.stderr);
    assert!(source(&run)["warnings"]
        .as_array()
        .unwrap()
        .iter()
        .any(|x| x.as_str().unwrap().contains(w)));
    assert_eq!(source(&run)["format_version"], "1.9");
    // Known fields and every event are read: the same report as the original's.
    let o = file0(&whole);
    for key in [
        "arch",
        "kernel_release",
        "hostname",
        "module",
        "writer",
        "probes",
    ] {
        assert_eq!(source(&run)[key], source(&whole)[key], "{key}");
    }
    let strip = |v: &Value| {
        let mut v = v.clone();
        for f in v.as_array_mut().unwrap() {
            f.as_object_mut().unwrap().remove("source");
        }
        v
    };
    assert!(!o["findings"].as_array().unwrap().is_empty());
    assert_eq!(strip(&f["findings"]), strip(&o["findings"]));
    assert_eq!(f["summary"], o["summary"]);
    assert_eq!(f["complete"], true, "nothing was skipped");
}

/// Found by `cargo xtask fuzz`: a chunk with a valid CRC whose count claims billions of
/// events made the reader reserve gigabytes. Counts are capped by what each payload can hold.
#[test]
fn lying_chunk_counts_do_not_size_allocations() {
    use tracer::recording::{Recording, SYNC};
    let mut data = std::fs::read(root().join("samples/synthetic-clean.aptr")).unwrap();
    let honest = Recording::parse(bytes::Bytes::copy_from_slice(&data), "x").unwrap();
    let mut pos = 0;
    while let Some(i) = data[pos..].windows(8).position(|w| w == SYNC) {
        let at = pos + i;
        let len = u32::from_le_bytes(data[at + 8..at + 12].try_into().unwrap()) as usize;
        data[at + 12..at + 16].copy_from_slice(&u32::MAX.to_le_bytes());
        let end = at + 16 + len;
        let crc = crc32fast::hash(&data[at + 8..end]);
        data[end..end + 4].copy_from_slice(&crc.to_le_bytes());
        pos = end + 4;
    }
    let r = Recording::parse(bytes::Bytes::from(data), "lying.aptr").unwrap();
    assert_eq!(r.chunks.len(), honest.chunks.len());
    for c in &r.chunks {
        assert!(
            c.plausible_count() <= c.payload.len(),
            "count capped by the payload"
        );
    }
    let mut warnings = Vec::new();
    let evs = r.events(&mut warnings);
    // Every chunk runs out of bytes before its claimed count: the events it does hold are
    // read, and each chunk says how many it skipped.
    let mut honest_warnings = Vec::new();
    assert_eq!(evs, honest.events(&mut honest_warnings));
    assert_eq!(warnings.len(), r.chunks.len(), "{warnings:?}");
    for (w, c) in warnings.iter().zip(&honest.chunks) {
        assert!(
            w.contains(&format!("read {} of its {} events", c.count, u32::MAX)),
            "{w}"
        );
    }
}

const NOT_FINISHED: &str = "the recording has no end marker: its writer stopped without finishing it (killed?); events after the last whole chunk are lost";

/// The sample's events written again by this aptrace's writer into a file, the way the live
/// agent's recorder writes (a chunk synced at a time), and finished: a 1.1 recording.
fn written_by_this_writer(dir: &Path) -> Vec<u8> {
    use tracer::recording::{Recording, Writer};
    let old = Recording::open(&root().join(SAMPLE)).unwrap();
    let mut warnings = Vec::new();
    let events = old.events(&mut warnings);
    assert!(warnings.is_empty());
    let path = dir.join("written.aptr");
    let mut w = Writer::create(&path, &old.header, true).unwrap();
    for (i, e) in events.iter().enumerate() {
        w.push(e).unwrap();
        if i % 64 == 63 {
            w.flush_chunk().unwrap();
        }
    }
    w.finish().unwrap();
    std::fs::read(&path).unwrap()
}

/// The agent SIGKILLed leaves every chunk it synced and no end marker; cut exactly between
/// two chunks, only the missing marker tells that the recording was not finished.
#[test]
fn a_recording_whose_writer_was_killed_reads_as_incomplete_with_the_reason() {
    let dir = tempfile::tempdir().unwrap();
    let data = written_by_this_writer(dir.path());
    let l = layout(&data);
    // Read as a 1.0 reader reads chunks, the end marker is one more chunk, of no events.
    let &(marker, marker_size, marker_count) = l.chunks.last().unwrap();
    assert_eq!((marker_size, marker_count), (16 + 24 + 4, 0));
    assert_eq!(&data[marker + 16..marker + 24], b"APTR-END");
    assert!(l.chunks.len() >= 6, "the recording needs several chunks");

    let finished = report_json(dir.path(), "finished.aptr", &data);
    assert_eq!(finished.code, 1, "{}", finished.stderr);
    assert_eq!(file0(&finished)["complete"], true);
    assert_eq!(source(&finished)["format_version"], "1.4");
    assert_eq!(source(&finished)["damage"], serde_json::json!([]));
    assert!(
        !finished.stderr.contains("end marker"),
        "{}",
        finished.stderr
    );
    let total = file0(&finished)["summary"]["events"].as_u64().unwrap();
    assert_eq!(total, l.chunks.iter().map(|c| c.2).sum::<u64>());

    // Every chunk boundary (the header's end included), and byte offsets inside the header's
    // last bytes, inside chunks and inside the marker.
    let mut cuts = vec![l.header_end - 1, l.header_end];
    for &(off, size, _) in &l.chunks {
        cuts.extend([off + 3, off + size / 2, off + size - 1, off + size]);
    }
    cuts.retain(|&c| c < data.len());
    cuts.sort_unstable();
    cuts.dedup();
    for cut in cuts {
        let name = format!("killed-{cut}.aptr");
        let run = report_json(dir.path(), &name, &data[..cut]);
        assert_status(&run, &format!("cut {cut}"));
        if run.code == 2 {
            // Cut inside the header or the first chunk: no event to audit.
            assert!(
                run.stderr.contains("the header is damaged") || run.stderr.contains(NOT_FINISHED),
                "cut {cut}: {}",
                run.stderr
            );
            continue;
        }
        let f = file0(&run);
        assert_eq!(f["complete"], false, "cut {cut}");
        assert_eq!(source(&run)["complete"], false, "cut {cut}");
        if cut < l.header_end {
            // No header, so no version: the damaged header is what is reported.
            assert!(run.stderr.contains("the header is damaged"), "cut {cut}");
            continue;
        }
        let whole: Vec<_> = l.chunks.iter().filter(|c| c.0 + c.1 <= cut).collect();
        let kept_to = whole.last().map(|c| c.0 + c.1).unwrap_or(l.header_end);
        let events: u64 = whole.iter().map(|c| c.2).sum();
        assert_eq!(f["summary"]["events"], events, "cut {cut}");
        let damage = source(&run)["damage"].as_array().unwrap();
        let note = serde_json::json!({
            "offset": cut,
            "bytes": 0,
            "reason": "no end marker: the writer did not finish"
        });
        assert_eq!(damage.last(), Some(&note), "cut {cut}: {damage:?}");
        if cut == kept_to {
            assert_eq!(damage.len(), 1, "cut {cut}: {damage:?}");
        } else {
            assert_eq!(damage.len(), 2, "cut {cut}: {damage:?}");
            assert_eq!(damage[0]["offset"], kept_to as u64, "cut {cut}");
            assert_eq!(damage[0]["bytes"], (cut - kept_to) as u64, "cut {cut}");
        }
        let said = format!("{name}: {NOT_FINISHED}");
        assert!(run.stderr.contains(&said), "cut {cut}: {}", run.stderr);
        let w = source(&run)["warnings"].as_array().unwrap();
        assert!(
            w.iter().any(|w| w.as_str().unwrap().ends_with(&said)),
            "cut {cut}: the report's warnings lack the note: {w:?}"
        );
    }

    // The text and markdown reports say it too, among the source's warnings.
    let on_boundary = l.chunks[2].0;
    let file = dir.path().join("killed.aptr");
    std::fs::write(&file, &data[..on_boundary]).unwrap();
    for format in ["text", "markdown"] {
        let out = aptrace(&["report", "--format", format, file.to_str().unwrap()]);
        let text = String::from_utf8(out.stdout).unwrap();
        assert!(text.contains("complete: NO"), "{format}: {text}");
        assert!(
            text.contains("WARNING: ") && text.contains("has no end marker: its writer stopped"),
            "{format}: {text}"
        );
    }
}

#[test]
fn end_marker_counts_that_disagree_or_bytes_after_it_make_the_report_incomplete() {
    let dir = tempfile::tempdir().unwrap();
    let data = written_by_this_writer(dir.path());
    let l = layout(&data);
    let events: Vec<u64> = l.chunks.iter().map(|c| c.2).collect();
    let total: u64 = events.iter().sum();
    let n = l.chunks.len() - 1;

    // A whole chunk cut out: every CRC is good, the marker's counts tell.
    let (off, size, count) = l.chunks[1];
    let spliced = [&data[..off], &data[off + size..]].concat();
    let run = report_json(dir.path(), "spliced.aptr", &spliced);
    assert_eq!(file0(&run)["complete"], false);
    assert_eq!(
        file0(&run)["summary"]["events"],
        total - count + 1,
        "a lost event marks the gap"
    );
    let said = format!(
        "spliced.aptr: the end marker says {total} event(s) in {n} chunk(s) were written; {} event(s) in {} chunk(s) were read before it",
        total - count,
        n - 1
    );
    assert!(
        run.stderr.contains(&said),
        "want {said:?} in {}",
        run.stderr
    );
    let damage = source(&run)["damage"].as_array().unwrap();
    assert_eq!(damage.len(), 1, "{damage:?}");
    assert_eq!(damage[0]["offset"], (l.chunks[n].0 - size) as u64);
    assert_eq!(damage[0]["bytes"], 0);

    // Bytes after the marker: reported, never read as events.
    let mut trailing = data.clone();
    trailing.extend_from_slice(&data[l.chunks[0].0..l.chunks[0].0 + l.chunks[0].1]);
    let run = report_json(dir.path(), "trailing.aptr", &trailing);
    assert_eq!(file0(&run)["complete"], false);
    assert_eq!(file0(&run)["summary"]["events"], total);
    let damage = source(&run)["damage"].as_array().unwrap();
    assert_eq!(
        damage,
        &vec![serde_json::json!({
            "offset": data.len(),
            "bytes": l.chunks[0].1,
            "reason": "after the end marker: not part of the finished recording"
        })]
    );
}

/// Every shipped sample and the s390x fixture read complete, with nothing to warn about.
/// The fixture is format 1.0 (no end marker) and stays so: 1.0 must read as it always did.
/// Samples may be 1.0 or regenerated at the current version (`--update-samples`).
#[test]
fn the_shipped_recordings_read_complete_and_1_0_needs_no_marker() {
    let mut files: Vec<PathBuf> = std::fs::read_dir(root().join("samples"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "aptr"))
        .collect();
    files.push(root().join("tracer/tests/fixtures/written-on-s390x.aptr"));
    assert!(files.len() >= 8, "{files:?}");
    for p in files {
        let out = aptrace(&["report", "--format", "json", p.to_str().unwrap()]);
        let v: Value = serde_json::from_slice(&out.stdout).unwrap();
        let name = p.display();
        if name.to_string().ends_with("written-on-s390x.aptr") {
            assert_eq!(v["sources"][0]["format_version"], "1.0", "{name}");
        }
        assert_eq!(v["complete"], true, "{name}");
        assert_eq!(v["sources"][0]["damage"], serde_json::json!([]), "{name}");
        assert_eq!(v["sources"][0]["warnings"], serde_json::json!([]), "{name}");
        assert!(
            out.stderr.is_empty(),
            "{name}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

/// Chunk payloads that decoded into a panic: they pass the CRC (anyone can write one), so
/// each must cost its chunk with a warning, not crash the reader. Found by reading the
/// decoder's arithmetic and by `cargo xtask fuzz` (target `chunk`).
const CRAFTED_PAYLOADS: &[(&str, &[u8])] = &[
    // A loss event of pid u32::MAX whose tid delta is i64::MAX: pid + delta overflowed.
    (
        "tid-overflow",
        &[
            5, // tag: loss
            0, 0, 0, // seq, ts, cpu deltas
            0xff, 0xff, 0xff, 0xff, 0x0f, // pid u32::MAX
            0xfe, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01, // zigzag(i64::MAX)
            0, 4, b'q', b'e', b'm', b'u', // comm: new string 0, "qemu"
            1, 0, // count 1, ring buffer
        ],
    ),
];

#[test]
fn crafted_chunks_behind_a_good_crc_are_errors_not_panics() {
    use tracer::recording::{Chunk, Header, Writer};
    let dir = tempfile::tempdir().unwrap();
    for (name, payload) in CRAFTED_PAYLOADS {
        let chunk = Chunk {
            offset: 0,
            count: 1,
            payload: bytes::Bytes::from_static(payload),
        };
        assert!(chunk.events().is_err(), "{name}");
        // The same payload in a file, through the report a user runs.
        let mut file = Writer::new(Vec::new(), &Header::default())
            .unwrap()
            .finish()
            .unwrap();
        let end = file.len() - (END_MARKER_BYTES);
        let marker = file.split_off(end);
        let mut c = SYNC.to_vec();
        c.extend_from_slice(&(payload.len() as u32).to_le_bytes());
        c.extend_from_slice(&1u32.to_le_bytes());
        c.extend_from_slice(payload);
        let crc = common::crc32(&c[8..]);
        c.extend_from_slice(&crc.to_le_bytes());
        file.extend_from_slice(&c);
        file.extend_from_slice(&marker);
        let run = report_json(dir.path(), &format!("{name}.aptr"), &file);
        assert_status(&run, name);
        assert!(
            run.stderr.contains("passed its CRC but does not decode"),
            "{name}: {}",
            run.stderr
        );
    }
}

/// The end marker: framing (sync, length, count, CRC) around tag and two counts.
const END_MARKER_BYTES: usize = 8 + 4 + 4 + 24 + 4;
