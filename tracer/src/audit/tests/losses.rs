//! Lost events and the uncertainty they cast.

use super::*;

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
fn a_compiler_clone_in_the_window_makes_a_finding_uncertain_with_its_reason() {
    // close frees mig_data through a clone of release_migration_data: its argument cannot
    // be believed, so the free is not seen and the leak at release may be wrong.
    let mut s = Script::new();
    s.create().open(QEMU, MIG);
    s.enter(
        QEMU,
        "vfio_ap_mdev_close_device",
        &[MDEV],
        LockObs::Free,
        None,
    )
    .enter(
        QEMU,
        "vfio_ap_release_migration_data.isra.0",
        &[MDEV],
        LockObs::HeldByCurrent,
        Some(MIG),
    )
    .exit(QEMU, "vfio_ap_release_migration_data.isra.0", MDEV, 0, None)
    .exit(QEMU, "vfio_ap_mdev_close_device", MDEV, 0, None)
    .remove_release(None);
    let a = s.audit();
    let f = only(&a, Kind::Leak);
    assert!(f.uncertain);
    assert_eq!(f.severity, Severity::Error, "still a finding: it counts");
    let why = f.uncertainty.as_deref().expect("a reason");
    assert!(
        why.contains("vfio_ap_release_migration_data.isra.0") && why.contains("compiler clone"),
        "{why}"
    );

    // The same life without the clone: a certain leak.
    let mut s = Script::new();
    s.create().open(QEMU, MIG);
    s.call(QEMU, "vfio_ap_mdev_close_device", &[MDEV], 0)
        .remove_release(None);
    let a = s.audit();
    let f = only(&a, Kind::Leak);
    assert!(!f.uncertain && f.uncertainty.is_none());
}

#[test]
fn a_missed_return_in_the_window_makes_a_finding_uncertain() {
    let mut s = Script::new();
    s.create().open(QEMU, MIG);
    // close's return arrives while release_migration_data's never did.
    s.enter(
        QEMU,
        "vfio_ap_mdev_close_device",
        &[MDEV],
        LockObs::Free,
        None,
    )
    .enter(
        QEMU,
        "vfio_ap_get_state",
        &[MDEV, 0],
        LockObs::NotChecked,
        None,
    )
    .exit(QEMU, "vfio_ap_mdev_close_device", MDEV, 0, None)
    .remove_release(None);
    let a = s.audit();
    let f = only(&a, Kind::Leak);
    assert!(f.uncertain);
    assert!(
        f.uncertainty
            .as_deref()
            .is_some_and(|w| w.contains("missed")),
        "{:?}",
        f.uncertainty
    );
}

#[test]
fn an_untrusted_call_of_another_mdev_leaves_a_finding_certain() {
    let mut s = Script::new();
    s.create().open(QEMU, MIG);
    let other = MDEV + 0x1000;
    s.enter(
        QEMU,
        "vfio_ap_mdev_close_device",
        &[other],
        LockObs::Free,
        None,
    )
    .enter(
        QEMU,
        "vfio_ap_release_migration_data.isra.0",
        &[other],
        LockObs::HeldByCurrent,
        None,
    )
    .exit(
        QEMU,
        "vfio_ap_release_migration_data.isra.0",
        other,
        0,
        None,
    )
    .exit(QEMU, "vfio_ap_mdev_close_device", other, 0, None);
    s.call(QEMU, "vfio_ap_mdev_close_device", &[MDEV], 0)
        .remove_release(None);
    let a = s.audit();
    let leak = a
        .findings()
        .iter()
        .find(|f| f.kind == Kind::Leak)
        .expect("a leak");
    assert!(!leak.uncertain, "{:?}", leak.uncertainty);
}
