use super::*;

#[test]
fn builtin_profile_round_trips_through_toml() {
    let p = Profile::vfio_ap();
    let back = Profile::from_toml(&p.to_toml(), "builtin").unwrap();
    assert_eq!(p, back);
}

#[test]
fn a_profile_file_adds_a_function_by_a_row() {
    let text = r#"
base = "vfio_ap"
[[function]]
name = "vfio_ap_mdev_reset_queues"
role = "reset"
lock = "held"
"#;
    let p = Profile::from_toml(text, "x.toml").unwrap();
    let added = p.function("vfio_ap_mdev_reset_queues").unwrap();
    assert_eq!(added.role, Role::Reset);
    assert_eq!(added.lock, LockContract::Held);
    assert_eq!(p.functions.len(), Profile::vfio_ap().functions.len() + 1);
    assert_eq!(added.ret_type(), RetType::Void, "the role's default");
}

#[test]
fn a_profile_row_may_name_its_argument_count() {
    let p = Profile::from_toml(
        r#"
base = "vfio_ap"
[[function]]
name = "vfio_ap_mdev_set_kvm"
role = "other"
args = 2
"#,
        "t.toml",
    )
    .unwrap();
    let added = p
        .functions
        .iter()
        .find(|f| f.name == "vfio_ap_mdev_set_kvm")
        .unwrap();
    assert_eq!(added.arg_count(), Some(2));
    let set_state = p
        .functions
        .iter()
        .find(|f| f.role == Role::SetState)
        .unwrap();
    assert_eq!(set_state.arg_count(), Some(2), "the role's usual number");
    let step = p
        .functions
        .iter()
        .find(|f| f.role == Role::TransitionStep)
        .unwrap();
    assert_eq!(
        step.ret_type(),
        RetType::Pointer,
        "a step returns the data file"
    );
}

#[test]
fn a_profile_row_may_name_its_return_type() {
    let text = r#"
base = "vfio_ap"
[[function]]
name = "vfio_ap_mdev_reset"
role = "reset"
ret = "int"
"#;
    let p = Profile::from_toml(text, "x.toml").unwrap();
    let added = p.functions.last().unwrap();
    assert_eq!(added.ret_type(), RetType::Int);
    let back = Profile::from_toml(&p.to_toml(), "again").unwrap();
    assert_eq!(back, p);
}

#[test]
fn a_bad_profile_names_the_file_and_the_problem() {
    let err = Profile::from_toml("[[function]]\nname = 3\n", "my.toml").unwrap_err();
    let msg = err.to_string();
    assert!(msg.contains("my.toml"), "{msg}");
    let err = Profile::from_toml("base = \"nvme\"\n", "p.toml").unwrap_err();
    assert!(err.to_string().contains("unknown base profile \"nvme\""));
}

/// What `aptrace profile` prints is a file `--profile` takes back unchanged.
#[test]
fn the_editable_profile_loads_back_as_the_builtin_one() {
    let text = Profile::vfio_ap().to_editable_toml();
    assert!(text.starts_with("# An aptrace profile"));
    assert_eq!(
        Profile::from_toml(&text, "edited.toml").unwrap(),
        Profile::vfio_ap()
    );
}

#[test]
fn the_series_functions_are_optional_rows_with_their_contracts() {
    let p = Profile::vfio_ap();
    let row = |n: &str| p.function(n).unwrap_or_else(|| panic!("{n} missing"));
    for name in [
        "vfio_ap_open_file_stream",
        "vfio_ap_stop_copy_read",
        "vfio_ap_resuming_write",
        "vfio_ap_release_mig_file",
        "vfio_ap_release_mig_files",
        "vfio_ap_get_config",
        "allocate_ap_config",
        "vfio_ap_release_stop_copy_file",
        "vfio_ap_release_resuming_file",
        "vfio_ap_reset_migration_state",
        "vfio_ap_transition_to_state",
    ] {
        assert!(row(name).optional, "{name} must be allowed to be absent");
    }
    assert_eq!(row("vfio_ap_transition_to_state").lock, LockContract::Held);
    assert_eq!(
        row("vfio_ap_transition_to_state").ret_type(),
        RetType::Pointer
    );
    assert_eq!(row("vfio_ap_set_state").lock, LockContract::NotHeld);
    assert_eq!(row("vfio_ap_get_state").lock, LockContract::NotHeld);
    assert_eq!(row("vfio_ap_reset_migration_state").role, Role::Reset);
    assert_eq!(row("vfio_ap_stop_copy_read").ret_type(), RetType::Ssize);
    assert_eq!(row("vfio_ap_stop_copy_read").mdev, MdevArg::None);
    assert_eq!(row("vfio_ap_release_mig_file").lock, LockContract::NotHeld);
    assert_eq!(
        row("vfio_ap_release_resuming_file").lock,
        LockContract::Held
    );
    // the seed patch's functions are optional too (a driver without the series has none);
    // mainline's lifecycle stays required
    for name in [
        "vfio_ap_init_migration_capabilities",
        "vfio_ap_init_migration_data",
        "vfio_ap_release_migration_data",
        "vfio_ap_set_state",
        "vfio_ap_get_state",
        "vfio_ap_get_data_size",
    ] {
        assert!(row(name).optional, "{name} must be allowed to be absent");
    }
    for name in [
        "vfio_ap_mdev_probe",
        "vfio_ap_mdev_init_dev",
        "vfio_ap_mdev_open_device",
        "vfio_ap_mdev_close_device",
        "vfio_ap_mdev_remove",
        "vfio_ap_mdev_release_dev",
    ] {
        assert!(!row(name).optional, "{name} is mainline's");
    }
    assert!(
        p.functions.len() <= tracer_common::FUNC_SLOTS as usize,
        "the probes have {} function slots",
        tracer_common::FUNC_SLOTS
    );
}

#[test]
fn the_builtin_profile_declares_the_drivers_locks_and_order() {
    let p = Profile::vfio_ap();
    assert_eq!(p.probed_lock(), "mdevs_lock");
    assert_eq!(
        p.lock_order,
        ["ap_attr_mutex", "guests_lock", "kvm_lock", "mdevs_lock"]
    );
    for name in ["dev_set_lock", "guests_lock", "kvm_lock", "ap_attr_mutex"] {
        assert!(p.locks.iter().any(|l| l.name == name), "{name}");
    }
    let open = p.function("vfio_ap_mdev_open_device").unwrap();
    assert_eq!(
        open.locks_taken(p.probed_lock()),
        ["guests_lock", "kvm_lock", "mdevs_lock"]
    );
    let held = p.function("vfio_ap_init_migration_data").unwrap();
    assert_eq!(held.locks_held(p.probed_lock()), ["mdevs_lock"]);
}

#[test]
fn a_profile_without_locks_still_means_the_probed_lock() {
    let mut old = Profile::vfio_ap();
    old.locks.clear();
    old.lock_order.clear();
    old.functions.retain(|f| f.module.is_none());
    for f in &mut old.functions {
        f.takes.clear();
        f.holds.clear();
    }
    let back = Profile::from_toml(&old.to_toml(), "header").unwrap();
    assert!(!back.to_toml().contains("[[lock]]"));
    assert_eq!(back.probed_lock(), "mdevs_lock");
    let probe = back.function("vfio_ap_mdev_probe").unwrap();
    assert_eq!(probe.locks_taken(back.probed_lock()), ["mdevs_lock"]);
}

#[test]
fn lock_names_must_be_declared() {
    let err = Profile::from_toml(
        "base = \"vfio_ap\"\n[[function]]\nname = \"f\"\nrole = \"other\"\ntakes = [\"nope\"]\n",
        "l.toml",
    )
    .unwrap_err();
    assert!(err.to_string().contains("\"nope\""), "{err}");
    let err = Profile::from_toml(
        "base = \"vfio_ap\"\nlock_order = [\"mdevs_lock\", \"nope\"]\n",
        "l.toml",
    )
    .unwrap_err();
    assert!(err.to_string().contains("lock_order"), "{err}");
    let err = Profile::from_toml(
        "base = \"vfio_ap\"\n[[lock]]\nname = \"w\"\narg = 0\n",
        "l.toml",
    )
    .unwrap_err();
    assert!(err.to_string().contains("`path`"), "{err}");
}

/// The built-in profile carries the VFIO core's side of dev_set_lock as optional rows of
/// module `vfio`, and still fits the probes' slots.
#[test]
fn the_builtin_profile_has_the_cores_side_of_dev_set_lock() {
    let p = Profile::vfio_ap();
    let probed = p.probed_lock();
    let reg = p.function("vfio_register_emulated_iommu_dev").unwrap();
    assert_eq!(reg.locks_taken(probed), ["dev_set_lock"]);
    for f in [
        "vfio_register_emulated_iommu_dev",
        "vfio_df_open",
        "vfio_df_close",
    ] {
        let row = p.function(f).unwrap();
        assert!(row.optional, "{f}");
        assert_eq!(p.module_of(row), "vfio", "{f}");
    }
    for f in ["vfio_df_open", "vfio_df_close"] {
        assert_eq!(p.function(f).unwrap().locks_held(probed), ["dev_set_lock"]);
    }
    assert_eq!(p.other_modules(), ["vfio"]);
    assert_eq!(
        p.module_of(p.function("vfio_ap_mdev_probe").unwrap()),
        "vfio_ap"
    );
    assert!(p.functions.len() <= tracer_common::FUNC_SLOTS as usize);
    // A profile file keeps the rows' module through its TOML.
    let back = Profile::from_toml(&p.to_toml(), "round trip").unwrap();
    assert_eq!(back, p);
}

#[test]
fn clone_suffixes_are_stripped() {
    assert_eq!(strip_clone_suffix("f.isra.0"), ("f", true));
    assert_eq!(strip_clone_suffix("f"), ("f", false));
}
