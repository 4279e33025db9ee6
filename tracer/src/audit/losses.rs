//! Lost events: a warning of their own, and every later finding whose evidence reaches back
//! past the loss is marked uncertain (see `Auditor::raise`).

use super::{Auditor, Kind};
use crate::model::{Event, LossSource};

impl Auditor {
    pub(super) fn on_lost(&mut self, ev: &Event, count: u64, source: LossSource) {
        self.lost += count;
        self.last_loss_seq = Some(ev.seq);
        let why = match source {
            LossSource::RingBuffer => "the ring buffer was full (raise --ring-buffer-size)",
            LossSource::KretprobeMiss => "kretprobes missed returns (too many concurrent calls)",
            LossSource::ExitWithoutEntry => "returns arrived without their entries",
            LossSource::Recording => "damaged parts of the recording were skipped",
        };
        let msg =
            format!("{count} events were lost: {why}; findings after this point may miss evidence");
        self.raise(
            Kind::EventsLost,
            None,
            ev,
            None,
            msg,
            Vec::new(),
            Vec::new(),
        );
    }
}
