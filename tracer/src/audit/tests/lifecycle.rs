//! An mdev's life: order, use after release, incarnations, adoption, names.

use super::*;

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
    let lives: Vec<u32> = snap.mdevs.iter().map(|m| m.id.incarnation).collect();
    assert_eq!(lives, vec![0, 1], "the earlier life is still there");
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

/// One pointer, two devices one after the other: a leak in the first life only, a migration
/// in each.
pub(crate) fn two_lives_one_pointer() -> Vec<Event> {
    let mut g = crate::synth::Generator::new(7);
    g.migrations = 1;
    // Life 4096 and life 0 of the generator share their object pointer.
    g.fault_every = 4097;
    g.faults = vec![crate::synth::Fault::Leak];
    assert_eq!(g.life(4096, 1), Some(crate::synth::Fault::Leak));
    assert_eq!(g.life(0, 1), None);
    g.into_events()
}

#[test]
fn a_reused_pointer_keeps_both_lives_in_state_findings_and_timelines() {
    let mut a = Auditor::new(Profile::vfio_ap());
    for e in two_lives_one_pointer() {
        a.ingest(&e);
    }
    let leak = only(&a, Kind::Leak);
    let leak_ref = leak.mdev.as_ref().expect("about an mdev");
    assert_eq!(leak_ref.incarnation, 0, "the leak is the first life's");
    let snap = a.snapshot();
    assert_eq!(snap.mdevs.len(), 2, "{:#?}", snap.mdevs);
    let (first, second) = (&snap.mdevs[0], &snap.mdevs[1]);
    assert_eq!(first.id.ptr, second.id.ptr);
    assert_eq!((first.id.incarnation, second.id.incarnation), (0, 1));
    assert_ne!(
        first.id.uuid, second.id.uuid,
        "each life keeps its own name"
    );
    assert_eq!((first.findings, second.findings), (1, 0));
    for m in [first, second] {
        assert_eq!(m.phase, Phase::Released);
        assert!(
            m.timeline.iter().any(|t| t.what == "STOP → STOP_COPY"),
            "life {} keeps its migration: {:#?}",
            m.id.incarnation,
            m.timeline
        );
    }
    assert!(first.timeline.last().map(|t| t.seq) < second.timeline.first().map(|t| t.seq));
    assert_eq!(a.finish().mdevs_seen, 2);
}

#[test]
fn a_new_life_on_an_object_never_released_is_a_lifecycle_order_warning() {
    let mut s = Script::new();
    s.create().open(QEMU, MIG);
    // The release of this life was never seen; init_dev hands out the same object again.
    s.create();
    let a = s.audit();
    let f = only(&a, Kind::LifecycleOrder);
    assert_eq!(f.severity, Severity::Warning);
    assert!(f.message.contains("never released"), "{}", f.message);
    assert_eq!(f.mdev.as_ref().map(|m| m.incarnation), Some(0));
    let snap = a.snapshot();
    assert_eq!(snap.mdevs.len(), 2);
    assert_eq!(
        snap.mdevs[0].phase,
        Phase::Open,
        "the old life is not rewritten"
    );
    assert_eq!(snap.mdevs[1].phase, Phase::Registered);
    // Its mig_data stays the first life's, not the new device's.
    assert_eq!(
        (snap.mdevs[0].outstanding, snap.mdevs[1].outstanding),
        (1, 0)
    );
    let out = a.finish().outstanding;
    assert_eq!(out.len(), 1);
    assert_eq!(out[0].mdev.as_ref().map(|m| m.incarnation), Some(0));
}

/// vfio_ap without the live-migration series (mainline): probe, init_dev, open and close
/// (the KVM pointer only), a reset of the queues, remove, release_dev; no migration data
/// ever. A whole life, no finding, nothing outstanding, the life ended.
#[test]
fn a_mainline_life_without_the_series_is_clean() {
    let mut s = Script::new();
    s.enter(100, "vfio_ap_mdev_probe", &[MDEV_DEV], LockObs::Free, None)
        .call(100, "vfio_ap_mdev_init_dev", &[MDEV], 0)
        .exit(100, "vfio_ap_mdev_probe", MDEV_DEV, 0, None)
        .call(QEMU, "vfio_ap_mdev_open_device", &[MDEV], 0)
        .call(QEMU, "vfio_ap_mdev_close_device", &[MDEV], 0)
        .call(QEMU, "vfio_ap_mdev_open_device", &[MDEV], 0)
        .call(QEMU, "vfio_ap_mdev_close_device", &[MDEV], 0)
        .remove_release(None);
    let a = s.audit();
    assert!(a.findings().is_empty(), "{:#?}", a.findings());
    let snap = a.snapshot();
    assert_eq!(snap.mdevs.len(), 1);
    assert_eq!(snap.mdevs[0].phase, crate::audit::Phase::Released);
    assert!(a.finish().outstanding.is_empty());
}
