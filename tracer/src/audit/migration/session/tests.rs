use super::*;
use std::sync::Arc;
use MigState::*;

const FILE: u64 = 0xffff_0000_1000;

fn mdev(life: u32) -> MdevRef {
    MdevRef {
        ptr: 0xa000,
        uuid: Some(Arc::from("uuid-1")),
        incarnation: life,
    }
}

fn guest() -> TaskRef {
    TaskRef {
        pid: 7,
        tid: 7,
        comm: Arc::from("qemu"),
        guest: Some(Arc::from("vm1")),
    }
}

#[test]
fn a_save_read_to_its_end_with_states_stop_and_size() {
    let mut s = Sessions::default();
    let m = mdev(1);
    s.set_state(&m, Some(&guest()), Running, 0, 100);
    s.set_state(&m, Some(&guest()), Stop, 0, 1_000);
    s.data_size(&m, 72);
    s.set_state(&m, Some(&guest()), StopCopy, FILE, 1_500);
    assert!(s.transfer(FILE, 40));
    assert!(s.transfer(FILE, 32));
    assert!(s.transfer(FILE, 0));
    assert!(s.transfer(FILE, -22));
    assert!(!s.transfer(FILE + 8, 10), "another file is no session's");
    s.set_state(&m, Some(&guest()), Stop, 0, 4_000);
    s.set_state(&m, Some(&guest()), Running, 0, 4_500);
    let v = s.view(9_999);
    assert_eq!(v.len(), 1);
    let x = &v[0];
    assert_eq!(
        (x.direction, x.end, x.guest_label()),
        (Direction::Save, SessionEnd::Running, "vm1".into())
    );
    assert_eq!((x.bytes, x.transfers, x.failed_transfers), (72, 3, 1));
    assert_eq!((x.size, x.size_from), (Some(72), Some(SizeFrom::DataSize)));
    let spans: Vec<(MigState, u64)> = x.states.iter().map(|t| (t.state, t.ns)).collect();
    assert_eq!(spans, vec![(Stop, 500), (StopCopy, 2_500), (Stop, 500)]);
    assert_eq!((x.start_ts_ns, x.end_ts_ns), (1_500, 4_500));
    assert_eq!((x.duration_ns, x.stopped_ns), (3_000, 3_500));
    assert_eq!(x.bytes_text(), "72 / 72 B (data-size)");
}

#[test]
fn a_pre_copy_save_starts_with_its_file_and_stops_at_stop_copy() {
    let mut s = Sessions::default();
    let m = mdev(1);
    s.set_state(&m, None, Running, 0, 100);
    // RUNNING -> PRE_COPY returns the data file; the device still runs.
    s.set_state(&m, None, PreCopy, FILE, 1_000);
    assert!(s.transfer(FILE, 40), "pre-copy reads are the session's");
    s.set_state(&m, None, PreCopyP2p, 0, 1_500);
    // Into STOP_COPY the same file goes on; the device stops here.
    s.set_state(&m, None, StopCopy, 0, 2_000);
    assert!(s.transfer(FILE, 32));
    s.set_state(&m, None, Stop, 0, 3_000);
    s.set_state(&m, None, Running, 0, 3_600);
    let v = s.view(9_999);
    assert_eq!(v.len(), 1, "{v:#?}");
    let x = &v[0];
    assert_eq!((x.direction, x.end), (Direction::Save, SessionEnd::Running));
    assert_eq!((x.file, x.bytes, x.transfers), (Some(FILE), 72, 2));
    let spans: Vec<(MigState, u64)> = x.states.iter().map(|t| (t.state, t.ns)).collect();
    assert_eq!(
        spans,
        vec![
            (PreCopy, 500),
            (PreCopyP2p, 500),
            (StopCopy, 1_000),
            (Stop, 600)
        ]
    );
    assert_eq!((x.start_ts_ns, x.duration_ns), (1_000, 2_600));
    assert_eq!(
        x.stopped_ns, 1_600,
        "stopped from STOP_COPY, not from PRE_COPY"
    );
}

#[test]
fn a_pre_copy_given_up_ends_running_and_never_stopped() {
    let mut s = Sessions::default();
    let m = mdev(1);
    s.set_state(&m, None, Running, 0, 100);
    s.set_state(&m, None, PreCopy, FILE, 1_000);
    s.set_state(&m, None, Running, 0, 1_400);
    let x = &s.view(2_000)[0];
    assert_eq!(
        (x.end, x.duration_ns, x.stopped_ns),
        (SessionEnd::Running, 400, 0)
    );
    assert!(
        !s.transfer(FILE, 8),
        "the file is no open session's once it ended"
    );
}

#[test]
fn without_a_data_size_the_streams_end_is_the_size() {
    let mut s = Sessions::default();
    let m = mdev(1);
    s.set_state(&m, None, StopCopy, FILE, 10);
    s.transfer(FILE, 64);
    assert_eq!(s.view(20)[0].size, None, "not read to its end yet");
    s.transfer(FILE, 8);
    s.transfer(FILE, 0);
    let x = &s.view(30)[0];
    assert_eq!((x.size, x.size_from), (Some(72), Some(SizeFrom::StreamEnd)));
    assert_eq!(
        (x.end, x.end_ts_ns, x.duration_ns),
        (SessionEnd::Open, 30, 20)
    );
    assert_eq!(x.stopped_ns, 20, "stopped since the session began");
}

#[test]
fn a_restore_counts_writes_and_has_no_size() {
    let mut s = Sessions::default();
    let m = mdev(1);
    s.set_state(&m, None, Stop, 0, 10);
    s.set_state(&m, None, Resuming, FILE, 20);
    s.transfer(FILE, 30);
    s.transfer(FILE, 30);
    s.transfer(FILE, 12);
    s.transfer(FILE, 0);
    s.set_state(&m, None, Stop, 0, 50);
    s.closed(m.ptr, 90);
    let x = &s.view(100)[0];
    assert_eq!(
        (x.direction, x.bytes, x.size),
        (Direction::Restore, 72, None)
    );
    assert_eq!(
        (x.end, x.duration_ns, x.stopped_ns),
        (SessionEnd::Closed, 70, 80)
    );
    assert!(!s.transfer(FILE, 1), "the file is no longer a session's");
}

#[test]
fn reset_error_and_a_new_life_end_sessions() {
    let mut s = Sessions::default();
    let m = mdev(1);
    s.set_state(&m, None, StopCopy, FILE, 10);
    s.transfer(FILE, 16);
    s.reset(m.ptr, 20);
    assert!(
        !s.transfer(FILE, 8),
        "the old fd reads after the reset count nowhere"
    );
    s.set_state(&m, None, StopCopy, FILE + 1, 30);
    s.set_state_failed(m.ptr, 40);
    s.set_state(&mdev(2), None, Resuming, FILE + 2, 50);
    let v = s.view(60);
    let ends: Vec<(u64, SessionEnd, u64)> = v.iter().map(|x| (x.id, x.end, x.bytes)).collect();
    assert_eq!(
        ends,
        vec![
            (1, SessionEnd::Reset, 16),
            (2, SessionEnd::Error, 0),
            (3, SessionEnd::Open, 0)
        ]
    );
    assert_eq!(v[2].mdev.incarnation, 2);
}

#[test]
fn stop_and_back_without_data_state_is_no_session() {
    let mut s = Sessions::default();
    let m = mdev(1);
    s.set_state(&m, None, Stop, 0, 10);
    s.set_state(&m, None, Running, 0, 20);
    s.set_state(&m, None, Stop, 0, 30);
    s.set_state(&m, None, StopCopy, FILE, 35);
    let x = &s.view(40)[0];
    assert_eq!(
        x.states[0].entered_ts_ns, 30,
        "only the current stop counts"
    );
    assert_eq!(x.stopped_ns, 10);
}

#[test]
fn ended_sessions_are_bounded() {
    let mut s = Sessions::default();
    let m = mdev(1);
    for i in 0..(SESSIONS_KEPT as u64 + 3) {
        s.set_state(&m, None, StopCopy, FILE, i * 10);
        s.set_state(&m, None, Running, 0, i * 10 + 5);
    }
    assert_eq!(s.view(0).len(), SESSIONS_KEPT);
    assert_eq!(s.dropped(), 3);
    let t = s.times(Direction::Save);
    assert_eq!(
        t.duration.count,
        SESSIONS_KEPT as u64 + 3,
        "dropped ones still counted"
    );
    assert_eq!(t.duration.max, 5);
    assert_eq!(s.times(Direction::Restore).duration.count, 0);
}
