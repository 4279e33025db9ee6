//! Lock contracts: what must be true of the driver's lock when a function is entered, on
//! the kernel's reading of the owner word.

use std::sync::Arc;

use super::{Auditor, Entering, Kind};
use crate::calls::lock_kept;
use crate::model::{Event, LockObs};
use crate::profile::LockContract;

impl Auditor {
    /// Checks the entered call's contract; a finding marks the call, so no ordering finding
    /// is raised for it as well.
    pub(super) fn check_lock(
        &mut self,
        ev: &Event,
        frame: &mut Entering<'_>,
        lock: LockObs,
        stack: &[Arc<str>],
        func: &Arc<str>,
    ) {
        let contract = frame.contract;
        match (lock_kept(contract, lock), contract) {
            (Some(false), LockContract::Held) => {
                let who = match lock {
                    LockObs::HeldByOther { owner } => {
                        format!("held by another task (owner {owner:#x})")
                    }
                    _ => "free".to_string(),
                };
                let on = frame
                    .call
                    .mdev
                    .map(|p| format!(" on {}", self.mdev_label(p)))
                    .unwrap_or_default();
                let msg = format!(
                    "{func} asserts matrix_dev->mdevs_lock is held by the calling task, but it was {who}{on}"
                );
                frame.x.mark_lock_fault();
                let mdev = frame.call.mdev;
                self.raise(
                    Kind::LockNotHeld,
                    mdev,
                    ev,
                    Some(func.clone()),
                    msg,
                    Vec::new(),
                    stack.to_vec(),
                );
            }
            (Some(false), LockContract::NotHeld) => {
                let holder = self
                    .calls
                    .stack(ev.task.tid)
                    .last()
                    .map(|f| (*f.call.enter).clone());
                let inside = holder
                    .as_ref()
                    .and_then(|e| e.body.func().map(|s| format!(", called from {s}")))
                    .unwrap_or_default();
                let msg = format!(
                    "{func} takes matrix_dev->mdevs_lock, but the calling task (pid {}) already holds it{inside}: this task will block on it for ever",
                    ev.task.tid
                );
                frame.x.mark_lock_fault();
                let mdev = frame.call.mdev;
                let evidence = holder.into_iter().collect();
                self.raise(
                    Kind::SelfDeadlock,
                    mdev,
                    ev,
                    Some(func.clone()),
                    msg,
                    evidence,
                    stack.to_vec(),
                );
            }
            _ => {}
        }
    }
}
