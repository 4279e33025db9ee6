//! What the auditor keeps about each call in progress, beside it on the task's stack.

use super::migration::MigState;

/// What the auditor keeps about a call in progress (for nearly every call, nothing).
///
/// Plain integers that are all zero when nothing is kept: a new one is made by one wide
/// write, which the CPU forwards to the wide reads that copy it onto the call's frame.
/// With `Option`s, the default wrote only their tags, field by field, and the copy's reads
/// waited for those writes to land (a failed store forward), about a twentieth of the
/// auditor's time.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(super) struct CallState {
    /// set_state: the requested final state (raw), when `flags` has `SET_STATE`.
    requested: u64,
    flags: u8,
    /// set_state: the state when it was entered, and after the last traced step
    /// (`state_code`: 0 when not known).
    state_before: u8,
    step_state: u8,
    _zero: [u8; 5],
}

impl CallState {
    /// The call is a set_state: `requested` is its raw argument.
    const SET_STATE: u8 = 1;
    /// A traced step of this set_state broke the state machine (already reported).
    const STEP_FAULT: u8 = 2;
    /// A lock finding was raised for this call: no further ordering finding for it.
    const LOCK_FAULT: u8 = 4;

    pub(super) fn begin_set_state(&mut self, requested: u64, before: Option<MigState>) {
        self.requested = requested;
        self.flags |= Self::SET_STATE;
        self.state_before = state_code(before);
        self.step_state = self.state_before;
    }

    /// set_state: the requested final state (raw).
    pub(super) fn requested(&self) -> Option<u64> {
        (self.flags & Self::SET_STATE != 0).then_some(self.requested)
    }

    pub(super) fn state_before(&self) -> Option<MigState> {
        code_state(self.state_before)
    }

    pub(super) fn step_state(&self) -> Option<MigState> {
        code_state(self.step_state)
    }

    pub(super) fn set_step_state(&mut self, s: MigState) {
        self.step_state = state_code(Some(s));
    }

    pub(super) fn step_fault(&self) -> bool {
        self.flags & Self::STEP_FAULT != 0
    }

    pub(super) fn mark_step_fault(&mut self) {
        self.flags |= Self::STEP_FAULT;
    }

    pub(super) fn lock_fault(&self) -> bool {
        self.flags & Self::LOCK_FAULT != 0
    }

    pub(super) fn mark_lock_fault(&mut self) {
        self.flags |= Self::LOCK_FAULT;
    }
}

/// A state as one byte of [`CallState`]: its uAPI value plus one, 0 when not known.
fn state_code(s: Option<MigState>) -> u8 {
    s.map_or(0, |s| s as u8 + 1)
}

fn code_state(code: u8) -> Option<MigState> {
    code.checked_sub(1)
        .and_then(|v| MigState::try_from(u64::from(v)).ok())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// What a set_state call keeps reads back as it was given: every state, none, a raw
    /// request outside the uAPI, and the faults.
    #[test]
    fn a_call_state_reads_back_what_it_kept() {
        let none = CallState::default();
        assert_eq!(
            (none.requested(), none.state_before(), none.step_state()),
            (None, None, None)
        );
        assert!(!none.step_fault() && !none.lock_fault());
        for before in std::iter::once(None).chain(MigState::ALL.map(Some)) {
            let mut x = CallState::default();
            x.begin_set_state(u64::MAX, before);
            assert_eq!(x.requested(), Some(u64::MAX));
            assert_eq!((x.state_before(), x.step_state()), (before, before));
            for to in MigState::ALL {
                x.set_step_state(to);
                assert_eq!((x.state_before(), x.step_state()), (before, Some(to)));
            }
        }
        let mut x = CallState::default();
        x.mark_lock_fault();
        assert!(x.lock_fault() && !x.step_fault() && x.requested().is_none());
        x.mark_step_fault();
        assert!(x.lock_fault() && x.step_fault());
    }
}
