//! The allocation ledger: leaks, overwrites, error paths, double and unknown frees.

use super::*;

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
    assert!(
        f.message.contains("failed with -EINVAL"),
        "errno by name: {}",
        f.message
    );
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
