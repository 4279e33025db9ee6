//! `aptrace export FILE --format chrome-trace`: the Trace Event Format (JSON object form)
//! that the Perfetto UI and chrome://tracing open as a timeline.
//!
//! One process per mdev incarnation (named by metadata events) with three threads:
//! `lifecycle` (phases as B/E spans: probing, registered, open, closed, removed; adopted for
//! objects first seen mid-life), `migration` (VFIO migration states as B/E spans) and `calls`
//! (each profiled function call as an X span). Findings are instant events (`ph: "i"`) on
//! the lifecycle thread of their mdev, or on process 1 (`aptrace`) when they have none.
//! Times are microseconds from the first event (`otherData.first_ts_ns` is the kernel time).
//!
//! The phases shown follow the profile's roles; what is a fault is decided by the Auditor
//! alone, whose findings are exported as they are.

use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;

use serde_json::{json, Value};

use crate::audit::migration::MigState;
use crate::audit::Auditor;
use crate::calls::show::ret_text;
use crate::calls::{Call, Return, Step};
use crate::model::{Body, Event};
use crate::profile::{MdevArg, Profile, Role};

/// The process of findings without an mdev.
const GLOBAL_PID: u32 = 1;
const TID_LIFECYCLE: u32 = 1;
const TID_MIGRATION: u32 = 2;
const TID_CALLS: u32 = 3;

/// `aptrace export FILE --format chrome-trace`: the trace as JSON bytes (newline-terminated),
/// and what the reader and the embedded profile warned of.
pub fn export_file(file: &Path) -> Result<(Vec<u8>, Vec<String>), crate::input::InputError> {
    let loaded = crate::input::load(file)?;
    let name = file.display().to_string();
    let (profile, warn) = crate::offline::profile_for(&loaded.header, &name, None);
    let warnings = loaded.warnings.iter().cloned().chain(warn).collect();
    let trace = chrome_trace(&loaded.events, &profile, &name);
    let mut text = trace.to_string().into_bytes();
    text.push(b'\n');
    Ok((text, warnings))
}

struct Span {
    name: String,
    ts: u64,
}

struct Track {
    pid: u32,
    ptr: u64,
    incarnation: u32,
    uuid: Option<Arc<str>>,
    guest_pid: Option<u32>,
    guest_comm: Option<Arc<str>>,
    start_ts: u64,
    phase: Option<Span>,
    mig: Option<Span>,
    released: bool,
    events: Vec<(u64, Value)>,
}

struct Builder<'a> {
    profile: &'a Profile,
    t0: u64,
    tracks: Vec<Track>,
    /// The track of each object's current incarnation.
    current: HashMap<u64, usize>,
    by_ptr: HashMap<u64, Vec<usize>>,
    guests: HashMap<u32, Arc<str>>,
    global: Vec<(u64, Value)>,
}

impl<'a> Builder<'a> {
    fn us(&self, ts: u64) -> f64 {
        ts.saturating_sub(self.t0) as f64 / 1000.0
    }

    fn begin(&mut self, t: usize, tid: u32, name: String, ts: u64) {
        let us = self.us(ts);
        let track = &mut self.tracks[t];
        track.events.push((ts, json!({"name": name, "cat": if tid == TID_LIFECYCLE {"lifecycle"} else {"migration"}, "ph": "B", "ts": us, "pid": track.pid, "tid": tid})));
        let span = Span { name, ts };
        if tid == TID_LIFECYCLE {
            track.phase = Some(span);
        } else {
            track.mig = Some(span);
        }
    }

    fn end(&mut self, t: usize, tid: u32, ts: u64, at_end: bool) {
        let t0 = self.t0;
        let us_of = |ts: u64| ts.saturating_sub(t0) as f64 / 1000.0;
        let track = &mut self.tracks[t];
        let span = if tid == TID_LIFECYCLE {
            track.phase.take()
        } else {
            track.mig.take()
        };
        if let Some(s) = span {
            let ts = ts.max(s.ts);
            let mut e = json!({"name": s.name, "cat": if tid == TID_LIFECYCLE {"lifecycle"} else {"migration"}, "ph": "E", "ts": us_of(ts), "pid": track.pid, "tid": tid});
            if at_end {
                e["args"] = json!({"open_at_end_of_recording": true});
            }
            track.events.push((ts, e));
        }
    }

    fn phase(&mut self, t: usize, name: &str, ts: u64) {
        if self.tracks[t]
            .phase
            .as_ref()
            .is_some_and(|p| p.name == name)
        {
            return;
        }
        self.end(t, TID_LIFECYCLE, ts, false);
        self.begin(t, TID_LIFECYCLE, name.to_string(), ts);
    }

    fn mig(&mut self, t: usize, state: Option<&str>, ts: u64) {
        if self.tracks[t].mig.as_ref().map(|m| m.name.as_str()) == state {
            return;
        }
        self.end(t, TID_MIGRATION, ts, false);
        if let Some(s) = state {
            self.begin(t, TID_MIGRATION, s.to_string(), ts);
        }
    }

    fn new_track(&mut self, ptr: u64, ts: u64, adopted: bool) -> usize {
        let incarnation = match self.current.get(&ptr) {
            Some(&old) => {
                if !self.tracks[old].released {
                    self.close(old, ts, false);
                }
                self.tracks[old].incarnation + 1
            }
            None => self.by_ptr.get(&ptr).map_or(0, |v| v.len() as u32),
        };
        let t = self.tracks.len();
        self.tracks.push(Track {
            pid: GLOBAL_PID + 1 + t as u32,
            ptr,
            incarnation,
            uuid: None,
            guest_pid: None,
            guest_comm: None,
            start_ts: ts,
            phase: None,
            mig: None,
            released: false,
            events: Vec::new(),
        });
        self.current.insert(ptr, t);
        self.by_ptr.entry(ptr).or_default().push(t);
        self.phase(t, if adopted { "adopted" } else { "probing" }, ts);
        t
    }

    fn close(&mut self, t: usize, ts: u64, at_end: bool) {
        self.end(t, TID_MIGRATION, ts, at_end);
        self.end(t, TID_LIFECYCLE, ts, at_end);
        self.tracks[t].released = true;
    }

    /// The track of an Object-argument mdev, adopting it when first seen mid-life.
    fn track_of(&mut self, ptr: u64, ts: u64) -> Option<usize> {
        if ptr == 0 {
            return None;
        }
        match self.current.get(&ptr) {
            Some(&t) => Some(t),
            None => Some(self.new_track(ptr, ts, true)),
        }
    }

    /// One event, as the auditor's calls read it.
    fn on_event(&mut self, ev: &Event, step: &Step<'_>) {
        match *step {
            Step::Enter { call, .. } => self.on_enter(call),
            Step::Exit {
                ret,
                call: Some(call),
            } if ret.trusted => self.on_return(ev, ret, call),
            _ => self.on_other(ev),
        }
    }

    fn on_enter(&mut self, call: &Call) {
        let Some(ptr) = call.mdev else { return };
        let spec = &self.profile.functions[call.spec];
        let ts = call.enter.ts_ns;
        match (spec.role, spec.mdev) {
            (Role::InitDev, _) => {
                self.new_track(ptr, ts, false);
            }
            (_, MdevArg::Object) => {
                self.track_of(ptr, ts);
            }
            _ => {}
        }
    }

    fn on_return(&mut self, ev: &Event, ret: &Return, call: &Call) {
        let Some(t) = ret.mdev.and_then(|p| self.current.get(&p).copied()) else {
            return;
        };
        let ok = !ret.failed;
        let func = &call.func();
        let (start, ts) = (call.enter.ts_ns, ev.ts_ns);
        let (pid, us, dur) = (
            self.tracks[t].pid,
            self.us(start),
            self.us(ts) - self.us(start),
        );
        let mut args = json!({"seq": call.enter.seq, "failed": !ok, "task": format!("{} {}", ev.task.pid, ev.task.comm)});
        // The value as the kernel means it; a void function has none.
        if let Some(shown) = ret_text(self.profile.functions[call.spec].ret_type(), ret.ret) {
            args["ret"] = json!(shown);
        }
        self.tracks[t].events.push((
            start,
            json!({"name": func.as_ref(), "cat": "call", "ph": "X", "ts": us, "dur": dur.max(0.0), "pid": pid, "tid": TID_CALLS,
                   "args": args}),
        ));
        match self.profile.functions[call.spec].role {
            Role::Probe => self.phase(t, if ok { "registered" } else { "probe-failed" }, ts),
            Role::Open if ok => {
                self.tracks[t].guest_pid = Some(ev.task.pid);
                self.tracks[t].guest_comm = Some(ev.task.comm.clone());
                self.phase(t, "open", ts);
            }
            Role::AllocField if ok && self.tracks[t].mig.is_none() => {
                self.mig(t, Some(MigState::Running.name()), ts)
            }
            Role::SetState if ok => {
                if let Some(Ok(s)) = call.arg(1).map(MigState::try_from) {
                    self.mig(t, Some(s.name()), ts);
                }
            }
            Role::Reset => self.mig(t, Some(MigState::Running.name()), ts),
            Role::Close => {
                self.mig(t, None, ts);
                self.phase(t, "closed", ts);
            }
            Role::Remove => self.phase(t, "removed", ts),
            Role::ReleaseDev => self.close(t, ts, false),
            _ => {}
        }
    }

    fn on_other(&mut self, ev: &Event) {
        match &ev.body {
            Body::MdevName { mdev, uuid } => {
                if let Some(&t) = self.current.get(mdev) {
                    self.tracks[t].uuid = Some(uuid.clone());
                }
            }
            Body::GuestName { guest_pid, name } => {
                self.guests.insert(*guest_pid, name.clone());
            }
            _ => {}
        }
    }

    /// The track of the finding's life: its incarnation, else the life open at its time.
    fn finding_track(&self, ptr: u64, incarnation: u32, ts: u64) -> Option<usize> {
        let v = self.by_ptr.get(&ptr)?;
        v.iter()
            .find(|&&t| self.tracks[t].incarnation == incarnation)
            .or_else(|| v.iter().rev().find(|&&t| self.tracks[t].start_ts <= ts))
            .or(v.first())
            .copied()
    }
}

/// The Trace Event Format document for `events` audited with `profile`.
pub fn chrome_trace(events: &[Event], profile: &Profile, source: &str) -> Value {
    let t0 = events.iter().map(|e| e.ts_ns).min().unwrap_or(0);
    let last = events.iter().map(|e| e.ts_ns).max().unwrap_or(0);
    let mut b = Builder {
        profile,
        t0,
        tracks: Vec::new(),
        current: HashMap::new(),
        by_ptr: HashMap::new(),
        guests: HashMap::new(),
        global: Vec::new(),
    };
    let mut auditor = Auditor::new(b.profile.clone());
    for e in events {
        auditor.ingest(e);
        b.on_event(e, &auditor.step());
    }
    for t in 0..b.tracks.len() {
        if !b.tracks[t].released {
            b.close(t, last, true);
        }
    }
    for f in auditor.findings() {
        let mut args = json!({
            "severity": f.severity.name(),
            "message": f.message,
            "uncertain": f.uncertain,
            "uncertainty": f.uncertainty,
            "events": f.events.iter().map(|s| s.to_string()).collect::<Vec<_>>(),
        });
        if let Some(func) = &f.function {
            args["function"] = json!(func.as_ref());
        }
        let e = |pid: u32, us: f64| json!({"name": f.kind.name(), "cat": "finding", "ph": "i", "s": "t", "ts": us, "pid": pid, "tid": TID_LIFECYCLE, "args": args});
        match f
            .mdev
            .as_ref()
            .and_then(|m| b.finding_track(m.ptr, m.incarnation, f.ts_ns))
        {
            Some(t) => {
                let ev = e(b.tracks[t].pid, b.us(f.ts_ns));
                b.tracks[t].events.push((f.ts_ns, ev));
            }
            None => {
                let ev = e(GLOBAL_PID, b.us(f.ts_ns));
                b.global.push((f.ts_ns, ev));
            }
        }
    }

    let mut out: Vec<Value> = vec![
        json!({"name": "process_name", "ph": "M", "pid": GLOBAL_PID, "tid": 0, "args": {"name": format!("aptrace: {source}")}}),
        json!({"name": "process_sort_index", "ph": "M", "pid": GLOBAL_PID, "tid": 0, "args": {"sort_index": 0}}),
        json!({"name": "thread_name", "ph": "M", "pid": GLOBAL_PID, "tid": TID_LIFECYCLE, "args": {"name": "findings without an mdev"}}),
    ];
    let mut global = std::mem::take(&mut b.global);
    global.sort_by_key(|(ts, _)| *ts);
    out.extend(global.into_iter().map(|(_, v)| v));
    for (i, track) in b.tracks.iter_mut().enumerate() {
        let mut label = match &track.uuid {
            Some(u) => format!("mdev {u}"),
            None => format!("mdev {:#x}", track.ptr),
        };
        if track.incarnation > 0 {
            label.push_str(&format!(" #{}", track.incarnation));
        }
        if let Some(gp) = track.guest_pid {
            match b.guests.get(&gp) {
                Some(name) => label.push_str(&format!(" · guest {name} ({gp})")),
                None => label.push_str(&format!(
                    " · guest {gp} {}",
                    track.guest_comm.as_deref().unwrap_or("")
                )),
            }
        }
        let pid = track.pid;
        out.push(json!({"name": "process_name", "ph": "M", "pid": pid, "tid": 0, "args": {"name": label}}));
        out.push(json!({"name": "process_labels", "ph": "M", "pid": pid, "tid": 0, "args": {"labels": format!("{:#x}", track.ptr)}}));
        out.push(json!({"name": "process_sort_index", "ph": "M", "pid": pid, "tid": 0, "args": {"sort_index": i + 1}}));
        for (tid, name) in [
            (TID_LIFECYCLE, "lifecycle"),
            (TID_MIGRATION, "migration state"),
            (TID_CALLS, "calls"),
        ] {
            out.push(json!({"name": "thread_name", "ph": "M", "pid": pid, "tid": tid, "args": {"name": name}}));
        }
        // Calls are written when they return: order each thread by time (stable, so an E
        // and the B that follows it at the same instant keep their order).
        let mut evs = std::mem::take(&mut track.events);
        evs.sort_by_key(|(ts, _)| *ts);
        out.extend(evs.into_iter().map(|(_, v)| v));
    }
    json!({
        "traceEvents": out,
        "displayTimeUnit": "ns",
        "otherData": {
            "generator": crate::writer_id(),
            "source": source,
            "first_ts_ns": t0.to_string(),
            "events": events.len(),
        },
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{LockObs, Task};

    fn ev(seq: u64, body: Body) -> Event {
        Event {
            seq,
            ts_ns: 1_000 * seq,
            cpu: 0,
            task: Task {
                pid: 7,
                tid: 7,
                comm: Arc::from("qemu"),
            },
            body,
        }
    }

    fn enter(seq: u64, func: &str, args: &[u64]) -> Event {
        ev(
            seq,
            Body::Enter {
                func: Arc::from(func),
                args: args.into(),
                field: None,
                lock: LockObs::NotChecked,
                untrusted: false,
                locks: Vec::new(),
                stack: Vec::new(),
            },
        )
    }

    fn exit(seq: u64, func: &str, ret: u64) -> Event {
        ev(
            seq,
            Body::Exit {
                func: Arc::from(func),
                ret,
                arg0: 0,
                duration_ns: None,
                field: None,
            },
        )
    }

    /// Calls are marked failed by their function's return type: set_state's data file at
    /// an s390 address (whose low half reads as a negative int) is a success.
    #[test]
    fn a_call_fails_by_its_return_type() {
        let (dev, obj) = (0xd000, 0x5000);
        let events = vec![
            enter(1, "vfio_ap_mdev_probe", &[dev]),
            enter(2, "vfio_ap_mdev_init_dev", &[obj]),
            exit(3, "vfio_ap_mdev_init_dev", 0),
            exit(4, "vfio_ap_mdev_probe", 0),
            enter(5, "vfio_ap_set_state", &[obj, 3]),
            exit(6, "vfio_ap_set_state", 0x8123_4560),
            enter(7, "vfio_ap_set_state", &[obj, 1]),
            exit(8, "vfio_ap_set_state", (-22i64) as u64),
        ];
        let doc = chrome_trace(&events, &Profile::vfio_ap(), "t");
        let calls: Vec<(String, bool)> = doc["traceEvents"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|e| e["ph"] == "X")
            .map(|e| {
                let name = e["name"].as_str().unwrap().to_string();
                (name, e["args"]["failed"].as_bool().unwrap())
            })
            .collect();
        let s = |n: &str, f| (n.to_string(), f);
        assert_eq!(
            calls,
            vec![
                s("vfio_ap_mdev_probe", false),
                s("vfio_ap_mdev_init_dev", false),
                s("vfio_ap_set_state", false),
                s("vfio_ap_set_state", true),
            ]
        );
        // The probe's call lands on the object's track, learned from init_dev.
        let stop_copy = doc["traceEvents"]
            .as_array()
            .unwrap()
            .iter()
            .any(|e| e["ph"] == "B" && e["name"] == MigState::StopCopy.name());
        assert!(stop_copy);
    }
}
