//! The event model as JSON lines: an optional first line with the recording's header
//! (`{"type":"header",...}`), then one event per line. docs/recording-format.md documents it.

use std::io::{BufRead, Write};

use serde::{Deserialize, Serialize};

use crate::model::Event;
use crate::recording::Header;

#[derive(Serialize, Deserialize)]
#[serde(tag = "type", rename = "header")]
struct HeaderLine {
    #[serde(flatten)]
    header: Header,
}

/// A JSON-lines file read back.
#[derive(Debug, Default)]
pub struct JsonLines {
    pub header: Option<Header>,
    pub events: Vec<Event>,
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
    serde_json::to_writer(
        &mut *out,
        &HeaderLine {
            header: header.clone(),
        },
    )?;
    out.write_all(b"\n")?;
    for e in events {
        serde_json::to_writer(&mut *out, &e)?;
        out.write_all(b"\n")?;
    }
    Ok(())
}

/// Longest line accepted: an event is far smaller; a bigger one is damage, not data.
const MAX_LINE: usize = 1 << 20;

/// Reads JSON lines. Blank lines and lines starting with `#` are skipped. Events without a
/// `seq` are numbered in file order.
pub fn read_jsonl(input: impl BufRead, origin: &str) -> Result<JsonLines, JsonlError> {
    let mut out = JsonLines::default();
    let mut next_seq = 1u64;
    for (i, line) in input.lines().enumerate() {
        let n = i + 1;
        let line = line.map_err(|source| JsonlError::Io {
            origin: origin.to_string(),
            source,
        })?;
        let err = |message: String| JsonlError::Line {
            origin: origin.to_string(),
            line: n,
            message,
        };
        if line.len() > MAX_LINE {
            return Err(err(format!(
                "line is {} bytes long; the limit is {MAX_LINE}",
                line.len()
            )));
        }
        let t = line.trim();
        if t.is_empty() || t.starts_with('#') {
            continue;
        }
        let mut value: serde_json::Value =
            serde_json::from_str(t).map_err(|e| err(format!("not JSON: {e}")))?;
        if value.get("type").and_then(|v| v.as_str()) == Some("header") {
            if out.header.is_some() || !out.events.is_empty() {
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
        next_seq = ev.seq + 1;
        out.events.push(ev);
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
