//! Records to events and back, in both byte orders.

use super::*;
use crate::model::NoSymbols;

const OPEN: u64 = 0xffff_ffff_c000_1000;

struct OneSym;
impl Symbolizer for OneSym {
    fn function_at(&self, addr: u64) -> Option<Arc<str>> {
        (addr == OPEN).then(|| Arc::from("vfio_ap_mdev_open_device"))
    }
}
fn addr_of(name: &str) -> Option<u64> {
    (name == "vfio_ap_mdev_open_device").then_some(OPEN)
}

fn event(body: Body) -> Event {
    Event {
        seq: 0,
        ts_ns: 123_456_789,
        cpu: 1,
        task: Task {
            pid: 4242,
            tid: 4243,
            comm: Arc::from("qemu"),
        },
        body,
    }
}

fn entry() -> Event {
    event(Body::Enter {
        func: Arc::from("vfio_ap_mdev_open_device"),
        args: [0xffff_8880_1234_5600, 1, 2, 3].into(),
        field: Some(0xffff_8880_0000_0040),
        lock: LockObs::HeldByOther {
            owner: 0xffff_8880_dead_0000,
        },
        locks: vec![
            LockSeen {
                lock: Arc::from("lock#0"),
                obs: LockObs::Free,
            },
            LockSeen {
                lock: Arc::from("lock#4"),
                obs: LockObs::HeldByCurrent,
            },
            LockSeen {
                lock: Arc::from("lock#1"),
                obs: LockObs::HeldByOther {
                    owner: 0xffff_8880_beef_0000,
                },
            },
        ],
        untrusted: false,
        stack: Vec::new(),
    })
}

/// One event of every kind a record carries.
fn every_kind() -> Vec<(Event, Option<i32>)> {
    vec![
        (entry(), Some(7)),
        (
            event(Body::Exit {
                func: Arc::from("vfio_ap_mdev_open_device"),
                ret: (-22i64) as u64,
                arg0: 0xffff_8880_1234_5600,
                duration_ns: Some(12_345),
                field: None,
            }),
            None,
        ),
        (
            event(Body::Alloc {
                ptr: 0xffff_8880_0000_0040,
                bytes: 96,
                site: Some(Arc::from("vfio_ap_mdev_open_device")),
                allocator: Allocator::Kvmalloc,
                stack: Vec::new(),
            }),
            Some(-3),
        ),
        (
            event(Body::Free {
                ptr: 0xffff_8880_0000_0040,
                site: None,
                allocator: Allocator::Kmalloc,
            }),
            None,
        ),
        (
            event(Body::MdevName {
                mdev: 0xffff_8880_1234_5600,
                uuid: Arc::from("0000000b-0000-4000-8000-00000000000b"),
            }),
            None,
        ),
    ]
}

#[test]
fn every_kind_round_trips_in_both_byte_orders() {
    for endian in [Endian::Little, Endian::Big] {
        for (ev, stack_id) in every_kind() {
            let raw = encode_record(&ev, stack_id, endian, &addr_of).unwrap();
            let d = decode_record(&raw, endian, &OneSym).unwrap();
            assert_eq!(
                d,
                Decoded {
                    event: ev,
                    stack_id
                }
            );
        }
    }
}

/// Decoded into one event over and over (a recycled box), every record reads as it does
/// decoded fresh, whatever the event held before: each kind after each kind, other tasks,
/// and a failed record that leaves it as it was.
#[test]
fn decoding_into_a_used_event_is_decoding_afresh() {
    let mut kinds = every_kind();
    let mut other = entry();
    other.task = Task {
        pid: 7,
        tid: 8,
        comm: Arc::from("kworker/1:0"),
    };
    if let Body::Enter {
        field, locks, lock, ..
    } = &mut other.body
    {
        *field = None;
        locks.clear();
        *lock = LockObs::NotChecked;
    }
    kinds.push((other, None));
    for endian in [Endian::Little, Endian::Big] {
        let mut into = Event::placeholder();
        for (a, _) in &kinds {
            for (b, stack_id) in &kinds {
                for (ev, id) in [(a, None), (b, *stack_id)] {
                    let raw = encode_record(ev, id, endian, &addr_of).unwrap();
                    let got = decode_record_into(&raw, endian, &OneSym, &mut into);
                    assert_eq!(got, Ok(id));
                    assert_eq!(into, decode_record(&raw, endian, &OneSym).unwrap().event);
                }
                let before = into.clone();
                assert!(decode_record_into(&[1, 0, 0], endian, &OneSym, &mut into).is_err());
                assert_eq!(into, before, "a record that fails changes nothing");
            }
        }
    }
    // The task's name is the one string all its records share, not a copy per record.
    let raw = encode_record(&entry(), None, Endian::Big, &addr_of).unwrap();
    let mut into = Event::placeholder();
    decode_record_into(&raw, Endian::Big, &OneSym, &mut into).unwrap();
    let name = into.task.comm.clone();
    decode_record_into(&raw, Endian::Big, &OneSym, &mut into).unwrap();
    assert!(Arc::ptr_eq(&name, &into.task.comm));
}

/// Records of one task share its name's string; another task's name is its own.
#[test]
fn records_of_one_task_share_its_name() {
    let decode = |comm: &str| {
        let mut ev = entry();
        ev.task.comm = Arc::from(comm);
        let raw = encode_record(&ev, None, Endian::Big, &addr_of).unwrap();
        decode_record(&raw, Endian::Big, &OneSym)
            .unwrap()
            .event
            .task
            .comm
    };
    let (a, b, other) = (
        decode("qemu-kvm"),
        decode("qemu-kvm"),
        decode("kworker/0:1"),
    );
    assert_eq!(&*a, "qemu-kvm");
    assert!(Arc::ptr_eq(&a, &b));
    assert_eq!(&*other, "kworker/0:1");
    // Nine other names push it out of the remembered few: still decoded right.
    for i in 0..9 {
        decode(&format!("task{i}"));
    }
    assert_eq!(&*decode("qemu-kvm"), "qemu-kvm");
    // A task renamed shorter keeps its old name's bytes after the NUL: the name is what
    // comes before it, whatever follows.
    let mut raw = encode_record(&entry(), None, Endian::Big, &addr_of).unwrap();
    raw[off::COMM..off::COMM + abi::COMM_LEN].copy_from_slice(b"vm\0u-kvm\0\0\0\0\0\0\0\0");
    let renamed = decode_record(&raw, Endian::Big, &OneSym).unwrap().event;
    assert_eq!(&*renamed.task.comm, "vm");
    assert_eq!(&*decode("vm"), "vm");
}

#[test]
fn the_byte_order_is_the_one_asked_for() {
    let le = encode_record(&entry(), None, Endian::Little, &addr_of).unwrap();
    let be = encode_record(&entry(), None, Endian::Big, &addr_of).unwrap();
    assert_eq!(le[off::KIND..off::KIND + 2], [1, 0]);
    assert_eq!(be[off::KIND..off::KIND + 2], [0, 1]);
    assert_eq!(be[off::TS..off::TS + 8], 123_456_789u64.to_be_bytes());
    assert_eq!(be[off::COMM..off::COMM + 5], *b"qemu\0");
    assert_eq!(
        decode_record(&le, Endian::Little, &OneSym),
        decode_record(&be, Endian::Big, &OneSym)
    );
}

#[test]
fn unknown_functions_are_hex_both_ways() {
    let mut ev = entry();
    let raw = encode_record(&ev, None, Endian::Big, &addr_of).unwrap();
    let d = decode_record(&raw, Endian::Big, &NoSymbols).unwrap();
    assert!(matches!(&d.event.body, Body::Enter { func, .. } if &**func == "0xffffffffc0001000"));
    assert_eq!(
        encode_record(&d.event, None, Endian::Big, &|_: &str| None),
        Ok(raw)
    );
    if let Body::Enter { func, .. } = &mut ev.body {
        *func = Arc::from("nowhere");
    }
    assert_eq!(
        encode_record(&ev, None, Endian::Big, &addr_of),
        Err(EncodeError::UnknownFunction("nowhere".into()))
    );
    let lost = event(Body::Lost {
        count: 1,
        source: crate::model::LossSource::RingBuffer,
    });
    assert!(encode_record(&lost, None, Endian::Big, &addr_of).is_err());
}

#[test]
fn long_names_are_cut_at_a_character_boundary() {
    let mut ev = entry();
    ev.task.comm = Arc::from("worker-thread-ééé");
    let raw = encode_record(&ev, None, Endian::Little, &addr_of).unwrap();
    let d = decode_record(&raw, Endian::Little, &OneSym).unwrap();
    assert_eq!(&*d.event.task.comm, "worker-thread-é");
}

proptest::proptest! {
    /// Any bytes with a known kind: an error or an event, never a panic; and what
    /// decodes encodes back to a record that decodes the same.
    #[test]
    fn any_record_decodes_or_fails_cleanly(
        mut data in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..120),
        kind in 1u16..=5,
        big: bool,
    ) {
        let endian = if big { Endian::Big } else { Endian::Little };
        if data.len() >= 2 {
            let k = if big { kind.to_be_bytes() } else { kind.to_le_bytes() };
            data[..2].copy_from_slice(&k);
        }
        if let Ok(d) = decode_record(&data, endian, &OneSym) {
            let lossy = |s: &str| s.contains(char::REPLACEMENT_CHARACTER);
            let text_ok = !lossy(&d.event.task.comm)
                && !matches!(&d.event.body, Body::MdevName { uuid, .. } if lossy(uuid));
            let raw = encode_record(&d.event, d.stack_id, endian, &addr_of).unwrap();
            let back = decode_record(&raw, endian, &OneSym).unwrap();
            proptest::prop_assert!(!text_ok || back == d);
        }
    }
}

#[test]
fn wrong_byte_order_is_not_silently_equal() {
    let be = encode_record(&entry(), None, Endian::Big, &addr_of).unwrap();
    // Read as little-endian, the kind is 0x0100: an unknown kind, an error value.
    assert_eq!(
        decode_record(&be, Endian::Little, &NoSymbols),
        Err(DecodeError::UnknownKind(0x0100))
    );
}

#[test]
fn short_and_unknown_records_are_errors() {
    for (ev, stack_id) in every_kind() {
        let rec = encode_record(&ev, stack_id, Endian::Little, &addr_of).unwrap();
        // An entry of an agent before the lock reads is shorter, and complete.
        let least = match ev.body {
            Body::Enter { .. } => off::E_OWNERS,
            _ => rec.len(),
        };
        for len in 0..least {
            assert!(decode_record(&rec[..len], Endian::Little, &NoSymbols).is_err());
        }
    }
    let rec = encode_record(&entry(), None, Endian::Little, &addr_of).unwrap();
    let mut bad = rec.clone();
    bad[off::KIND] = 99;
    assert_eq!(
        decode_record(&bad, Endian::Little, &NoSymbols),
        Err(DecodeError::UnknownKind(99))
    );
    let mut bad_lock = rec.clone();
    bad_lock[off::E_LOCK] = 7;
    assert_eq!(
        decode_record(&bad_lock, Endian::Little, &NoSymbols),
        Err(DecodeError::UnknownLockState(7))
    );
    let mut bad_read = rec;
    bad_read[off::E_STATES + 1] = 9;
    assert_eq!(
        decode_record(&bad_read, Endian::Little, &NoSymbols),
        Err(DecodeError::UnknownLockState(9))
    );
}

/// An entry written before the lock reads (104 bytes) reads as reading none; the reads
/// of a current one keep their order, drop the failed ones, and name each lock by the
/// profile's number through the symbolizer.
#[test]
fn lock_reads_decode_and_older_entries_have_none() {
    let rec = encode_record(&entry(), None, Endian::Big, &addr_of).unwrap();
    assert_eq!(rec.len(), 144);
    let old = decode_record(&rec[..off::E_OWNERS], Endian::Big, &OneSym).unwrap();
    match old.event.body {
        Body::Enter { locks, lock, .. } => {
            assert!(locks.is_empty());
            assert!(
                matches!(lock, LockObs::HeldByOther { .. }),
                "the probed lock stays"
            );
        }
        other => panic!("{other:?}"),
    }
    struct Named;
    impl Symbolizer for Named {
        fn function_at(&self, _: u64) -> Option<Arc<str>> {
            None
        }
        fn lock_name(&self, id: u8) -> Arc<str> {
            Arc::from(
                [
                    "ap_attr_mutex",
                    "guests_lock",
                    "kvm_lock",
                    "mdevs_lock",
                    "dev_set_lock",
                ][id as usize],
            )
        }
    }
    let mut with_failed = rec.clone();
    // A fourth read that failed: NOT_CHECKED, not listed.
    with_failed[off::E_IDS + 3] = 2;
    with_failed[off::E_STATES + 3] = abi::lock_state::NOT_CHECKED;
    let d = decode_record(&with_failed, Endian::Big, &Named).unwrap();
    let Body::Enter { locks, .. } = d.event.body else {
        panic!("not an entry");
    };
    let seen: Vec<(&str, LockObs)> = locks.iter().map(|l| (&*l.lock, l.obs)).collect();
    assert_eq!(
        seen,
        [
            ("ap_attr_mutex", LockObs::Free),
            ("dev_set_lock", LockObs::HeldByCurrent),
            (
                "guests_lock",
                LockObs::HeldByOther {
                    owner: 0xffff_8880_beef_0000
                }
            ),
        ]
    );
}
