//! Migration files and configuration buffers as objects of their mdev's life.

use super::*;

const BUF: u64 = 0xffff_8880_0d00_0100;
const BUF2: u64 = 0xffff_8880_0d00_0200;
const STOP_COPY: u64 = 3;
const RESUMING: u64 = 4;

impl Script {
    /// set_state into STOP_COPY or RESUMING: the step opens the migration file `filp`.
    fn open_file(&mut self, to: u64, filp: u64) -> &mut Self {
        self.enter(QEMU, "vfio_ap_set_state", &[MDEV, to], LockObs::Free, None)
            .enter(
                QEMU,
                "vfio_ap_transition_to_state",
                &[MDEV, to],
                LockObs::HeldByCurrent,
                None,
            )
            .enter(
                QEMU,
                "vfio_ap_open_file_stream",
                &[MDEV, 0xffff_ffff_c000_0000, 0],
                LockObs::HeldByCurrent,
                None,
            )
            .exit(QEMU, "vfio_ap_open_file_stream", MDEV, filp as i64, None)
            .exit(QEMU, "vfio_ap_transition_to_state", MDEV, filp as i64, None)
            .exit(QEMU, "vfio_ap_set_state", MDEV, filp as i64, None)
    }

    fn alloc(&mut self, ptr: u64, bytes: u64, site: &str, allocator: Allocator) -> &mut Self {
        self.push(
            QEMU,
            "qemu-system-s39",
            Body::Alloc {
                ptr,
                bytes,
                site: Some(Arc::from(site)),
                allocator,
                stack: vec![],
            },
        )
    }

    fn free(&mut self, ptr: u64, site: &str) -> &mut Self {
        self.push(
            QEMU,
            "qemu-system-s39",
            Body::Free {
                ptr,
                site: Some(Arc::from(site)),
                allocator: Allocator::Kmalloc,
            },
        )
    }

    /// The first read of the stop-copy file: vfio_ap_get_config allocates `buf` into the
    /// slot (the allocator's event only with `all`).
    fn first_read(&mut self, filp: u64, buf: u64, all: bool) -> &mut Self {
        self.enter(
            QEMU,
            "vfio_ap_stop_copy_read",
            &[filp, 0x7ff0, 8, 0],
            LockObs::Free,
            None,
        )
        .enter(
            QEMU,
            "vfio_ap_get_config",
            &[MDEV],
            LockObs::HeldByCurrent,
            None,
        );
        if all {
            self.alloc(buf, 72, "vfio_ap_get_config+0x5c", Allocator::Kmalloc);
        }
        self.exit(QEMU, "vfio_ap_get_config", MDEV, 0, Some(buf))
            .exit(QEMU, "vfio_ap_stop_copy_read", filp, 8, None)
    }

    /// A write into the resuming file; with `alloc`, its first: allocate_ap_config's
    /// kvzalloc. `free` frees a buffer inside the write.
    fn write(&mut self, filp: u64, alloc: Option<u64>, free: Option<u64>, ret: i64) -> &mut Self {
        self.write_seen(filp, alloc, true, free, ret)
    }

    /// [`Script::write`], the allocator's event only with `all`.
    fn write_seen(
        &mut self,
        filp: u64,
        alloc: Option<u64>,
        all: bool,
        free: Option<u64>,
        ret: i64,
    ) -> &mut Self {
        self.enter(
            QEMU,
            "vfio_ap_resuming_write",
            &[filp, 0x7ff0, 32, 0],
            LockObs::Free,
            None,
        );
        if let Some(b) = alloc {
            self.enter(
                QEMU,
                "allocate_ap_config",
                &[0x7ffc_0000, 0x7ff0, 32],
                LockObs::Free,
                None,
            );
            if all {
                self.alloc(b, 72, "allocate_ap_config+0x40", Allocator::Kvmalloc);
            }
            self.exit(QEMU, "allocate_ap_config", 0x7ffc_0000, 72, Some(b));
        }
        if let Some(b) = free {
            self.free(b, "vfio_ap_resuming_write+0x90");
        }
        self.exit(QEMU, "vfio_ap_resuming_write", filp, ret, None)
    }

    /// A release helper (argument 0 is mig_data), its read finding `buf` in its slot; the
    /// allocator's free of it inside when `freed` (seen with --all-allocations).
    fn release_helper(&mut self, helper: &str, buf: u64, freed: bool) -> &mut Self {
        self.enter(QEMU, helper, &[MIG], LockObs::HeldByCurrent, Some(buf));
        if freed {
            self.free(buf, &format!("{helper}+0x1c"));
        }
        self.exit(QEMU, helper, MIG, 0, None)
    }

    /// vfio_ap_release_mig_files: the two release helpers, their reads finding `stop_copy`
    /// and `resuming` in the slots; `frees` are the allocator's frees seen inside them.
    fn release_files(&mut self, stop_copy: u64, resuming: u64, frees: &[u64]) -> &mut Self {
        self.enter(
            QEMU,
            "vfio_ap_release_mig_files",
            &[MDEV],
            LockObs::HeldByCurrent,
            None,
        )
        .release_helper(
            "vfio_ap_release_stop_copy_file",
            stop_copy,
            stop_copy != 0 && frees.contains(&stop_copy),
        )
        .release_helper(
            "vfio_ap_release_resuming_file",
            resuming,
            resuming != 0 && frees.contains(&resuming),
        )
        .exit(QEMU, "vfio_ap_release_mig_files", MDEV, 0, None)
    }

    /// close_device with a migration fd open and the fault that keeps the buffers: the
    /// files are dropped, the release helpers are not called.
    fn close_keeping_buffers(&mut self) -> &mut Self {
        self.enter(
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
        )
        .enter(
            QEMU,
            "vfio_ap_release_mig_files",
            &[MDEV],
            LockObs::HeldByCurrent,
            None,
        )
        .exit(QEMU, "vfio_ap_release_mig_files", MDEV, 0, None)
        .exit(QEMU, "vfio_ap_release_migration_data", MDEV, 0, None)
        .exit(QEMU, "vfio_ap_mdev_close_device", MDEV, 0, None)
    }

    /// close_device: release_migration_data, which releases the files first.
    fn close_files(&mut self, stop_copy: u64, resuming: u64, frees: &[u64]) -> &mut Self {
        self.enter(
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
        )
        .release_files(stop_copy, resuming, frees)
        .exit(QEMU, "vfio_ap_release_migration_data", MDEV, 0, None)
        .exit(QEMU, "vfio_ap_mdev_close_device", MDEV, 0, None)
    }

    fn reset(&mut self, stop_copy: u64, resuming: u64, frees: &[u64]) -> &mut Self {
        self.enter(
            QEMU,
            "vfio_ap_reset_migration_state",
            &[MDEV],
            LockObs::HeldByCurrent,
            None,
        )
        .release_files(stop_copy, resuming, frees)
        .exit(QEMU, "vfio_ap_reset_migration_state", MDEV, 0, None)
    }

    fn release_file(&mut self, filp: u64) -> &mut Self {
        self.enter(
            QEMU,
            "vfio_ap_release_mig_file",
            &[0x1, filp],
            LockObs::Free,
            None,
        )
        .exit(QEMU, "vfio_ap_release_mig_file", 0x1, 0, None)
    }
}

const FILE2: u64 = FILE + 0x100;

/// Save into STOP_COPY, then restore into RESUMING on the same device, both files closed
/// with the device: every buffer freed by the release helpers release_mig_files calls.
fn clean_migration(all: bool) -> Script {
    let mut s = Script::new();
    s.create().open(QEMU, MIG);
    s.set_state(QEMU, 1, 0)
        .open_file(STOP_COPY, FILE)
        .first_read(FILE, BUF, all)
        .set_state(QEMU, 1, 0)
        .open_file(RESUMING, FILE2)
        .write_seen(FILE2, Some(BUF2), all, None, 32)
        .write(FILE2, None, None, 32)
        .write(FILE2, None, None, 8)
        .set_state(QEMU, 1, 0)
        .set_state(QEMU, 2, 0);
    let frees: &[u64] = if all { &[BUF, BUF2] } else { &[] };
    s.close_files(BUF, BUF2, frees);
    s.release_file(FILE)
        .release_file(FILE2)
        .remove_release(None);
    s
}

#[test]
fn a_clean_migration_has_no_finding_in_either_mode() {
    for all in [false, true] {
        let a = clean_migration(all).audit();
        assert!(a.findings().is_empty(), "all={all}: {:#?}", a.findings());
        assert!(a.finish().outstanding.is_empty(), "all={all}");
    }
}

#[test]
fn reset_during_stop_copy_frees_the_buffer_no_finding() {
    for all in [false, true] {
        let frees: &[u64] = if all { &[BUF] } else { &[] };
        let mut s = Script::new();
        s.create().open(QEMU, MIG);
        s.set_state(QEMU, 1, 0)
            .open_file(STOP_COPY, FILE)
            .first_read(FILE, BUF, all)
            .reset(BUF, 0, frees)
            .release_file(FILE)
            .close(QEMU, MIG)
            .remove_release(None);
        let a = s.audit();
        assert!(a.findings().is_empty(), "all={all}: {:#?}", a.findings());
        assert!(a.finish().outstanding.is_empty(), "all={all}");
    }
}

#[test]
fn close_with_the_fd_open_in_the_correct_driver_is_clean() {
    for all in [false, true] {
        let frees: &[u64] = if all { &[BUF] } else { &[] };
        let mut s = Script::new();
        s.create().open(QEMU, MIG);
        s.set_state(QEMU, 1, 0)
            .open_file(STOP_COPY, FILE)
            .first_read(FILE, BUF, all)
            .close_files(BUF, 0, frees)
            // the fd pins the device: its release comes before release_dev
            .release_file(FILE)
            .remove_release(None);
        let a = s.audit();
        assert!(a.findings().is_empty(), "all={all}: {:#?}", a.findings());
    }
}

#[test]
fn a_file_used_after_its_mdev_was_released_is_file_after_release() {
    let mut s = Script::new();
    s.create().open(QEMU, MIG);
    s.set_state(QEMU, 1, 0)
        .open_file(STOP_COPY, FILE)
        .close_files(0, 0, &[])
        .remove_release(None);
    s.enter(
        QEMU,
        "vfio_ap_stop_copy_read",
        &[FILE, 0x7ff0, 8, 0],
        LockObs::Free,
        None,
    )
    .exit(QEMU, "vfio_ap_stop_copy_read", FILE, -19, None)
    .release_file(FILE);
    let a = s.audit();
    let f = only(&a, Kind::FileAfterRelease);
    assert_eq!(f.severity, Severity::Error);
    assert_eq!(f.function.as_deref(), Some("vfio_ap_stop_copy_read"));
    assert!(f.message.contains(&format!("{FILE:#x}")), "{}", f.message);
    assert!(
        f.message.contains("vfio_ap_open_file_stream"),
        "{}",
        f.message
    );
    // evidence: the open that made the file, and the read
    assert_eq!(f.evidence.len(), 2, "{:#?}", f.evidence);
    assert_eq!(f.mdev.as_ref().map(|m| m.ptr), Some(MDEV));
}

#[test]
fn a_file_released_while_its_mdev_lives_is_clean_and_forgotten() {
    let mut s = Script::new();
    s.create().open(QEMU, MIG);
    s.set_state(QEMU, 1, 0)
        .open_file(STOP_COPY, FILE)
        .release_file(FILE)
        .close(QEMU, MIG)
        .remove_release(None);
    // The pointer is reused by some other file: no longer ours.
    s.enter(
        QEMU,
        "vfio_ap_stop_copy_read",
        &[FILE, 0x7ff0, 8, 0],
        LockObs::Free,
        None,
    );
    let a = s.audit();
    assert!(a.findings().is_empty(), "{:#?}", a.findings());
}

#[test]
fn a_buffer_still_in_its_slot_at_close_is_buffer_held_at_close_not_a_leak() {
    // in the default mode too: get_config's read at its return is the allocation
    for all in [false, true] {
        let mut s = Script::new();
        s.create().open(QEMU, MIG);
        s.set_state(QEMU, 1, 0)
            .open_file(STOP_COPY, FILE)
            .first_read(FILE, BUF, all)
            .close_keeping_buffers()
            .release_file(FILE)
            .remove_release(None);
        let a = s.audit();
        let f = only(&a, Kind::BufferHeldAtClose);
        assert_eq!(f.severity, Severity::Error);
        assert_eq!(f.function.as_deref(), Some("vfio_ap_get_config"));
        if all {
            assert!(f.message.contains("72 bytes"), "{}", f.message);
        }
        assert!(f.message.contains(&format!("{BUF:#x}")), "{}", f.message);
        assert!(
            f.message.contains("vfio_ap_mdev_close_device"),
            "{}",
            f.message
        );
    }
}

#[test]
fn a_resuming_buffer_freed_by_a_write_and_again_by_the_release_is_a_double_free() {
    let mut s = Script::new();
    s.create().open(QEMU, MIG);
    s.set_state(QEMU, 1, 0)
        .open_file(RESUMING, FILE)
        .write(FILE, Some(BUF2), None, 32)
        // past the end: the write frees the stored buffer and leaves it in the slot
        .write(FILE, None, Some(BUF2), -5)
        .reset(0, BUF2, &[])
        .release_file(FILE)
        .close(QEMU, MIG)
        .remove_release(None);
    let a = s.audit();
    let f = only(&a, Kind::DoubleFree);
    assert_eq!(f.function.as_deref(), Some("vfio_ap_release_resuming_file"));
    assert!(f.message.contains(&format!("{BUF2:#x}")), "{}", f.message);
    assert_eq!(f.mdev.as_ref().map(|m| m.ptr), Some(MDEV));
}

#[test]
fn a_partial_write_whose_buffer_is_never_stored_leaks_it() {
    for all in [false, true] {
        let mut s = Script::new();
        s.create().open(QEMU, MIG);
        s.set_state(QEMU, 1, 0)
            .open_file(RESUMING, FILE)
            .write_seen(FILE, Some(BUF2), all, None, 32)
            .write(FILE, None, None, -14)
            .release_file(FILE)
            .close_files(0, 0, &[])
            .remove_release(None);
        let a = s.audit();
        let f = only(&a, Kind::Leak);
        assert_eq!(f.function.as_deref(), Some("allocate_ap_config"));
        assert_eq!(
            f.mdev.as_ref().map(|m| m.ptr),
            Some(MDEV),
            "all={all}: the file's mdev"
        );
    }
}

/// The default mode sees no free that is not a release helper: a write's own kvfree of the
/// stored buffer, then the helper's free of it, is one free there (the testbed's
/// series-partial-resume stays in --all-allocations mode for this).
#[test]
fn the_default_mode_cannot_see_a_writes_own_free_of_the_stored_buffer() {
    let mut s = Script::new();
    s.create().open(QEMU, MIG);
    s.set_state(QEMU, 1, 0)
        .open_file(RESUMING, FILE)
        .write_seen(FILE, Some(BUF2), false, None, 32)
        .write_seen(FILE, None, false, None, -5)
        .reset(0, BUF2, &[])
        .release_file(FILE)
        .close(QEMU, MIG)
        .remove_release(None);
    let a = s.audit();
    assert!(a.findings().is_empty(), "{:#?}", a.findings());
}

#[test]
fn release_helpers_freeing_one_buffer_twice_is_a_double_free_in_the_default_mode() {
    let mut s = Script::new();
    s.create().open(QEMU, MIG);
    s.set_state(QEMU, 1, 0)
        .open_file(RESUMING, FILE)
        .write(FILE, None, None, 32)
        .reset(0, BUF2, &[])
        .reset(0, BUF2, &[]);
    let a = s.audit();
    only(&a, Kind::DoubleFree);
    // Seen allocated in the default mode (allocate_ap_config's return) and freed by the
    // first reset's helper: the second helper's free is a double free too.
    let mut s = Script::new();
    s.create().open(QEMU, MIG);
    s.set_state(QEMU, 1, 0)
        .open_file(RESUMING, FILE)
        .write_seen(FILE, Some(BUF2), false, None, 32)
        .reset(0, BUF2, &[])
        .reset(0, BUF2, &[]);
    let a = s.audit();
    only(&a, Kind::DoubleFree);
}

/// How the probes attached, with `missing` not in the kernel (inlined) and every other row of
/// the built-in profile attached.
fn attached_but(missing: &[&str]) -> Vec<crate::recording::ProbeStatus> {
    use crate::recording::{ProbeState, ProbeStatus};
    Profile::vfio_ap()
        .functions
        .iter()
        .map(|f| ProbeStatus {
            name: f.name.clone(),
            state: if missing.contains(&f.name.as_str()) {
                ProbeState::Missing
            } else {
                ProbeState::Attached
            },
            detail: String::new(),
        })
        .collect()
}

/// `s` audited by an auditor told that the rows in `missing` could not be probed.
fn audit_without(s: &Script, missing: &[&str]) -> Auditor {
    let mut a = Auditor::new(Profile::vfio_ap());
    a.probes_attached(&attached_but(missing));
    for e in &s.events {
        a.ingest(e);
    }
    a
}

#[test]
fn with_the_release_helpers_inlined_the_default_mode_does_not_guess_buffer_findings() {
    // A buffer held at close: the helpers that would free it cannot be probed. In the default
    // mode nothing could ever show it freed, so it is not reported (the agent's probe list
    // says buffer-held-at-close cannot be detected); --all-allocations still finds it from
    // the allocator's own events.
    let helpers = [
        "vfio_ap_release_stop_copy_file",
        "vfio_ap_release_resuming_file",
    ];
    for all in [false, true] {
        let mut s = Script::new();
        s.create().open(QEMU, MIG);
        s.set_state(QEMU, 1, 0)
            .open_file(STOP_COPY, FILE)
            .first_read(FILE, BUF, all)
            .close_keeping_buffers()
            .release_file(FILE)
            .remove_release(None);
        let a = audit_without(&s, &helpers);
        if all {
            only(&a, Kind::BufferHeldAtClose);
        } else {
            assert!(a.findings().is_empty(), "{:#?}", a.findings());
        }
        // One helper inlined: which slot's buffers it alone frees is not known, so neither
        // slot's buffers are guessed at; every helper probed, the finding is back.
        for (missing, found) in [(&helpers[..1], all), (&[][..], true)] {
            let a = audit_without(&s, missing);
            assert_eq!(
                kinds(&a),
                if found {
                    vec![Kind::BufferHeldAtClose]
                } else {
                    vec![]
                }
            );
        }
    }
}

#[test]
fn with_the_migration_data_release_inlined_the_default_mode_does_not_guess_a_leak() {
    // close forgets release_migration_data: a leak when its probe could have seen the free,
    // no finding when that row is missing (nothing could ever show mig_data freed).
    let mut s = Script::new();
    s.create().open(QEMU, MIG);
    s.call(QEMU, "vfio_ap_mdev_close_device", &[MDEV], 0)
        .remove_release(None);
    only(&audit_without(&s, &[]), Kind::Leak);
    let a = audit_without(&s, &["vfio_ap_release_migration_data"]);
    assert!(a.findings().is_empty(), "{:#?}", a.findings());
}
