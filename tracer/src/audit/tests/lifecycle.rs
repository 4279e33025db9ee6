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
    assert_eq!(snap.mdevs[0].id.incarnation, 1);
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
