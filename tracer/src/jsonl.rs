//! The event model as JSON lines: an optional first line with the recording's header
//! (`{"type":"header",...}`), an optional `{"type":"source",...}` line saying the source was
//! incomplete, then one event per line. docs/recording-format.md documents it.

use std::io::{BufRead, Read, Write};

use serde::{Deserialize, Serialize};

use crate::model::Event;
use crate::pipeline::reorder::Reorder;
use crate::pipeline::{REORDER_CAPACITY, REORDER_WINDOW_NS};
use crate::recording::{Damage, Header};

#[derive(Serialize, Deserialize)]
#[serde(tag = "type", rename = "header")]
struct HeaderLine {
    #[serde(flatten)]
    header: Header,
}

/// What an incomplete source said about itself, carried through export and import so that
/// a copy is never more complete than its original.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename = "source")]
pub struct SourceNote {
    /// False when the source should have ended with an end marker and did not.
    #[serde(default = "yes")]
    pub end_marker: bool,
    /// Regions of the source that were skipped; their events are not in the file (the losses
    /// they caused are, as `lost` events).
    #[serde(default)]
    pub damage: Vec<Damage>,
}

fn yes() -> bool {
    true
}

impl SourceNote {
    /// Nothing to say: the source was whole.
    pub fn is_complete(&self) -> bool {
        self.end_marker && self.damage.is_empty()
    }
}

/// A JSON-lines file read back.
#[derive(Debug, Default)]
pub struct JsonLines {
    pub header: Option<Header>,
    /// The `source` line, when the file has one.
    pub source: Option<SourceNote>,
    pub events: Vec<Event>,
    /// The line of the file each event came from (same index as `events`).
    pub lines: Vec<usize>,
}

/// A line that is not an event.
#[derive(Debug, thiserror::Error)]
pub enum JsonlError {
    #[error("{origin}:{line}: {message}")]
    Line {
        origin: String,
        line: usize,
        message: String,
    },
    #[error("cannot read {origin}: {source}")]
    Io {
        origin: String,
        source: std::io::Error,
    },
}

/// Writes the header line and every event.
pub fn write_jsonl(
    out: &mut dyn Write,
    header: &Header,
    events: impl IntoIterator<Item = Event>,
) -> std::io::Result<()> {
    write_jsonl_from(out, header, None, events)
}

/// Writes the header line, the source line when the source was incomplete, and every event.
pub fn write_jsonl_from(
    out: &mut dyn Write,
    header: &Header,
    source: Option<&SourceNote>,
    events: impl IntoIterator<Item = Event>,
) -> std::io::Result<()> {
    serde_json::to_writer(
        &mut *out,
        &HeaderLine {
            header: header.clone(),
        },
    )?;
    out.write_all(b"\n")?;
    if let Some(note) = source.filter(|n| !n.is_complete()) {
        serde_json::to_writer(&mut *out, note)?;
        out.write_all(b"\n")?;
    }
    for e in events {
        write_event(out, &e)?;
    }
    Ok(())
}

/// Writes one event as a line.
pub fn write_event(out: &mut dyn Write, e: &Event) -> std::io::Result<()> {
    serde_json::to_writer(&mut *out, e)?;
    out.write_all(b"\n")
}

/// Longest line accepted: an event is far smaller; a bigger one is damage, not data.
const MAX_LINE: usize = 1 << 20;

/// Reads JSON lines and puts their events in timestamp order through the live agent's reorder
/// window: files are written in arrival order, as the kernel's per-CPU buffers deliver. The
/// events are numbered in the order they leave the window (a file's own `seq` values are not
/// kept: gaps in them are not losses); disorder beyond the window is an error naming the line.
pub fn read_jsonl_ordered(input: impl BufRead, origin: &str) -> Result<JsonLines, JsonlError> {
    let j = read_jsonl(input, origin)?;
    order(j, origin)
}

/// Puts the events of `j` through the reorder window (see [`read_jsonl_ordered`]).
pub fn order(mut j: JsonLines, origin: &str) -> Result<JsonLines, JsonlError> {
    let mut window = Reorder::new(REORDER_WINDOW_NS, REORDER_CAPACITY);
    let mut out = Vec::with_capacity(j.events.len());
    let mut newest = 0u64;
    let events = std::mem::take(&mut j.events);
    let lines = std::mem::take(&mut j.lines);
    for (ev, line) in events.into_iter().zip(lines) {
        let ts = ev.ts_ns;
        window.push(Box::new(ev), &mut |e| out.push(*e));
        if window.late > 0 {
            return Err(JsonlError::Line {
                origin: origin.to_string(),
                line,
                message: format!(
                    "ts_ns {ts} is {} ns older than an event before it, beyond the reorder window of {} ms (or {} events); sort the file by ts_ns",
                    newest.saturating_sub(ts),
                    REORDER_WINDOW_NS / 1_000_000,
                    REORDER_CAPACITY
                ),
            });
        }
        newest = newest.max(ts);
    }
    window.flush(&mut |e| out.push(*e));
    j.lines = Vec::new();
    j.events = out;
    Ok(j)
}

/// Reads JSON lines in file order. Blank lines and lines starting with `#` are skipped.
/// Events without a `seq` are numbered in file order.
pub fn read_jsonl(mut input: impl BufRead, origin: &str) -> Result<JsonLines, JsonlError> {
    let mut out = JsonLines::default();
    let mut next_seq = 1u64;
    let mut raw = Vec::new();
    let mut n = 0usize;
    loop {
        // Read at most one byte past the limit (plus CR LF): a file without newlines is
        // refused at MAX_LINE instead of being read whole into one line.
        raw.clear();
        let got = (&mut input)
            .take(MAX_LINE as u64 + 2)
            .read_until(b'\n', &mut raw)
            .map_err(|source| JsonlError::Io {
                origin: origin.to_string(),
                source,
            })?;
        if got == 0 {
            break;
        }
        n += 1;
        let err = |message: String| JsonlError::Line {
            origin: origin.to_string(),
            line: n,
            message,
        };
        let body = raw.strip_suffix(b"\n").unwrap_or(&raw);
        let body = body.strip_suffix(b"\r").unwrap_or(body);
        if body.len() > MAX_LINE {
            return Err(err(format!(
                "line is longer than the limit of {MAX_LINE} bytes"
            )));
        }
        let line = std::str::from_utf8(body).map_err(|e| err(format!("not UTF-8 text: {e}")))?;
        let t = line.trim();
        if t.is_empty() || t.starts_with('#') {
            continue;
        }
        let mut value: serde_json::Value =
            serde_json::from_str(t).map_err(|e| err(format!("not JSON: {e}")))?;
        if value.get("type").and_then(|v| v.as_str()) == Some("source") {
            if out.source.is_some() || !out.events.is_empty() {
                return Err(err(
                    "a source line may only come before the first event, once".into(),
                ));
            }
            let note: SourceNote =
                serde_json::from_value(value).map_err(|e| err(format!("bad source line: {e}")))?;
            out.source = Some(note);
            continue;
        }
        if value.get("type").and_then(|v| v.as_str()) == Some("header") {
            if out.header.is_some() || out.source.is_some() || !out.events.is_empty() {
                return Err(err("a header line may only be the first line".into()));
            }
            let h: HeaderLine =
                serde_json::from_value(value).map_err(|e| err(format!("bad header: {e}")))?;
            out.header = Some(h.header);
            continue;
        }
        if let Some(obj) = value.as_object_mut() {
            if !obj.contains_key("seq") {
                obj.insert("seq".into(), next_seq.into());
            }
            for (k, v) in [("cpu", 0u64), ("tid", u64::MAX)] {
                if !obj.contains_key(k) {
                    obj.insert(k.into(), v.into());
                }
            }
            if obj.get("tid").and_then(|v| v.as_u64()) == Some(u64::MAX) {
                let pid = obj.get("pid").cloned().unwrap_or(0.into());
                obj.insert("tid".into(), pid);
            }
            if !obj.contains_key("comm") {
                obj.insert("comm".into(), "".into());
            }
        }
        let ev: Event =
            serde_json::from_value(value).map_err(|e| err(format!("not an event: {e}")))?;
        // saturating: a seq of u64::MAX must not overflow (duplicates are refused on import)
        next_seq = ev.seq.saturating_add(1);
        out.events.push(ev);
        out.lines.push(n);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::synth::{Fault, Generator};

    #[test]
    fn round_trip_is_lossless() {
        let mut g = Generator::new(11);
        g.fault_every = 2;
        g.faults = vec![Fault::Leak, Fault::LockNotHeld, Fault::InvalidArc];
        for i in 0..6 {
            g.life(i, 2);
        }
        let mut evs = g.into_events();
        // every body kind, including the rare ones
        evs.push(Event {
            seq: 100_000,
            ts_ns: u64::MAX,
            cpu: 3,
            task: crate::model::Task {
                pid: 1,
                tid: 2,
                comm: "x\"y\n".into(),
            },
            body: crate::model::Body::Lost {
                count: 5,
                source: crate::model::LossSource::KretprobeMiss,
            },
        });
        let header = Header {
            arch: "x86_64".into(),
            ..Header::default()
        };
        let mut buf = Vec::new();
        write_jsonl(&mut buf, &header, evs.clone()).unwrap();
        let back = read_jsonl(&buf[..], "mem").unwrap();
        assert_eq!(back.header, Some(header));
        assert_eq!(back.events, evs);
        assert_eq!(buf.iter().filter(|&&b| b == b'\n').count(), evs.len() + 1);
    }

    #[test]
    fn hand_written_scenarios_need_only_the_essentials() {
        let text = r#"
# a double free, written by hand
{"type":"enter","ts_ns":"100","pid":7,"func":"vfio_ap_mdev_open_device","args":["0xffff1000"]}
{"type":"free","ts_ns":"200","pid":7,"ptr":"0xffff2000","allocator":"kmalloc"}
"#;
        let j = read_jsonl(text.as_bytes(), "hand.jsonl").unwrap();
        assert_eq!(j.events.len(), 2);
        assert_eq!(j.events[0].seq, 1);
        assert_eq!(j.events[1].seq, 2);
        assert_eq!(j.events[1].task.tid, 7);
    }

    /// The other locks an entry read (format 1.4) are a `locks` list of `{lock, state}`.
    #[test]
    fn an_entrys_lock_reads_are_its_locks_list() {
        let text = r#"{"type":"enter","ts_ns":"100","pid":7,"func":"vfio_ap_mdev_open_device","args":["0xffff1000"],"locks":[{"lock":"dev_set_lock","state":"held-by-current"},{"lock":"guests_lock","state":"held-by-other","owner":"0xffff8880"}]}
"#;
        let j = read_jsonl(text.as_bytes(), "locks.jsonl").unwrap();
        let crate::model::Body::Enter { locks, .. } = &j.events[0].body else {
            panic!("{:?}", j.events[0]);
        };
        use crate::model::LockObs;
        let seen: Vec<(&str, LockObs)> = locks.iter().map(|l| (&*l.lock, l.obs)).collect();
        assert_eq!(
            seen,
            [
                ("dev_set_lock", LockObs::HeldByCurrent),
                ("guests_lock", LockObs::HeldByOther { owner: 0xffff8880 })
            ]
        );
        let mut out = Vec::new();
        write_event(&mut out, &j.events[0]).unwrap();
        let out = String::from_utf8(out).unwrap();
        assert!(
            out.contains(r#""locks":[{"lock":"dev_set_lock","state":"held-by-current"},{"lock":"guests_lock","state":"held-by-other","owner":"0xffff8880"}]"#),
            "{out}"
        );
    }

    #[test]
    fn a_huge_line_is_refused_without_reading_it_whole() {
        struct Endless(u64);
        impl std::io::Read for Endless {
            fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
                self.0 += buf.len() as u64;
                assert!(self.0 < 8 * MAX_LINE as u64, "read far past the line limit");
                buf.fill(b' ');
                Ok(buf.len())
            }
        }
        let e = read_jsonl(std::io::BufReader::new(Endless(0)), "big.jsonl")
            .unwrap_err()
            .to_string();
        assert!(e.starts_with("big.jsonl:1: line is longer than"), "{e}");
    }

    #[test]
    fn crlf_lines_and_the_largest_seq_are_read() {
        let text = "{\"type\":\"lost\",\"seq\":18446744073709551615,\"ts_ns\":\"1\",\"pid\":0,\"count\":1,\"source\":\"ring-buffer\"}\r\n{\"type\":\"lost\",\"ts_ns\":\"2\",\"pid\":0,\"count\":1,\"source\":\"ring-buffer\"}\r\n";
        let j = read_jsonl(text.as_bytes(), "crlf.jsonl").unwrap();
        assert_eq!(j.events.len(), 2);
        assert_eq!(j.events[1].seq, u64::MAX);
    }

    /// Writes `evs` as JSON lines in the given order, without their seq (as a person would).
    fn text_of(evs: &[Event]) -> Vec<u8> {
        let mut buf = Vec::new();
        for e in evs {
            let mut v = serde_json::to_value(e).unwrap();
            v.as_object_mut().unwrap().remove("seq");
            serde_json::to_writer(&mut buf, &v).unwrap();
            buf.push(b'\n');
        }
        buf
    }

    /// Moves each event by up to `reach` places, as per-CPU buffers deliver them.
    fn shuffle_locally(evs: &[Event], reach: u64, seed: u64) -> Vec<Event> {
        let mut out = evs.to_vec();
        let mut rng = crate::synth::Rng::new(seed);
        for i in 0..out.len() {
            let j = (i + rng.below(reach + 1) as usize).min(out.len() - 1);
            out.swap(i, j);
        }
        out
    }

    fn ordered_events(seed: u64) -> Vec<Event> {
        let mut g = Generator::new(seed);
        g.fault_every = 2;
        g.faults = vec![Fault::Leak];
        for i in 0..4 {
            g.life(i, 2);
        }
        g.into_events()
    }

    #[test]
    fn disorder_within_the_window_is_put_in_timestamp_order_and_renumbered() {
        let evs = ordered_events(3);
        let shuffled = shuffle_locally(&evs, 20, 7);
        assert_ne!(shuffled, evs);
        let j = read_jsonl_ordered(&text_of(&shuffled)[..], "s.jsonl").unwrap();
        assert_eq!(
            j.events, evs,
            "the order (and numbering) of the sorted file"
        );
    }

    #[test]
    fn gaps_in_a_files_seq_are_renumbered_not_kept() {
        let text = "{\"type\":\"lost\",\"seq\":4,\"ts_ns\":\"1\",\"pid\":0,\"count\":1,\"source\":\"ring-buffer\"}\n{\"type\":\"guest-name\",\"seq\":90,\"ts_ns\":\"2\",\"pid\":0,\"guest_pid\":5,\"name\":\"g\"}\n";
        let j = read_jsonl_ordered(text.as_bytes(), "gap.jsonl").unwrap();
        let seqs: Vec<u64> = j.events.iter().map(|e| e.seq).collect();
        assert_eq!(seqs, [1, 2]);
    }

    #[test]
    fn disorder_beyond_the_window_is_refused_naming_the_line() {
        let text = format!(
            "# late\n{}\n{}\n{}\n",
            r#"{"type":"guest-name","ts_ns":"1000","pid":0,"guest_pid":5,"name":"a"}"#,
            r#"{"type":"guest-name","ts_ns":"900000000","pid":0,"guest_pid":5,"name":"b"}"#,
            r#"{"type":"guest-name","ts_ns":"500","pid":0,"guest_pid":5,"name":"c"}"#
        );
        let e = read_jsonl_ordered(text.as_bytes(), "late.jsonl")
            .unwrap_err()
            .to_string();
        assert!(e.starts_with("late.jsonl:4: ts_ns 500 is"), "{e}");
        assert!(
            e.contains("reorder window") && e.contains("sort the file"),
            "{e}"
        );
    }

    #[test]
    fn the_source_line_round_trips_and_is_left_out_when_there_is_nothing_to_say() {
        let note = SourceNote {
            end_marker: false,
            damage: vec![Damage {
                offset: 64,
                bytes: 300,
                reason: "chunk CRC mismatch".into(),
            }],
        };
        let evs = ordered_events(4);
        let mut buf = Vec::new();
        write_jsonl_from(&mut buf, &Header::default(), Some(&note), evs.clone()).unwrap();
        let back = read_jsonl(&buf[..], "n.jsonl").unwrap();
        assert_eq!(back.source, Some(note));
        assert_eq!(back.events, evs);

        let whole = SourceNote {
            end_marker: true,
            damage: Vec::new(),
        };
        let mut buf = Vec::new();
        write_jsonl_from(&mut buf, &Header::default(), Some(&whole), evs).unwrap();
        assert!(!String::from_utf8(buf.clone())
            .unwrap()
            .contains("\"source\""));
        assert_eq!(read_jsonl(&buf[..], "w.jsonl").unwrap().source, None);
    }

    #[test]
    fn a_source_line_after_an_event_is_refused() {
        let text = "{\"type\":\"guest-name\",\"ts_ns\":\"2\",\"pid\":0,\"guest_pid\":5,\"name\":\"g\"}\n{\"type\":\"source\",\"end_marker\":false}\n";
        let e = read_jsonl(text.as_bytes(), "x.jsonl")
            .unwrap_err()
            .to_string();
        assert!(e.starts_with("x.jsonl:2: a source line"), "{e}");
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(24))]
        /// Any disorder smaller than the window gives the sorted file's events.
        #[test]
        fn any_shuffle_within_the_window_reads_as_the_sorted_file(
            seed in 0u64..1000,
            reach in 1u64..40,
        ) {
            let evs = ordered_events(seed);
            let shuffled = shuffle_locally(&evs, reach, seed ^ 0x5a5a);
            let j = read_jsonl_ordered(&text_of(&shuffled)[..], "p.jsonl").unwrap();
            proptest::prop_assert_eq!(j.events, evs);
        }
    }

    #[test]
    fn a_bad_line_names_the_file_and_line() {
        let text = "{\"type\":\"enter\"}\n";
        let e = read_jsonl(text.as_bytes(), "s.jsonl")
            .unwrap_err()
            .to_string();
        assert!(e.starts_with("s.jsonl:1: not an event"), "{e}");
        let e = read_jsonl("nope\n".as_bytes(), "t.jsonl")
            .unwrap_err()
            .to_string();
        assert!(e.starts_with("t.jsonl:1: not JSON"), "{e}");
    }
}
