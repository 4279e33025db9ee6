//! Each finding kind from a hand-built event sequence: the exact finding and no other.

use super::*;
use crate::model::{Allocator, Task};

const MDEV: u64 = 0xffff_8880_0a00_0000;
const MDEV_DEV: u64 = 0xffff_8880_0b00_0000;
const MIG: u64 = 0xffff_8880_0c00_0040;
const MIG2: u64 = 0xffff_8880_0c00_0080;

/// Builds event streams: one task per pid, sequence numbers and timestamps in order.
pub(crate) struct Script {
    events: Vec<Event>,
}

impl Script {
    pub(crate) fn new() -> Script {
        Script { events: Vec::new() }
    }

    fn push(&mut self, pid: u32, comm: &str, body: Body) -> &mut Self {
        let seq = self.events.len() as u64 + 1;
        self.events.push(Event {
            seq,
            ts_ns: 1_000_000_000 + seq * 1000,
            cpu: 0,
            task: Task {
                pid,
                tid: pid,
                comm: Arc::from(comm),
            },
            body,
        });
        self
    }

    pub(crate) fn enter(
        &mut self,
        pid: u32,
        func: &str,
        args: &[u64],
        lock: LockObs,
        field: Option<u64>,
    ) -> &mut Self {
        self.push(
            pid,
            if pid == 100 {
                "mdevctl"
            } else {
                "qemu-system-s39"
            },
            Body::Enter {
                func: Arc::from(func),
                args: args.to_vec(),
                field,
                lock,
                untrusted: false,
                stack: Vec::new(),
            },
        )
    }

    pub(crate) fn exit(
        &mut self,
        pid: u32,
        func: &str,
        arg0: u64,
        ret: i64,
        field: Option<u64>,
    ) -> &mut Self {
        self.push(
            pid,
            if pid == 100 {
                "mdevctl"
            } else {
                "qemu-system-s39"
            },
            Body::Exit {
                func: Arc::from(func),
                ret: ret as u64,
                arg0,
                duration_ns: Some(500),
                field,
            },
        )
    }

    /// enter + exit of a function that takes the lock (entered with it free).
    pub(crate) fn call(&mut self, pid: u32, func: &str, args: &[u64], ret: i64) -> &mut Self {
        self.enter(pid, func, args, LockObs::Free, None)
            .exit(pid, func, args[0], ret, None)
    }

    pub(crate) fn create(&mut self) -> &mut Self {
        self.enter(100, "vfio_ap_mdev_probe", &[MDEV_DEV], LockObs::Free, None)
            .call(100, "vfio_ap_mdev_init_dev", &[MDEV], 0)
            .enter(
                100,
                "vfio_ap_init_migration_capabilities",
                &[MDEV],
                LockObs::HeldByCurrent,
                None,
            )
            .exit(100, "vfio_ap_init_migration_capabilities", MDEV, 0, None)
            .exit(100, "vfio_ap_mdev_probe", MDEV_DEV, 0, None)
    }

    pub(crate) fn open(&mut self, pid: u32, mig: u64) -> &mut Self {
        self.enter(
            pid,
            "vfio_ap_mdev_open_device",
            &[MDEV],
            LockObs::Free,
            None,
        )
        .enter(
            pid,
            "vfio_ap_init_migration_data",
            &[MDEV],
            LockObs::HeldByCurrent,
            None,
        )
        .exit(pid, "vfio_ap_init_migration_data", MDEV, 0, Some(mig))
        .exit(pid, "vfio_ap_mdev_open_device", MDEV, 0, None)
    }

    pub(crate) fn free_mig(&mut self, pid: u32, mig: u64) -> &mut Self {
        self.enter(
            pid,
            "vfio_ap_release_migration_data",
            &[MDEV],
            LockObs::HeldByCurrent,
            Some(mig),
        )
        .exit(pid, "vfio_ap_release_migration_data", MDEV, 0, None)
    }

    pub(crate) fn close(&mut self, pid: u32, mig: u64) -> &mut Self {
        self.enter(
            pid,
            "vfio_ap_mdev_close_device",
            &[MDEV],
            LockObs::Free,
            None,
        )
        .free_mig(pid, mig)
        .exit(pid, "vfio_ap_mdev_close_device", MDEV, 0, None)
    }

    pub(crate) fn set_state(&mut self, pid: u32, to: u64, ret: u64) -> &mut Self {
        self.enter(pid, "vfio_ap_set_state", &[MDEV, to], LockObs::Free, None)
            .exit(pid, "vfio_ap_set_state", MDEV, ret as i64, None)
    }

    pub(crate) fn remove_release(&mut self, mig_at_release: Option<u64>) -> &mut Self {
        self.call(100, "vfio_ap_mdev_remove", &[MDEV_DEV], 0).enter(
            100,
            "vfio_ap_mdev_release_dev",
            &[MDEV],
            LockObs::Free,
            None,
        );
        if let Some(m) = mig_at_release {
            self.free_mig(100, m);
        }
        self.exit(100, "vfio_ap_mdev_release_dev", MDEV, 0, None)
    }

    fn audit(&self) -> Auditor {
        let mut a = Auditor::new(Profile::vfio_ap());
        for e in &self.events {
            a.ingest(e);
        }
        a
    }
}

const FILE: u64 = 0xffff_8880_0f00_0000;
const QEMU: u32 = 4242;

pub(crate) fn clean_lifecycle() -> Script {
    let mut s = Script::new();
    s.create().open(QEMU, MIG);
    s.push(
        QEMU,
        "qemu-system-s39",
        Body::GuestName {
            guest_pid: QEMU,
            name: Arc::from("web1"),
        },
    );
    s.set_state(QEMU, 1, 0) // RUNNING → STOP
        .set_state(QEMU, 3, FILE) // STOP → STOP_COPY, a data file
        .set_state(QEMU, 1, 0)
        .set_state(QEMU, 2, 0)
        .close(QEMU, MIG)
        .remove_release(None);
    s
}

fn kinds(a: &Auditor) -> Vec<Kind> {
    a.findings().iter().map(|f| f.kind).collect()
}

fn only(a: &Auditor, kind: Kind) -> &Finding {
    assert_eq!(kinds(a), vec![kind], "{:#?}", a.findings());
    &a.findings()[0]
}

#[test]
fn clean_lifecycle_has_no_finding() {
    let a = clean_lifecycle().audit();
    assert!(a.findings().is_empty(), "{:#?}", a.findings());
    let summary = a.finish();
    assert!(summary.outstanding.is_empty());
    assert!(summary.unfinished_calls.is_empty());
    let snap = a.snapshot();
    assert_eq!(snap.mdevs.len(), 1);
    assert_eq!(snap.mdevs[0].phase, Phase::Released);
    for arc in [
        "RUNNING->STOP",
        "STOP->STOP_COPY",
        "STOP_COPY->STOP",
        "STOP->RUNNING",
    ] {
        assert_eq!(snap.transitions.get(arc), Some(&1), "{arc}");
    }
}

#[test]
fn release_skipped_is_a_leak_named_at_release() {
    let mut s = Script::new();
    s.create().open(QEMU, MIG);
    s.push(
        QEMU,
        "qemu-system-s39",
        Body::GuestName {
            guest_pid: QEMU,
            name: Arc::from("web1"),
        },
    );
    // close forgets release_migration_data
    s.call(QEMU, "vfio_ap_mdev_close_device", &[MDEV], 0)
        .remove_release(None);
    let a = s.audit();
    let f = only(&a, Kind::Leak);
    assert_eq!(f.severity, Severity::Error);
    assert_eq!(f.mdev.as_ref().unwrap().ptr, MDEV);
    assert_eq!(f.function.as_deref(), Some("vfio_ap_init_migration_data"));
    assert!(f.message.contains(&format!("{MIG:#x}")), "{}", f.message);
    assert!(f.message.contains("guest web1"), "{}", f.message);
    assert!(
        f.message.contains("vfio_ap_mdev_release_dev"),
        "{}",
        f.message
    );
    // evidence: the allocation and the release exit
    assert_eq!(f.events.len(), 2);
    assert!(!f.uncertain);
}

#[test]
fn outstanding_at_end_of_recording_is_not_a_leak() {
    let mut s = Script::new();
    s.create().open(QEMU, MIG);
    let a = s.audit();
    assert!(a.findings().is_empty());
    let out = a.finish().outstanding;
    assert_eq!(out.len(), 1);
    assert_eq!(out[0].ptr, MIG);
}

#[test]
fn second_init_overwrites_first_allocation() {
    let mut s = Script::new();
    s.create().open(QEMU, MIG);
    s.enter(
        QEMU,
        "vfio_ap_init_migration_data",
        &[MDEV],
        LockObs::HeldByCurrent,
        None,
    )
    .exit(QEMU, "vfio_ap_init_migration_data", MDEV, 0, Some(MIG2))
    .close(QEMU, MIG2)
    .remove_release(None);
    let a = s.audit();
    let f = only(&a, Kind::OverwriteLeak);
    assert!(f.message.contains(&format!("{MIG:#x}")));
    assert!(f.message.contains(&format!("{MIG2:#x}")));
}

#[test]
fn freeing_twice_is_a_double_free() {
    let mut s = Script::new();
    s.create().open(QEMU, MIG).close(QEMU, MIG);
    s.free_mig(100, MIG).remove_release(None);
    let a = s.audit();
    let f = only(&a, Kind::DoubleFree);
    assert_eq!(f.events.len(), 2, "first free and second free");
}

#[test]
fn freeing_a_pointer_never_allocated_is_unknown_free() {
    let mut s = Script::new();
    s.create().open(QEMU, MIG).close(QEMU, MIG);
    s.free_mig(100, MIG2).remove_release(None);
    let a = s.audit();
    let f = only(&a, Kind::UnknownFree);
    assert_eq!(f.severity, Severity::Warning);
}

#[test]
fn assert_held_entered_without_lock_is_lock_not_held() {
    for lock in [
        LockObs::Free,
        LockObs::HeldByOther {
            owner: 0xffff_8880_1111_0000,
        },
    ] {
        let mut s = Script::new();
        s.create()
            .enter(
                QEMU,
                "vfio_ap_mdev_open_device",
                &[MDEV],
                LockObs::Free,
                None,
            )
            .enter(QEMU, "vfio_ap_init_migration_data", &[MDEV], lock, None)
            .exit(QEMU, "vfio_ap_init_migration_data", MDEV, 0, Some(MIG))
            .exit(QEMU, "vfio_ap_mdev_open_device", MDEV, 0, None)
            .close(QEMU, MIG)
            .remove_release(None);
        let a = s.audit();
        let f = only(&a, Kind::LockNotHeld);
        assert_eq!(f.function.as_deref(), Some("vfio_ap_init_migration_data"));
    }
}

#[test]
fn lock_not_checked_raises_nothing() {
    let mut s = Script::new();
    s.create()
        .enter(
            QEMU,
            "vfio_ap_mdev_open_device",
            &[MDEV],
            LockObs::NotChecked,
            None,
        )
        .enter(
            QEMU,
            "vfio_ap_init_migration_data",
            &[MDEV],
            LockObs::NotChecked,
            None,
        )
        .exit(QEMU, "vfio_ap_init_migration_data", MDEV, 0, Some(MIG))
        .exit(QEMU, "vfio_ap_mdev_open_device", MDEV, 0, None)
        .close(QEMU, MIG)
        .remove_release(None);
    assert!(s.audit().findings().is_empty());
}

#[test]
fn seed_probe_error_path_is_a_self_deadlock_at_release_entry() {
    let mut s = Script::new();
    s.enter(100, "vfio_ap_mdev_probe", &[MDEV_DEV], LockObs::Free, None)
        .call(100, "vfio_ap_mdev_init_dev", &[MDEV], 0)
        .enter(
            100,
            "vfio_ap_init_migration_capabilities",
            &[MDEV],
            LockObs::HeldByCurrent,
            None,
        )
        .exit(100, "vfio_ap_init_migration_capabilities", MDEV, 0, None)
        // registration failed: vfio_put_device → release_dev, lock still held; it hangs here.
        .enter(
            100,
            "vfio_ap_mdev_release_dev",
            &[MDEV],
            LockObs::HeldByCurrent,
            None,
        );
    let a = s.audit();
    let f = only(&a, Kind::SelfDeadlock);
    assert_eq!(f.function.as_deref(), Some("vfio_ap_mdev_release_dev"));
    assert!(f.message.contains("vfio_ap_mdev_probe"), "{}", f.message);
    assert_eq!(f.mdev.as_ref().unwrap().ptr, MDEV);
    let unfinished = a.finish().unfinished_calls;
    assert_eq!(unfinished.len(), 2, "probe and release_dev never returned");
}

#[test]
fn open_before_probe_and_close_without_open_are_lifecycle_order() {
    let mut s = Script::new();
    s.create()
        .call(QEMU, "vfio_ap_mdev_close_device", &[MDEV], 0)
        .remove_release(None);
    let a = s.audit();
    assert!(only(&a, Kind::LifecycleOrder).message.contains("not open"));

    let mut s = Script::new();
    s.enter(100, "vfio_ap_mdev_probe", &[MDEV_DEV], LockObs::Free, None)
        .call(100, "vfio_ap_mdev_init_dev", &[MDEV], 0)
        .call(QEMU, "vfio_ap_mdev_open_device", &[MDEV], 0)
        .exit(100, "vfio_ap_mdev_probe", MDEV_DEV, 0, None);
    let a = s.audit();
    assert!(only(&a, Kind::LifecycleOrder)
        .message
        .contains("before probe"));

    let mut s = Script::new();
    s.create()
        .enter(
            100,
            "vfio_ap_init_migration_capabilities",
            &[MDEV],
            LockObs::NotChecked,
            None,
        )
        .exit(100, "vfio_ap_init_migration_capabilities", MDEV, 0, None);
    let a = s.audit();
    assert!(only(&a, Kind::LifecycleOrder)
        .message
        .contains("after probe had registered"));
}

#[test]
fn event_after_release_is_use_after_release_once() {
    let mut s = clean_lifecycle();
    s.set_state(QEMU, 1, 0).set_state(QEMU, 2, 0);
    let a = s.audit();
    only(&a, Kind::UseAfterRelease);
}

#[test]
fn release_nested_in_remove_is_no_use_after_release() {
    // As upstream's vfio_ap_mdev_remove: it ends with vfio_put_device(), whose last put runs
    // .release inside it; remove returns after the life ended.
    let mut s = Script::new();
    s.create().open(QEMU, MIG).close(QEMU, MIG);
    s.enter(100, "vfio_ap_mdev_remove", &[MDEV_DEV], LockObs::Free, None)
        .enter(
            100,
            "vfio_ap_mdev_release_dev",
            &[MDEV],
            LockObs::Free,
            None,
        )
        .exit(100, "vfio_ap_mdev_release_dev", MDEV, 0, None)
        .exit(100, "vfio_ap_mdev_remove", MDEV_DEV, 0, None);
    let a = s.audit();
    assert!(a.findings().is_empty(), "{:#?}", a.findings());
    // but a new call after the release still is one
    s.set_state(QEMU, 1, 0);
    let a = s.audit();
    only(&a, Kind::UseAfterRelease);
}

#[test]
fn a_pointer_reused_after_release_is_a_new_incarnation() {
    let mut s = clean_lifecycle();
    s.create()
        .open(QEMU, MIG)
        .close(QEMU, MIG)
        .remove_release(None);
    let a = s.audit();
    assert!(a.findings().is_empty(), "{:#?}", a.findings());
    let snap = a.snapshot();
    assert_eq!(snap.mdevs[0].id.incarnation, 1);
}

#[test]
fn accepted_request_outside_flags_is_invalid_arc_and_refused_one_is_fine() {
    let mut s = Script::new();
    s.create().open(QEMU, MIG);
    s.set_state(QEMU, 5, (-22i64) as u64); // RUNNING_P2P refused: right
    s.set_state(QEMU, 6, 0); // PRE_COPY accepted: wrong
    s.close(QEMU, MIG).remove_release(None);
    let a = s.audit();
    let f = only(&a, Kind::InvalidMigrationArc);
    assert!(f.message.contains("PRE_COPY"), "{}", f.message);
    assert!(f.message.contains("accepted"), "{}", f.message);
}

#[test]
fn wrong_file_return_and_bad_step_and_bad_readback_are_invalid_arcs() {
    // STOP → STOP_COPY without a data file
    let mut s = Script::new();
    s.create()
        .open(QEMU, MIG)
        .set_state(QEMU, 1, 0)
        .set_state(QEMU, 3, 0);
    let a = s.audit();
    assert!(only(&a, Kind::InvalidMigrationArc)
        .message
        .contains("no migration data file"));

    // a step RUNNING → STOP_COPY inside set_state
    let mut s = Script::new();
    s.create().open(QEMU, MIG);
    s.enter(
        QEMU,
        "vfio_ap_set_state",
        &[MDEV, 3],
        LockObs::NotChecked,
        None,
    )
    .enter(
        QEMU,
        "vfio_ap_transition_to_state",
        &[MDEV, 3],
        LockObs::NotChecked,
        None,
    )
    .exit(QEMU, "vfio_ap_transition_to_state", MDEV, 0, None)
    .exit(QEMU, "vfio_ap_set_state", MDEV, FILE as i64, None);
    let a = s.audit();
    assert!(only(&a, Kind::InvalidMigrationArc)
        .message
        .contains("RUNNING → STOP_COPY"));

    // get_state reads back something else than accepted
    let mut s = Script::new();
    s.create().open(QEMU, MIG).set_state(QEMU, 1, 0);
    s.enter(
        QEMU,
        "vfio_ap_get_state",
        &[MDEV, 0x1000],
        LockObs::NotChecked,
        None,
    )
    .exit(QEMU, "vfio_ap_get_state", MDEV, 0, Some(2));
    let a = s.audit();
    assert!(only(&a, Kind::InvalidMigrationArc)
        .message
        .contains("read back RUNNING"));
}

#[test]
fn steps_along_direct_arcs_are_clean() {
    let mut s = Script::new();
    s.create().open(QEMU, MIG);
    s.enter(
        QEMU,
        "vfio_ap_set_state",
        &[MDEV, 3],
        LockObs::NotChecked,
        None,
    )
    .call(QEMU, "vfio_ap_transition_to_state", &[MDEV, 1], 0)
    .call(QEMU, "vfio_ap_transition_to_state", &[MDEV, 3], 0)
    .exit(QEMU, "vfio_ap_set_state", MDEV, FILE as i64, None);
    assert!(s.audit().findings().is_empty());
}

#[test]
fn failed_open_after_init_without_cleanup_is_error_path_leak() {
    let mut s = Script::new();
    s.create()
        .enter(
            QEMU,
            "vfio_ap_mdev_open_device",
            &[MDEV],
            LockObs::Free,
            None,
        )
        .enter(
            QEMU,
            "vfio_ap_init_migration_data",
            &[MDEV],
            LockObs::HeldByCurrent,
            None,
        )
        .exit(QEMU, "vfio_ap_init_migration_data", MDEV, 0, Some(MIG))
        .exit(QEMU, "vfio_ap_mdev_open_device", MDEV, -22, None)
        .remove_release(None);
    let a = s.audit();
    let f = only(&a, Kind::ErrorPathLeak);
    assert!(f.message.contains("-22"), "{}", f.message);
    // reported once: release without freeing does not also call it a leak
}

#[test]
fn failed_open_that_cleans_up_is_clean() {
    let mut s = Script::new();
    s.create()
        .enter(
            QEMU,
            "vfio_ap_mdev_open_device",
            &[MDEV],
            LockObs::Free,
            None,
        )
        .enter(
            QEMU,
            "vfio_ap_init_migration_data",
            &[MDEV],
            LockObs::HeldByCurrent,
            None,
        )
        .exit(QEMU, "vfio_ap_init_migration_data", MDEV, 0, Some(MIG))
        .free_mig(QEMU, MIG)
        .exit(QEMU, "vfio_ap_mdev_open_device", MDEV, -22, None)
        .remove_release(None);
    assert!(s.audit().findings().is_empty());
}

#[test]
fn lost_events_are_a_warning_and_make_later_findings_uncertain() {
    let mut s = Script::new();
    s.create().open(QEMU, MIG);
    s.push(
        0,
        "",
        Body::Lost {
            count: 7,
            source: LossSource::RingBuffer,
        },
    );
    s.call(QEMU, "vfio_ap_mdev_close_device", &[MDEV], 0)
        .remove_release(None);
    let a = s.audit();
    assert_eq!(kinds(&a), vec![Kind::EventsLost, Kind::Leak]);
    assert!(!a.findings()[0].uncertain);
    assert!(
        a.findings()[1].uncertain,
        "the free may have been among the lost"
    );
    assert_eq!(a.snapshot().lost_events, 7);
}

#[test]
fn agent_started_mid_life_raises_nothing_about_before() {
    // No probe, no open, no allocation seen: the mdev already existed.
    let mut s = Script::new();
    s.set_state(QEMU, 1, 0)
        .close(QEMU, MIG)
        .remove_release(None);
    let a = s.audit();
    assert!(a.findings().is_empty(), "{:#?}", a.findings());
    assert!(a.snapshot().mdevs[0].adopted);
}

#[test]
fn allocator_events_merge_with_field_reads_in_all_allocations_mode() {
    let mut s = Script::new();
    s.create()
        .enter(
            QEMU,
            "vfio_ap_mdev_open_device",
            &[MDEV],
            LockObs::Free,
            None,
        )
        .enter(
            QEMU,
            "vfio_ap_init_migration_data",
            &[MDEV],
            LockObs::HeldByCurrent,
            None,
        );
    s.push(
        QEMU,
        "qemu-system-s39",
        Body::Alloc {
            ptr: MIG,
            bytes: 16,
            site: Some(Arc::from("vfio_ap_init_migration_data")),
            allocator: Allocator::Kmalloc,
            stack: vec![],
        },
    );
    s.exit(QEMU, "vfio_ap_init_migration_data", MDEV, 0, Some(MIG))
        .exit(QEMU, "vfio_ap_mdev_open_device", MDEV, 0, None)
        .enter(
            QEMU,
            "vfio_ap_mdev_close_device",
            &[MDEV],
            LockObs::Free,
            None,
        )
        .enter(
            QEMU,
            "vfio_ap_release_migration_data",
            &[MDEV],
            LockObs::HeldByCurrent,
            Some(MIG),
        );
    s.push(
        QEMU,
        "qemu-system-s39",
        Body::Free {
            ptr: MIG,
            site: Some(Arc::from("vfio_ap_release_migration_data")),
            allocator: Allocator::Kmalloc,
        },
    );
    s.exit(QEMU, "vfio_ap_release_migration_data", MDEV, 0, None)
        .exit(QEMU, "vfio_ap_mdev_close_device", MDEV, 0, None)
        .remove_release(None);
    let a = s.audit();
    assert!(a.findings().is_empty(), "{:#?}", a.findings());
}

#[test]
fn a_second_allocator_free_of_the_same_pointer_is_a_double_free() {
    let mut s = Script::new();
    s.create().open(QEMU, MIG).close(QEMU, MIG);
    s.enter(100, "vfio_ap_mdev_remove", &[MDEV_DEV], LockObs::Free, None);
    s.push(
        100,
        "mdevctl",
        Body::Free {
            ptr: MIG,
            site: Some(Arc::from("vfio_ap_mdev_remove")),
            allocator: Allocator::Kmalloc,
        },
    );
    let a = s.audit();
    only(&a, Kind::DoubleFree);
}

#[test]
fn an_accepted_bad_request_taken_in_one_bad_step_is_one_finding() {
    let mut s = Script::new();
    s.create().open(QEMU, MIG);
    s.enter(
        QEMU,
        "vfio_ap_set_state",
        &[MDEV, 6],
        LockObs::NotChecked,
        None,
    )
    .call(QEMU, "vfio_ap_transition_to_state", &[MDEV, 6], 0)
    .exit(QEMU, "vfio_ap_set_state", MDEV, 0, None);
    let a = s.audit();
    assert!(only(&a, Kind::InvalidMigrationArc)
        .message
        .contains("RUNNING → PRE_COPY"));
}

#[test]
fn findings_beyond_the_cap_are_counted_not_kept() {
    let mut a = Auditor::new(Profile::vfio_ap());
    a.stream_findings();
    let mut s = Script::new();
    s.create();
    for e in s.events.iter() {
        a.ingest(e);
    }
    // A close without open, over and over: one lifecycle-order finding each.
    let mut streamed = 0;
    for i in 0..(FINDINGS_KEPT as u64 + 5) {
        let ev = |seq: u64, body: Body| Event {
            seq,
            ts_ns: 2_000_000_000 + seq,
            cpu: 0,
            task: Task {
                pid: QEMU,
                tid: QEMU,
                comm: Arc::from("q"),
            },
            body,
        };
        a.ingest(&ev(
            100 + 2 * i,
            Body::Enter {
                func: Arc::from("vfio_ap_mdev_close_device"),
                args: vec![MDEV],
                field: None,
                lock: LockObs::Free,
                untrusted: false,
                stack: vec![],
            },
        ));
        a.ingest(&ev(
            101 + 2 * i,
            Body::Exit {
                func: Arc::from("vfio_ap_mdev_close_device"),
                ret: 0,
                arg0: MDEV,
                duration_ns: None,
                field: None,
            },
        ));
        streamed += a.take_raised().len();
    }
    assert_eq!(a.findings().len(), FINDINGS_KEPT);
    assert_eq!(a.findings_total(), FINDINGS_KEPT as u64 + 5);
    assert_eq!(
        streamed,
        FINDINGS_KEPT + 5,
        "live sinks still hear every finding"
    );
    assert_eq!(
        a.snapshot().findings_by_kind[&Kind::LifecycleOrder],
        FINDINGS_KEPT as u64 + 5
    );
}

#[test]
fn a_name_read_before_init_dev_names_the_new_life() {
    // The probes read dev_name() at init_dev's entry: the name event precedes the life.
    let mut s = Script::new();
    s.push(
        100,
        "mdevctl",
        Body::MdevName {
            mdev: MDEV,
            uuid: Arc::from("1eac0000-0000-4000-8000-000000000001"),
        },
    );
    s.create().open(QEMU, MIG);
    s.call(QEMU, "vfio_ap_mdev_close_device", &[MDEV], 0)
        .remove_release(None);
    let a = s.audit();
    only(&a, Kind::Leak);
    let m = a.findings()[0].mdev.as_ref().expect("mdev");
    assert_eq!(
        m.uuid.as_deref(),
        Some("1eac0000-0000-4000-8000-000000000001")
    );
}
