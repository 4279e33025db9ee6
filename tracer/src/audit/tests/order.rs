//! Lock order: edges from what tasks held when they entered functions that take locks.

use super::*;

/// Three lock classes outside the documented order, functions that assert each held and
/// functions that take each.
fn profile(order: &str) -> Profile {
    let mut text = format!("base = \"vfio_ap\"\n{order}\n");
    for l in ["x", "y", "z"] {
        text.push_str(&format!("[[lock]]\nname = \"{l}\"\nsymbol = \"g{l}\"\n"));
    }
    for l in ["x", "y", "z"] {
        text.push_str(&format!(
            "[[function]]\nname = \"in_{l}\"\nrole = \"other\"\nmdev = \"none\"\nholds = [\"{l}\"]\n\
             [[function]]\nname = \"take_{l}\"\nrole = \"other\"\nmdev = \"none\"\ntakes = [\"{l}\"]\n"
        ));
    }
    Profile::from_toml(&text, "order.toml").unwrap()
}

/// `holder` (asserting its lock) open around a call of `taker` on task `pid`.
fn nested(s: &mut Script, pid: u32, holder: &str, taker: &str) {
    s.enter(pid, holder, &[0], LockObs::Free, None)
        .call(pid, taker, &[0], 0)
        .exit(pid, holder, 0, 0, None);
}

#[test]
fn a_cycle_through_three_tasks_is_one_lock_order_with_every_edge() {
    let mut s = Script::new();
    nested(&mut s, 100, "in_x", "take_y");
    nested(&mut s, 200, "in_y", "take_z");
    nested(&mut s, 300, "in_z", "take_x");
    // Seen again: the edges are kept once, and the cycle is not raised twice.
    nested(&mut s, 300, "in_z", "take_x");
    let a = s.audit_with(profile(""));
    let f = only(&a, Kind::LockOrder);
    assert_eq!(f.function.as_deref(), Some("take_x"));
    assert!(f.message.contains("z -> x -> y -> z"), "{}", f.message);
    for edge in ["x -> y: take_y", "y -> z: take_z", "z -> x: take_x"] {
        assert!(f.message.contains(edge), "{edge}: {}", f.message);
    }
    assert_eq!(f.evidence.len(), 6, "each edge's holder and taker entries");
    assert!(!f.uncertain);
    let edges = a.lock_order();
    assert_eq!(edges.len(), 3);
    assert_eq!(edges[0].held_in.as_deref(), Some("in_x"));
}

#[test]
fn a_chain_without_a_cycle_is_no_finding() {
    let mut s = Script::new();
    nested(&mut s, 100, "in_x", "take_y");
    nested(&mut s, 200, "in_y", "take_z");
    nested(&mut s, 300, "in_x", "take_z");
    let a = s.audit_with(profile(""));
    assert!(a.findings().is_empty(), "{:?}", a.findings());
    assert_eq!(a.lock_order().len(), 3);
}

#[test]
fn taking_a_lock_the_task_holds_is_not_an_order_edge() {
    let mut s = Script::new();
    nested(&mut s, 100, "in_x", "take_x");
    let a = s.audit_with(profile(""));
    assert!(a.findings().is_empty());
    assert!(a.lock_order().is_empty());
}

#[test]
fn an_edge_against_the_documented_order_is_lock_order() {
    let mut s = Script::new();
    nested(&mut s, 100, "in_x", "take_y");
    nested(&mut s, 100, "in_y", "take_x");
    let a = s.audit_with(profile("lock_order = [\"y\", \"x\"]"));
    // x -> y goes against the order; y -> x then closes a cycle: two findings.
    let kinds: Vec<Kind> = a.findings().iter().map(|f| f.kind).collect();
    assert_eq!(kinds, [Kind::LockOrder, Kind::LockOrder]);
    assert!(a.findings()[0]
        .message
        .contains("against the documented order (y -> x)"));
    assert!(a.findings()[1].message.contains("cycle"));
}

#[test]
fn the_probed_lock_read_held_at_entry_is_an_edge() {
    // The built-in open takes guests_lock; entering it holding mdevs_lock is a
    // self-deadlock, which says more than the order: no lock-order for that call.
    let mut s = Script::new();
    s.create()
        .enter(
            QEMU,
            "vfio_ap_mdev_open_device",
            &[MDEV],
            LockObs::HeldByCurrent,
            None,
        )
        .exit(QEMU, "vfio_ap_mdev_open_device", MDEV, 0, None);
    let a = s.audit();
    assert!(a.findings().iter().all(|f| f.kind == Kind::SelfDeadlock));
    assert!(a.lock_order().is_empty());
    // A function that takes another lock, entered holding the probed one, is the edge.
    let p = Profile::from_toml(
        "base = \"vfio_ap\"\n[[function]]\nname = \"take_guests\"\nrole = \"other\"\n\
         mdev = \"none\"\ntakes = [\"guests_lock\"]\n",
        "t.toml",
    )
    .unwrap();
    let mut s = Script::new();
    s.call_locked(100, "take_guests", &[0], 0);
    let a = s.audit_with(p);
    let f = only(&a, Kind::LockOrder);
    assert!(
        f.message.contains("mdevs_lock -> guests_lock"),
        "{}",
        f.message
    );
    assert!(f.message.contains("by its owner word"), "{}", f.message);
    assert_eq!(a.lock_order()[0].held_in, None);
}

#[test]
fn an_edge_that_relied_on_a_clone_makes_the_cycle_uncertain() {
    let mut s = Script::new();
    nested(&mut s, 100, "in_x.isra.0", "take_y");
    nested(&mut s, 200, "in_y", "take_x");
    let a = s.audit_with(profile(""));
    let f = only(&a, Kind::LockOrder);
    assert!(f.uncertain);
    assert!(
        f.uncertainty.as_deref().unwrap().contains("in_x.isra.0"),
        "{:?}",
        f.uncertainty
    );
    assert!(a.lock_order().iter().any(|e| e.uncertain));
}

/// The entry just pushed read these other declared locks.
fn read_locks(s: &mut Script, locks: &[(&str, LockObs)]) {
    let Some(Event {
        body: Body::Enter { locks: seen, .. },
        ..
    }) = s.events.last_mut()
    else {
        panic!("the last event is not an entry");
    };
    *seen = locks
        .iter()
        .map(|(l, obs)| crate::model::LockSeen {
            lock: Arc::from(*l),
            obs: *obs,
        })
        .collect();
}

/// A profile whose open and close assert nothing of the core: only the reads say what the
/// task holds there.
fn reads_only_profile() -> Profile {
    let mut p = Profile::vfio_ap();
    for f in &mut p.functions {
        f.holds.clear();
    }
    p
}

#[test]
fn another_locks_owner_word_read_held_at_entry_is_an_edge() {
    let mut s = Script::new();
    s.create().enter(
        QEMU,
        "vfio_ap_mdev_open_device",
        &[MDEV],
        LockObs::Free,
        None,
    );
    read_locks(
        &mut s,
        &[
            ("ap_attr_mutex", LockObs::Free),
            ("dev_set_lock", LockObs::HeldByCurrent),
        ],
    );
    s.exit(QEMU, "vfio_ap_mdev_open_device", MDEV, 0, None);
    let a = s.audit_with(reads_only_profile());
    assert!(a.findings().is_empty(), "{:#?}", a.findings());
    let edges: Vec<String> = a
        .lock_order()
        .iter()
        .map(|e| format!("{} -> {}", e.held, e.taken))
        .collect();
    // open takes guests_lock, kvm_lock and mdevs_lock; the free mutex gives nothing.
    assert_eq!(
        edges,
        [
            "dev_set_lock -> guests_lock",
            "dev_set_lock -> kvm_lock",
            "dev_set_lock -> mdevs_lock"
        ]
    );
    assert!(a.lock_order().iter().all(|e| e.held_in.is_none()));
}

#[test]
fn reads_held_by_another_task_or_failed_are_no_edge() {
    let mut s = Script::new();
    s.create().enter(
        QEMU,
        "vfio_ap_mdev_open_device",
        &[MDEV],
        LockObs::Free,
        None,
    );
    read_locks(
        &mut s,
        &[(
            "dev_set_lock",
            LockObs::HeldByOther {
                owner: 0xffff_8880_0000_1000,
            },
        )],
    );
    s.exit(QEMU, "vfio_ap_mdev_open_device", MDEV, 0, None);
    // A read that failed is simply not listed (`NotChecked` is dropped by the decoder).
    s.enter(
        QEMU,
        "vfio_ap_mdev_close_device",
        &[MDEV],
        LockObs::Free,
        None,
    )
    .exit(QEMU, "vfio_ap_mdev_close_device", MDEV, 0, None);
    let a = s.audit_with(reads_only_profile());
    assert!(a.findings().is_empty(), "{:#?}", a.findings());
    assert!(a.lock_order().is_empty(), "{:?}", a.lock_order());
}

/// The series' AB-BA seen through owner words alone: registration under mdevs_lock, the
/// core's open under dev_set->lock. One `lock-order`, both edges read, not asserted.
#[test]
fn the_abba_by_owner_words_is_one_lock_order() {
    for profile in [reads_only_profile(), Profile::vfio_ap()] {
        let mut s = Script::new();
        s.enter(100, "vfio_ap_mdev_probe", &[MDEV_DEV], LockObs::Free, None)
            .call_locked(100, "vfio_register_emulated_iommu_dev", &[MDEV], 0)
            .exit(100, "vfio_ap_mdev_probe", MDEV_DEV, 0, None)
            .enter(
                QEMU,
                "vfio_ap_mdev_open_device",
                &[MDEV],
                LockObs::Free,
                None,
            );
        read_locks(&mut s, &[("dev_set_lock", LockObs::HeldByCurrent)]);
        s.exit(QEMU, "vfio_ap_mdev_open_device", MDEV, 0, None);
        // Seen again on a second open: still one finding.
        s.enter(
            QEMU,
            "vfio_ap_mdev_open_device",
            &[MDEV],
            LockObs::Free,
            None,
        );
        read_locks(&mut s, &[("dev_set_lock", LockObs::HeldByCurrent)]);
        s.exit(QEMU, "vfio_ap_mdev_open_device", MDEV, 0, None);
        let a = s.audit_with(profile);
        let f = only(&a, Kind::LockOrder);
        assert!(
            f.message
                .contains("dev_set_lock -> mdevs_lock -> dev_set_lock"),
            "{}",
            f.message
        );
        assert!(
            f.message
                .contains("vfio_ap_mdev_open_device entered by pid 4242 holding dev_set_lock by its owner word"),
            "{}",
            f.message
        );
    }
}
