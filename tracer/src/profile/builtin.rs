//! The built-in profile of the s390 vfio_ap driver: its functions (the series' later ones as
//! optional rows), their contracts, and the driver's locks and documented order.

use super::*;

impl Profile {
    /// The built-in profile of the s390 vfio_ap driver (v3 of the live migration series).
    pub fn vfio_ap() -> Profile {
        use LockContract::{Held, NotHeld};
        const NO_LOCK: LockContract = LockContract::None;
        use Role::*;
        let f = |name: &str, role, lock, mdev| FunctionSpec {
            name: name.to_string(),
            role,
            lock,
            takes: Vec::new(),
            holds: Vec::new(),
            mdev,
            read: None,
            stack: false,
            optional: false,
            ret: None,
            args: None,
            module: None,
        };
        // The seed patch's rows: optional like the later patches' (series_functions), since
        // a vfio_ap without the series (mainline, as enterprise distributions ship it) has
        // none of them and is traced with the lifecycle rows alone.
        let seed = |name: &str, role, lock, mdev| FunctionSpec {
            optional: true,
            ..f(name, role, lock, mdev)
        };
        let mig_data_at = |at| FieldRead {
            field: "ap_matrix_mdev.mig_data".to_string(),
            arg: 0,
            at,
            size: 8,
            path: Vec::new(),
        };
        let mut functions = vec![
            f("vfio_ap_mdev_probe", Probe, NotHeld, MdevArg::MdevDevice),
            f("vfio_ap_mdev_init_dev", InitDev, NotHeld, MdevArg::Object),
            seed(
                "vfio_ap_init_migration_capabilities",
                MigrationCapabilities,
                NO_LOCK,
                MdevArg::Object,
            ),
            // open and close set or unset the KVM pointer under get_update_locks_for_kvm:
            // guests_lock, then kvm->lock, then mdevs_lock; the VFIO core calls them with
            // dev_set->lock held (where its own asserting function is inlined, as on 6.1,
            // this is what says so).
            FunctionSpec {
                takes: kvm_update_locks(),
                holds: core_open_close_locks(),
                ..f("vfio_ap_mdev_open_device", Open, NotHeld, MdevArg::Object)
            },
            FunctionSpec {
                read: Some(mig_data_at(ReadAt::Exit)),
                stack: true,
                ..seed(
                    "vfio_ap_init_migration_data",
                    AllocField,
                    Held,
                    MdevArg::Object,
                )
            },
            FunctionSpec {
                read: Some(mig_data_at(ReadAt::Entry)),
                ..seed(
                    "vfio_ap_release_migration_data",
                    FreeField,
                    Held,
                    MdevArg::Object,
                )
            },
            FunctionSpec {
                takes: kvm_update_locks(),
                holds: core_open_close_locks(),
                ..f("vfio_ap_mdev_close_device", Close, NotHeld, MdevArg::Object)
            },
            f("vfio_ap_mdev_remove", Remove, NotHeld, MdevArg::MdevDevice),
            FunctionSpec {
                stack: true,
                ..f(
                    "vfio_ap_mdev_release_dev",
                    ReleaseDev,
                    NotHeld,
                    MdevArg::Object,
                )
            },
            // The series' set_state, get_state and get_data_size take mdevs_lock at entry.
            seed("vfio_ap_set_state", SetState, NotHeld, MdevArg::Object),
            FunctionSpec {
                read: Some(FieldRead {
                    field: "0".to_string(),
                    arg: 1,
                    at: ReadAt::Exit,
                    size: 4,
                    path: Vec::new(),
                }),
                ..seed("vfio_ap_get_state", GetState, NotHeld, MdevArg::Object)
            },
            // The size is written through arg 1 (`unsigned long *stop_copy_length`).
            FunctionSpec {
                read: Some(FieldRead {
                    field: "0".to_string(),
                    arg: 1,
                    at: ReadAt::Exit,
                    size: 8,
                    path: Vec::new(),
                }),
                ..seed(
                    "vfio_ap_get_data_size",
                    GetDataSize,
                    NotHeld,
                    MdevArg::Object,
                )
            },
        ];
        functions.extend(series_functions());
        functions.extend(core_functions());
        Profile {
            name: "vfio_ap".to_string(),
            module: "vfio_ap".to_string(),
            migration_flags: VFIO_MIGRATION_STOP_COPY,
            lock_holder_symbol: "matrix_dev".to_string(),
            lock_field: "ap_matrix_dev.mdevs_lock".to_string(),
            lock_order: ["ap_attr_mutex", "guests_lock", "kvm_lock", "mdevs_lock"]
                .map(String::from)
                .to_vec(),
            locks: builtin_locks(),
            functions,
        }
    }
}

/// The locks of the driver's documented order, and the VFIO core's device-set lock that
/// registration and open/close take or assert.
fn builtin_locks() -> Vec<LockSpec> {
    let lock = |name: &str, symbol: Option<&str>, arg: Option<u8>, path: &[&str]| LockSpec {
        name: name.to_string(),
        kind: LockKind::Mutex,
        symbol: symbol.map(String::from),
        arg,
        path: path.iter().map(|p| p.to_string()).collect(),
        owner_offset: None,
        owner_mask: None,
    };
    vec![
        lock("ap_attr_mutex", Some("ap_attr_mutex"), None, &[]),
        lock(
            "guests_lock",
            Some("matrix_dev"),
            None,
            &["ap_matrix_dev.guests_lock"],
        ),
        lock(
            "kvm_lock",
            None,
            Some(0),
            &["ap_matrix_mdev.kvm", "kvm.lock"],
        ),
        lock(
            "mdevs_lock",
            Some("matrix_dev"),
            None,
            &["ap_matrix_dev.mdevs_lock"],
        ),
        lock(
            "dev_set_lock",
            None,
            Some(0),
            &["vfio_device.dev_set", "vfio_device_set.lock"],
        ),
    ]
}

/// The VFIO core's side of `dev_set->lock`, in module `vfio` (or vmlinux): registration
/// takes it (`vfio_assign_device_set`, inside the exported call the driver makes), and the
/// core opens and closes a device with it held (`lockdep_assert_held` in `vfio_df_open`
/// and `vfio_df_close`, 6.3 and later; 6.1 inlines its equivalents into the group ioctl
/// and the device file's release, so there they are absent). All optional: a kernel
/// without VFIO, or before `vfio` loads, lists them as absent.
fn core_functions() -> Vec<FunctionSpec> {
    let row = |name: &str, ret, takes: &[&str], holds: &[&str]| FunctionSpec {
        name: name.to_string(),
        role: Role::Other,
        lock: LockContract::None,
        takes: takes.iter().map(|l| l.to_string()).collect(),
        holds: holds.iter().map(|l| l.to_string()).collect(),
        mdev: MdevArg::None,
        read: None,
        stack: false,
        optional: true,
        ret: Some(ret),
        args: Some(1),
        module: Some("vfio".to_string()),
    };
    vec![
        // The stack shows who registered: the driver's probe, holding what it holds.
        FunctionSpec {
            stack: true,
            ..row(
                "vfio_register_emulated_iommu_dev",
                RetType::Int,
                &["dev_set_lock"],
                &[],
            )
        },
        row("vfio_df_open", RetType::Int, &[], &["dev_set_lock"]),
        row("vfio_df_close", RetType::Void, &[], &["dev_set_lock"]),
    ]
}

/// The lock the VFIO core holds around a driver's `open_device` and `close_device`.
fn core_open_close_locks() -> Vec<String> {
    vec!["dev_set_lock".to_string()]
}

fn kvm_update_locks() -> Vec<String> {
    vec!["guests_lock".to_string(), "kvm_lock".to_string()]
}

/// The functions the later patches of the live-migration series add (migration files,
/// configuration buffers, reset), as its latest revision has them. All are optional: a
/// driver without the series has none, and the static ones may be inlined in a real build.
/// Lock contracts are what the code states (`lockdep_assert_held`: held; takes mdevs_lock
/// at entry: not held), except the two file-release helpers: they assert nothing, but every
/// caller of the series holds mdevs_lock around them, and a release that does not is the
/// bug the reviews found.
fn series_functions() -> Vec<FunctionSpec> {
    use LockContract::{Held, NotHeld};
    const NO_LOCK: LockContract = LockContract::None;
    let row = |name: &str, role, lock, mdev, ret, args: u8| FunctionSpec {
        name: name.to_string(),
        args: Some(args),
        role,
        lock,
        takes: Vec::new(),
        holds: Vec::new(),
        mdev,
        read: None,
        stack: false,
        optional: true,
        ret: Some(ret),
        module: None,
    };
    // A file slot's buffer pointer: through argument 0 (mig_data itself, or the mdev and
    // then its mig_data pointer).
    let slot = |which: &str, via_mdev: bool, at| FieldRead {
        field: format!("vfio_ap_migration_data.{which}.ap_config"),
        arg: 0,
        at,
        size: 8,
        path: if via_mdev {
            vec!["ap_matrix_mdev.mig_data".to_string()]
        } else {
            Vec::new()
        },
    };
    let with_stack = |f: FunctionSpec| FunctionSpec { stack: true, ..f };
    use MdevArg::{None as NoMdev, Object};
    use RetType::{Int, Pointer, Ssize, Void};
    use Role::{
        BufferAlloc, BufferFree, MigFileOpen, MigFileRead, MigFileRelease, MigFileWrite, Other,
        Reset, TransitionStep,
    };
    vec![
        row(
            "vfio_ap_transition_to_state",
            TransitionStep,
            Held,
            Object,
            Pointer,
            2,
        ),
        row(
            "vfio_ap_reset_migration_state",
            Reset,
            Held,
            Object,
            Void,
            1,
        ),
        row(
            "vfio_ap_open_file_stream",
            MigFileOpen,
            Held,
            Object,
            Pointer,
            3,
        ),
        row("vfio_ap_resuming_init", Other, Held, Object, Pointer, 1),
        // file_operations: argument 0 is the migration file (the inode for .release); a
        // stack at entry, for the findings about a file used after its mdev's life.
        with_stack(row(
            "vfio_ap_stop_copy_read",
            MigFileRead,
            NotHeld,
            NoMdev,
            Ssize,
            4,
        )),
        with_stack(row(
            "vfio_ap_resuming_write",
            MigFileWrite,
            NotHeld,
            NoMdev,
            Ssize,
            4,
        )),
        with_stack(row(
            "vfio_ap_release_mig_file",
            MigFileRelease,
            NotHeld,
            NoMdev,
            Int,
            2,
        )),
        // Drops the files and frees both slots' buffers through the two helpers below (the
        // latest revision), whose reads see each buffer freed, in either mode.
        row("vfio_ap_release_mig_files", Other, Held, Object, Void, 1),
        // argument 0 is mig_data
        FunctionSpec {
            read: Some(slot("stop_copy_mig_file", false, ReadAt::Entry)),
            ..row(
                "vfio_ap_release_stop_copy_file",
                BufferFree,
                Held,
                NoMdev,
                Void,
                1,
            )
        },
        FunctionSpec {
            read: Some(slot("resuming_mig_file", false, ReadAt::Entry)),
            ..row(
                "vfio_ap_release_resuming_file",
                BufferFree,
                Held,
                NoMdev,
                Void,
                1,
            )
        },
        // The stop-copy buffer, read from its slot at return.
        FunctionSpec {
            read: Some(slot("stop_copy_mig_file", true, ReadAt::Exit)),
            stack: true,
            ..row("vfio_ap_get_config", BufferAlloc, Held, Object, Int, 1)
        },
        // The resuming buffer, through its output argument (`*ap_config`) at return; the
        // write it is nested in stores it.
        FunctionSpec {
            read: Some(FieldRead {
                field: "0".to_string(),
                arg: 0,
                at: ReadAt::Exit,
                size: 8,
                path: Vec::new(),
            }),
            ..row("allocate_ap_config", BufferAlloc, NO_LOCK, NoMdev, Ssize, 3)
        },
        row("do_post_copy_validation", Other, NO_LOCK, NoMdev, Int, 2),
        row("vfio_ap_set_new_guest_config", Other, Held, Object, Int, 2),
    ]
}
