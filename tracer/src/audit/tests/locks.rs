//! Lock contracts at function entry.

use super::*;

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
