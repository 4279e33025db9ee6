//! Migration requests, data files, steps and read-backs.

use super::*;
use crate::audit::migration::MigState;

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
    assert!(
        f.message
            .contains("PRE_COPY needs VFIO_MIGRATION_PRE_COPY, which the device did not set"),
        "the missing flag is named: {}",
        f.message
    );
}

#[test]
fn a_state_needing_two_flags_names_each_missing_one() {
    let flags = crate::profile::VFIO_MIGRATION_STOP_COPY;
    assert_eq!(
        MigState::PreCopyP2p.missing_flags(flags),
        vec!["VFIO_MIGRATION_P2P", "VFIO_MIGRATION_PRE_COPY"]
    );
    assert_eq!(
        MigState::PreCopyP2p.missing_flags(flags | crate::profile::VFIO_MIGRATION_P2P),
        vec!["VFIO_MIGRATION_PRE_COPY"]
    );
    assert!(MigState::StopCopy.missing_flags(flags).is_empty());
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
    s.set_state_in_steps(QEMU, &[1, 3], FILE);
    assert!(s.audit().findings().is_empty());
}

#[test]
fn an_accepted_bad_request_taken_in_one_bad_step_is_one_finding() {
    let mut s = Script::new();
    s.create().open(QEMU, MIG);
    s.set_state_in_steps(QEMU, &[6], 0);
    let a = s.audit();
    assert!(only(&a, Kind::InvalidMigrationArc)
        .message
        .contains("RUNNING → PRE_COPY"));
}

#[test]
fn a_step_returning_a_data_file_is_no_failure_and_err_ptr_is() {
    // transition_to_state returns struct file *: an s390 address whose low half reads as a
    // negative int is a file, not an errno; only an ERR_PTR fails.
    let file = 0x0000_0000_8123_4560u64;
    let mut s = Script::new();
    s.create().open(QEMU, MIG);
    s.enter(QEMU, "vfio_ap_set_state", &[MDEV, 1], LockObs::Free, None)
        .enter(
            QEMU,
            "vfio_ap_transition_to_state",
            &[MDEV, 1],
            LockObs::NotChecked,
            None,
        )
        .exit(QEMU, "vfio_ap_transition_to_state", MDEV, 0, None)
        .exit(QEMU, "vfio_ap_set_state", MDEV, 0, None)
        .enter(QEMU, "vfio_ap_set_state", &[MDEV, 3], LockObs::Free, None)
        .enter(
            QEMU,
            "vfio_ap_transition_to_state",
            &[MDEV, 3],
            LockObs::NotChecked,
            None,
        )
        .exit(QEMU, "vfio_ap_transition_to_state", MDEV, file as i64, None)
        .exit(QEMU, "vfio_ap_set_state", MDEV, file as i64, None)
        .enter(QEMU, "vfio_ap_set_state", &[MDEV, 1], LockObs::Free, None)
        .enter(
            QEMU,
            "vfio_ap_transition_to_state",
            &[MDEV, 1],
            LockObs::NotChecked,
            None,
        )
        .exit(QEMU, "vfio_ap_transition_to_state", MDEV, -12, None)
        .exit(QEMU, "vfio_ap_set_state", MDEV, -12, None);
    let a = s.audit();
    assert!(a.findings().is_empty(), "{:#?}", a.findings());
    let (_, step) = a
        .function_stats()
        .find(|(n, _)| *n == "vfio_ap_transition_to_state")
        .unwrap();
    assert_eq!(
        (step.exits, step.failures),
        (3, 1),
        "only the ERR_PTR failed"
    );
}

/// A save and a restore on one host, as the series' clean migration does them: the
/// sessions with their states, bytes, size and guest.
#[test]
fn a_save_and_a_restore_are_two_sessions_with_bytes_and_size() {
    const DST: u64 = MDEV + 0x1000;
    const FILE2: u64 = FILE + 0x100;
    let mut s = Script::new();
    s.create().open(QEMU, MIG);
    s.push(
        QEMU,
        "qemu-system-s39",
        Body::GuestName {
            guest_pid: QEMU,
            name: Arc::from("vm1"),
        },
    );
    // A second device, opened by the same guest, restored from the first's bytes.
    s.enter(
        100,
        "vfio_ap_mdev_probe",
        &[MDEV_DEV + 8],
        LockObs::Free,
        None,
    )
    .call(100, "vfio_ap_mdev_init_dev", &[DST], 0)
    .exit(100, "vfio_ap_mdev_probe", MDEV_DEV + 8, 0, None);
    s.enter(
        QEMU,
        "vfio_ap_mdev_open_device",
        &[DST],
        LockObs::Free,
        None,
    )
    .exit(QEMU, "vfio_ap_mdev_open_device", DST, 0, None);
    s.set_state(QEMU, 1, 0)
        .enter(
            QEMU,
            "vfio_ap_get_data_size",
            &[MDEV, 0x7000],
            LockObs::Free,
            None,
        )
        .exit(QEMU, "vfio_ap_get_data_size", MDEV, 0, Some(72))
        .set_state(QEMU, 3, FILE);
    for n in [40, 32, 0] {
        s.enter(
            QEMU,
            "vfio_ap_stop_copy_read",
            &[FILE, 0x8000, 4096, 0x9000],
            LockObs::Free,
            None,
        )
        .exit(QEMU, "vfio_ap_stop_copy_read", FILE, n, None);
    }
    s.enter(QEMU, "vfio_ap_set_state", &[DST, 1], LockObs::Free, None)
        .exit(QEMU, "vfio_ap_set_state", DST, 0, None)
        .enter(QEMU, "vfio_ap_set_state", &[DST, 4], LockObs::Free, None)
        .exit(QEMU, "vfio_ap_set_state", DST, FILE2 as i64, None);
    for n in [30, 30, 12] {
        s.enter(
            QEMU,
            "vfio_ap_resuming_write",
            &[FILE2, 0x8000, n as u64, 0x9000],
            LockObs::Free,
            None,
        )
        .exit(QEMU, "vfio_ap_resuming_write", FILE2, n, None);
    }
    s.enter(QEMU, "vfio_ap_set_state", &[DST, 1], LockObs::Free, None)
        .exit(QEMU, "vfio_ap_set_state", DST, 0, None)
        .enter(QEMU, "vfio_ap_set_state", &[DST, 2], LockObs::Free, None)
        .exit(QEMU, "vfio_ap_set_state", DST, 0, None);
    s.set_state(QEMU, 1, 0).close(QEMU, MIG);
    let a = s.audit();
    assert_eq!(kinds(&a), vec![], "{:#?}", a.findings());
    let m = a.migrations();
    let got: Vec<_> = m
        .iter()
        .map(|x| {
            (
                x.direction,
                x.mdev.ptr,
                x.bytes,
                x.size,
                x.end,
                x.guest_label(),
            )
        })
        .collect();
    use crate::audit::migration::session::{Direction, SessionEnd};
    assert_eq!(
        got,
        vec![
            (
                Direction::Save,
                MDEV,
                72,
                Some(72),
                SessionEnd::Closed,
                "vm1".to_string()
            ),
            (
                Direction::Restore,
                DST,
                72,
                None,
                SessionEnd::Running,
                "vm1".to_string()
            ),
        ]
    );
    let states: Vec<_> = m[0].states.iter().map(|t| t.state).collect();
    assert_eq!(
        states,
        vec![MigState::Stop, MigState::StopCopy, MigState::Stop]
    );
    assert!(
        m[0].stopped_ns > m[0].duration_ns,
        "stopped before STOP_COPY began"
    );
    assert_eq!(a.snapshot().migrations, m);
}

/// The built-in profile for a device with other migration flags, as a driver other than
/// today's vfio_ap may declare.
fn with_flags(migration_flags: u32) -> Profile {
    Profile {
        migration_flags,
        ..Profile::vfio_ap()
    }
}

/// A device declaring every optional feature.
fn with_p2p_and_pre_copy() -> Profile {
    with_flags(
        crate::profile::VFIO_MIGRATION_STOP_COPY
            | crate::profile::VFIO_MIGRATION_P2P
            | crate::profile::VFIO_MIGRATION_PRE_COPY,
    )
}

#[test]
fn with_p2p_running_to_pre_copy_is_one_direct_step() {
    // The core steps RUNNING -> PRE_COPY directly whether or not the device has P2P.
    let mut s = Script::new();
    s.create().open(QEMU, MIG);
    s.set_state_in_steps(QEMU, &[6], FILE)
        .set_state_in_steps(QEMU, &[2], 0);
    let a = s.audit_with(with_p2p_and_pre_copy());
    assert!(a.findings().is_empty(), "{:#?}", a.findings());
}

#[test]
fn stop_copy_back_to_pre_copy_accepted_is_an_invalid_arc() {
    // The core refuses STOP_COPY -> PRE_COPY outright; a driver that takes it has no way
    // there along the arcs the uAPI defines.
    let mut s = Script::new();
    s.create().open(QEMU, MIG);
    s.set_state(QEMU, 3, FILE).set_state(QEMU, 6, 0);
    let a = s.audit_with(with_p2p_and_pre_copy());
    let f = only(&a, Kind::InvalidMigrationArc);
    assert!(
        f.message.contains("STOP_COPY → PRE_COPY"),
        "the refused walk is named: {}",
        f.message
    );
}

#[test]
fn with_pre_copy_the_file_comes_with_pre_copy_and_stop_copy_keeps_it() {
    // uAPI: RUNNING -> PRE_COPY begins the saving and returns the data file; PRE_COPY ->
    // STOP_COPY stays in the same transfer and returns none.
    let pre = with_flags(
        crate::profile::VFIO_MIGRATION_STOP_COPY | crate::profile::VFIO_MIGRATION_PRE_COPY,
    );
    let mut s = Script::new();
    s.create().open(QEMU, MIG);
    s.set_state(QEMU, 6, FILE)
        .set_state(QEMU, 3, 0)
        .set_state(QEMU, 1, 0)
        .set_state(QEMU, 2, 0);
    let a = s.audit_with(pre.clone());
    assert!(a.findings().is_empty(), "{:#?}", a.findings());

    let mut s = Script::new();
    s.create().open(QEMU, MIG);
    s.set_state(QEMU, 6, 0);
    let a = s.audit_with(pre);
    assert!(
        only(&a, Kind::InvalidMigrationArc)
            .message
            .contains("into PRE_COPY but returned no migration data file"),
        "{:#?}",
        a.findings()
    );
}
