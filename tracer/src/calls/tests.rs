use super::*;
use crate::model::Task;

fn ev(seq: u64, tid: u32, body: Body) -> Event {
    Event {
        seq,
        ts_ns: seq * 1000,
        cpu: 0,
        task: Task {
            pid: tid,
            tid,
            comm: Arc::from("t"),
        },
        body,
    }
}

fn enter(seq: u64, tid: u32, func: &str, args: &[u64]) -> Event {
    ev(
        seq,
        tid,
        Body::Enter {
            func: Arc::from(func),
            args: args.into(),
            field: None,
            lock: LockObs::NotChecked,
            untrusted: false,
            locks: Vec::new(),
            stack: Vec::new(),
        },
    )
}

fn exit(seq: u64, tid: u32, func: &str, ret: u64) -> Event {
    ev(
        seq,
        tid,
        Body::Exit {
            func: Arc::from(func),
            ret,
            arg0: 0,
            duration_ns: None,
            field: None,
        },
    )
}

fn feed(calls: &mut Calls<()>, e: &Event) {
    match &e.body {
        Body::Enter { .. } => {
            if let Some(c) = calls.enter(e) {
                calls.push(c, e, ());
            }
        }
        Body::Exit { .. } => {
            if let Some(x) = calls.exit(e) {
                calls.retire(x);
            }
        }
        _ => calls.other(),
    }
}

const DEV: u64 = 0xd000;
const OBJ: u64 = 0x5000;

#[test]
fn init_dev_in_probe_names_the_probes_mdev_device() {
    let mut c = Calls::<()>::new(&Profile::vfio_ap());
    feed(&mut c, &enter(1, 7, "vfio_ap_mdev_probe", &[DEV]));
    assert!(matches!(c.step(), Step::Enter { call, attributed: None } if call.mdev.is_none()));
    feed(&mut c, &enter(2, 7, "vfio_ap_mdev_init_dev", &[OBJ]));
    match c.step() {
        Step::Enter { call, attributed } => {
            assert_eq!(call.mdev, Some(OBJ));
            let probe = attributed.expect("the probe learned its object");
            assert_eq!((probe.enter.seq, probe.mdev), (1, Some(OBJ)));
        }
        other => panic!("{other:?}"),
    }
    feed(&mut c, &exit(3, 7, "vfio_ap_mdev_init_dev", 0));
    feed(&mut c, &exit(4, 7, "vfio_ap_mdev_probe", 0));
    assert!(matches!(c.step(), Step::Exit { ret, .. } if ret.mdev == Some(OBJ) && !ret.failed));
    // remove, later, on another task: the mdev_device is known.
    feed(&mut c, &enter(5, 8, "vfio_ap_mdev_remove", &[DEV]));
    assert!(matches!(c.step(), Step::Enter { call, .. } if call.mdev == Some(OBJ)));
    feed(&mut c, &enter(6, 8, "vfio_ap_mdev_release_dev", &[OBJ]));
    feed(&mut c, &exit(7, 8, "vfio_ap_mdev_release_dev", 0));
    feed(&mut c, &exit(8, 8, "vfio_ap_mdev_remove", 0));
    // Released: the mdev_device names nothing any more.
    feed(&mut c, &enter(9, 8, "vfio_ap_mdev_remove", &[DEV]));
    assert!(matches!(c.step(), Step::Enter { call, .. } if call.mdev.is_none()));
}

#[test]
fn a_return_pops_the_calls_whose_returns_were_missed() {
    let mut c = Calls::<()>::new(&Profile::vfio_ap());
    feed(&mut c, &enter(1, 7, "vfio_ap_mdev_open_device", &[OBJ]));
    feed(&mut c, &enter(2, 7, "vfio_ap_init_migration_data", &[OBJ]));
    feed(&mut c, &enter(3, 7, "vfio_ap_set_state", &[OBJ, 2]));
    assert_eq!(c.stack(7).len(), 3);
    assert_eq!(c.context_mdev(7), Some(OBJ));
    feed(
        &mut c,
        &exit(4, 7, "vfio_ap_mdev_open_device", (-12i64) as u64),
    );
    match c.step() {
        Step::Exit { ret, call } => {
            assert_eq!(ret.missed, 2);
            assert!(ret.failed && ret.trusted);
            assert_eq!(call.map(|c| c.enter.seq), Some(1));
        }
        other => panic!("{other:?}"),
    }
    assert!(c.stack(7).is_empty());
    assert_eq!(c.in_progress().count(), 0);
}

#[test]
fn clones_and_untrusted_entries_are_timed_but_not_attributed() {
    let mut c = Calls::<()>::new(&Profile::vfio_ap());
    feed(&mut c, &enter(1, 7, "vfio_ap_set_state.isra.0", &[OBJ, 2]));
    assert!(matches!(c.step(), Step::Enter { call, .. } if !call.trusted && call.mdev.is_none()));
    feed(&mut c, &exit(2, 7, "vfio_ap_set_state.isra.0", 0));
    assert!(matches!(c.step(), Step::Exit { ret, .. } if !ret.trusted && ret.mdev.is_none()));
    let mut marked = enter(3, 7, "vfio_ap_mdev_open_device", &[OBJ]);
    if let Body::Enter { untrusted, .. } = &mut marked.body {
        *untrusted = true;
    }
    feed(&mut c, &marked);
    feed(&mut c, &exit(4, 7, "vfio_ap_mdev_open_device", 0));
    assert!(matches!(c.step(), Step::Exit { ret, .. } if !ret.trusted));
    // Not a profiled function.
    feed(&mut c, &enter(5, 7, "kmalloc", &[]));
    assert!(matches!(c.step(), Step::Other));
}

#[test]
fn each_function_fails_by_its_return_type() {
    let mut c = Calls::<()>::new(&Profile::vfio_ap());
    // set_state returns a file pointer: an s390 address is no error.
    feed(&mut c, &enter(1, 7, "vfio_ap_set_state", &[OBJ, 3]));
    feed(&mut c, &exit(2, 7, "vfio_ap_set_state", 0x8123_4560));
    assert!(matches!(c.step(), Step::Exit { ret, .. } if !ret.failed));
    // close is void: whatever is in the register.
    feed(&mut c, &enter(3, 7, "vfio_ap_mdev_close_device", &[OBJ]));
    feed(
        &mut c,
        &exit(4, 7, "vfio_ap_mdev_close_device", (-1i64) as u64),
    );
    assert!(matches!(c.step(), Step::Exit { ret, .. } if !ret.failed));
    // open is int: garbage above a negative low half is still a failure.
    feed(&mut c, &enter(5, 7, "vfio_ap_mdev_open_device", &[OBJ]));
    feed(
        &mut c,
        &exit(6, 7, "vfio_ap_mdev_open_device", 0x0000_0001_ffff_fff4),
    );
    assert!(matches!(c.step(), Step::Exit { ret, .. } if ret.failed));
}

#[test]
fn a_return_without_its_entry_takes_the_object_from_arg0() {
    let mut c = Calls::<()>::new(&Profile::vfio_ap());
    let mut e = exit(1, 7, "vfio_ap_mdev_close_device", 0);
    if let Body::Exit { arg0, .. } = &mut e.body {
        *arg0 = OBJ;
    }
    feed(&mut c, &e);
    assert!(matches!(c.step(), Step::Exit { ret, call: None } if ret.mdev == Some(OBJ)));
}

#[test]
fn lock_contracts() {
    use LockContract::{Held, NotHeld};
    assert_eq!(lock_kept(Held, LockObs::NotChecked), None);
    assert_eq!(lock_kept(Held, LockObs::HeldByCurrent), Some(true));
    assert_eq!(lock_kept(Held, LockObs::Free), Some(false));
    assert_eq!(
        lock_kept(Held, LockObs::HeldByOther { owner: 1 }),
        Some(false)
    );
    assert_eq!(lock_kept(NotHeld, LockObs::HeldByCurrent), Some(false));
    assert_eq!(
        lock_kept(NotHeld, LockObs::HeldByOther { owner: 1 }),
        Some(true)
    );
    assert_eq!(lock_kept(LockContract::None, LockObs::Free), Some(true));
}

/// An entry kept on the stack is the event as entered, even when its box held another call's
/// entry before (boxes of retired calls are reused).
#[test]
fn a_reused_entry_box_holds_exactly_the_new_entry() {
    let mut c = Calls::<()>::new(&Profile::vfio_ap());
    let mut first = enter(1, 7, "vfio_ap_mdev_open_device", &[OBJ, 1, 2, 3]);
    if let Body::Enter { stack, lock, .. } = &mut first.body {
        stack.push(Arc::from("vfio_df_open+0x40"));
        *lock = LockObs::HeldByCurrent;
    }
    feed(&mut c, &first);
    feed(&mut c, &exit(2, 7, "vfio_ap_mdev_open_device", 0));
    let second = enter(3, 9, "vfio_ap_mdev_close_device", &[OBJ + 0x100]);
    feed(&mut c, &second);
    let top = &c.stack(9)[0].call;
    assert_eq!(*top.enter, second);
    assert_eq!(top.mdev, Some(OBJ + 0x100));
    assert!(c.stack(7).is_empty());
}
