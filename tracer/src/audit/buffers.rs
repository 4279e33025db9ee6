//! Configuration buffers as objects of their mdev's life: allocated into a migration file's
//! slot (`buffer-alloc`), freed by the release helpers (`buffer-free`). They live in the
//! ledger with the other allocations; these rules add what only a buffer has:
//!
//! - a buffer known to be in its slot and still held when close or reset returns is
//!   `buffer-held-at-close` (those must free the files' buffers), reported once, not again
//!   as a leak at release;
//! - a release helper reaching a buffer already freed is a `double-free`.
//!
//! Both modes track them. With `--all-allocations` the allocator's own events bound a
//! buffer; in the default mode the profile's rows do: the allocating function's read at its
//! return (`vfio_ap_get_config`'s stop-copy slot, `allocate_ap_config`'s output argument)
//! enters it in the ledger, and the release helper's read at its entry
//! (`vfio_ap_release_stop_copy_file`, `vfio_ap_release_resuming_file`, which
//! `vfio_ap_release_mig_files` calls) ends it; the allocator's free inside the helper, seen
//! with `--all-allocations`, is the same free. The default mode cannot see a driver's free
//! that is not a release helper (the `kvfree` inside a write past the end): a buffer freed
//! there and again by a helper is one free to it, so that double free needs
//! `--all-allocations`. A helper's free of a pointer never seen allocated is remembered (for
//! a second free of it), never a finding.

use std::sync::Arc;

use super::{secs, Auditor, Entering, Frame, Kind};
use crate::model::{Body, Event};
use crate::profile::MdevArg;

impl Auditor {
    /// `buffer-alloc` returned with the buffer `p` (read from its slot, or from the output
    /// argument).
    pub(super) fn buffer_allocated(
        &mut self,
        ev: &Event,
        frame: Option<&Frame>,
        mdev: Option<u64>,
        p: u64,
        func: &Arc<str>,
    ) {
        if p == 0 {
            return;
        }
        // A buffer allocated again at a freed address is a new object.
        self.freed.remove(&p);
        let spec = frame.map(|f| f.call.spec);
        let in_slot = spec.is_some_and(|s| self.profile.functions[s].mdev == MdevArg::Object);
        let mdev = mdev.or_else(|| self.context_mdev(ev.task.tid));
        let life = mdev.and_then(|m| self.current_life(m));
        if self.unseen_frees.buffer && !self.ledger.contains_key(&p) {
            // The default mode with no release helper probed: nothing would ever end it.
            return;
        }
        // The default mode: the allocating function's return is the allocation.
        let a = self
            .ledger
            .entry(p)
            .or_insert_with(|| super::ledger::Allocation {
                bytes: 0,
                mdev: None,
                life: 0,
                function: func.clone(),
                tid: ev.task.tid,
                event: ev.clone(),
                stack: Vec::new(),
                in_field: false,
                reported: false,
                buffer: true,
                in_slot,
            });
        a.buffer = true;
        a.in_slot |= in_slot;
        a.function = func.clone();
        if a.mdev.is_none() {
            if let (Some(m), Some(l)) = (mdev, life) {
                a.mdev = Some(m);
                a.life = l;
                let bytes = a.bytes;
                if let Some(md) = self.mdevs.get_mut(&m) {
                    md.outstanding += 1;
                    md.outstanding_bytes += bytes;
                }
            }
        }
        if a.stack.is_empty() {
            if let Some(Body::Enter { stack, .. }) = frame.map(|f| &f.call.enter.body) {
                a.stack = stack.clone();
            }
        }
    }

    /// `buffer-free` entered with the buffer `p` its read found in the slot.
    pub(super) fn buffer_freed(
        &mut self,
        ev: &Event,
        frame: &Entering<'_>,
        p: u64,
        func: &Arc<str>,
    ) {
        if p == 0 {
            return;
        }
        let tid = ev.task.tid;
        if let Some(a) = self.ledger.remove(&p) {
            // The helper frees it; the allocator's own free inside this call (with
            // --all-allocations) is the same free: on_free merges it by this call's seq.
            self.forget_outstanding(&a);
            self.remember_freed(p, ev, tid, Some(ev.seq));
            return;
        }
        if let Some(prev) = self.freed.get(&p) {
            // The same free seen by an enclosing helper (a profile whose release_mig_files
            // reads the slot too, around release_resuming_file) is one free.
            let same = prev.tid == tid
                && self
                    .calls
                    .stack(tid)
                    .iter()
                    .any(|f| Some(f.call.enter.seq) == prev.call_seq);
            if same {
                return;
            }
            let first = prev.event.clone();
            let ctx = frame.call.mdev.or_else(|| self.context_mdev(tid));
            let label = ctx
                .map(|m| format!(" of {}", self.mdev_label(m)))
                .unwrap_or_default();
            let msg = format!(
                "{func} frees the configuration buffer {p:#x}{label} that its migration file's slot still holds at {}, but it was already freed at {} (event #{}) and not allocated since",
                secs(ev.ts_ns),
                secs(first.ts_ns),
                first.seq
            );
            let stack = match &ev.body {
                Body::Enter { stack, .. } => stack.clone(),
                _ => Vec::new(),
            };
            self.raise(
                Kind::DoubleFree,
                ctx,
                ev,
                Some(func.clone()),
                msg,
                vec![first],
                stack,
            );
            return;
        }
        self.remember_freed(p, ev, tid, Some(ev.seq));
    }

    /// Close or reset of `ptr` returned: every buffer of this life still in a file's slot
    /// should have been freed with the files.
    pub(super) fn buffers_held_at_close(&mut self, ptr: u64, ev: &Event, func: &Arc<str>) {
        let Some(life) = self.current_life(ptr) else {
            return;
        };
        let mut held: Vec<u64> = self
            .ledger
            .iter()
            .filter(|(_, a)| {
                a.buffer && a.in_slot && !a.reported && a.mdev == Some(ptr) && a.life == life
            })
            .map(|(&p, _)| p)
            .collect();
        held.sort_unstable();
        for p in held {
            let a = self.ledger.get_mut(&p).expect("listed");
            a.reported = true;
            let (aev, afunc, astack, bytes) = (
                a.event.clone(),
                a.function.clone(),
                a.stack.clone(),
                a.bytes,
            );
            let size = if bytes > 0 {
                format!(" ({bytes} bytes)")
            } else {
                String::new()
            };
            let msg = format!(
                "configuration buffer {p:#x}{size}, allocated by {afunc} at {} into a migration file's slot of {} ({}), is still held when {func} returned at {}: close and reset must free the files' buffers",
                secs(aev.ts_ns),
                self.mdev_label(ptr),
                self.guest_label(ptr),
                secs(ev.ts_ns)
            );
            self.raise(
                Kind::BufferHeldAtClose,
                Some(ptr),
                ev,
                Some(afunc),
                msg,
                vec![aev],
                astack,
            );
        }
    }
}
