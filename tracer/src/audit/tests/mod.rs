//! Each finding kind from a hand-built event sequence: the exact finding and no other.

use super::*;
use crate::model::{Allocator, LossSource, Task};

mod ledger;
mod lifecycle;
mod locks;
mod losses;
mod migration;
mod objects;
mod order;

pub(super) const MDEV: u64 = 0xffff_8880_0a00_0000;
pub(super) const MDEV_DEV: u64 = 0xffff_8880_0b00_0000;
pub(super) const MIG: u64 = 0xffff_8880_0c00_0040;
pub(super) const MIG2: u64 = 0xffff_8880_0c00_0080;

/// Builds event streams: one task per pid, sequence numbers and timestamps in order.
pub(crate) struct Script {
    events: Vec<Event>,
}

impl Script {
    pub(crate) fn new() -> Script {
        Script { events: Vec::new() }
    }

    pub(super) fn push(&mut self, pid: u32, comm: &str, body: Body) -> &mut Self {
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
                args: args.into(),
                field,
                lock,
                untrusted: false,
                locks: Vec::new(),
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

    /// A call made with mdevs_lock held by the caller (a function that asserts it).
    pub(crate) fn call_locked(
        &mut self,
        pid: u32,
        func: &str,
        args: &[u64],
        ret: i64,
    ) -> &mut Self {
        self.enter(pid, func, args, LockObs::HeldByCurrent, None)
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

    /// A request for the last of `steps`, taken one transition step each.
    pub(crate) fn set_state_in_steps(&mut self, pid: u32, steps: &[u64], ret: u64) -> &mut Self {
        let to = *steps.last().expect("a request takes a step");
        self.enter(
            pid,
            "vfio_ap_set_state",
            &[MDEV, to],
            LockObs::NotChecked,
            None,
        );
        for &step in steps {
            self.call_locked(pid, "vfio_ap_transition_to_state", &[MDEV, step], 0);
        }
        self.exit(pid, "vfio_ap_set_state", MDEV, ret as i64, None)
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

    pub(super) fn audit(&self) -> Auditor {
        self.audit_with(Profile::vfio_ap())
    }

    pub(super) fn audit_with(&self, profile: Profile) -> Auditor {
        let mut a = Auditor::new(profile);
        for e in &self.events {
            a.ingest(e);
        }
        a
    }
}

pub(super) const FILE: u64 = 0xffff_8880_0f00_0000;
pub(super) const QEMU: u32 = 4242;

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

pub(super) fn kinds(a: &Auditor) -> Vec<Kind> {
    a.findings().iter().map(|f| f.kind).collect()
}

pub(super) fn only(a: &Auditor, kind: Kind) -> &Finding {
    assert_eq!(kinds(a), vec![kind], "{:#?}", a.findings());
    &a.findings()[0]
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
                args: [MDEV].into(),
                field: None,
                lock: LockObs::Free,
                untrusted: false,
                locks: Vec::new(),
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

/// Handing events over by value (the pipeline's way: entries move into their frames) decides
/// exactly what borrowing them does, and gives back every event it does not keep.
#[test]
fn an_owned_stream_audits_as_a_borrowed_one() {
    use crate::synth::{Fault, Generator};
    let mut g = Generator::new(11);
    g.fault_every = 7;
    g.faults = vec![
        Fault::Leak,
        Fault::OverwriteLeak,
        Fault::LockNotHeld,
        Fault::InvalidArc,
        Fault::ErrorPathLeak,
    ];
    let evs = g.stream(20_000);
    let mut borrowed = Auditor::new(Profile::vfio_ap());
    let mut owned = Auditor::new(Profile::vfio_ap());
    for e in &evs {
        borrowed.ingest(e);
        let back = owned.ingest_owned(e.clone());
        let seen = back.as_ref().or_else(|| owned.last_entry());
        assert_eq!(seen, Some(e), "the event just ingested is readable");
        if back.is_none() {
            assert!(
                matches!(e.body, Body::Enter { .. }),
                "only entries are kept"
            );
        }
    }
    assert!(borrowed.findings_total() >= 5, "the faults were found");
    assert_eq!(owned.findings(), borrowed.findings());
    assert_eq!(owned.snapshot(), borrowed.snapshot());
    assert_eq!(owned.finish(), borrowed.finish());
}
