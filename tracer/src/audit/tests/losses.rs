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
