//! The auditor's migration rules: requests the device must refuse, the data file a state
//! opens, steps along direct arcs only, and the state read back.

use std::sync::Arc;

use super::MigState;
use crate::audit::lifecycle::Note;
use crate::audit::{Auditor, Entering, Frame, Kind};
use crate::model::Event;
use crate::profile::Role;

/// A requested state by name, or `invalid state N`.
pub(in crate::audit) fn state_name(raw: u64) -> String {
    MigState::try_from(raw)
        .map(|s| s.to_string())
        .unwrap_or_else(|raw| format!("invalid state {raw}"))
}

impl Auditor {
    /// The entry of set_state, a transition step or a reset.
    pub(in crate::audit) fn enter_migration(
        &mut self,
        ev: &Event,
        frame: &mut Entering<'_>,
        ptr: u64,
        args: &[u64],
        func: &Arc<str>,
    ) {
        let arg = |i: usize| args.get(i).copied().unwrap_or(0);
        match frame.role {
            Role::SetState => {
                frame.x.begin_set_state(arg(1), self.mdevs[&ptr].mig_state);
            }
            Role::TransitionStep => {
                let arcs = self.arcs;
                let to = MigState::try_from(arg(1));
                let parent = self
                    .calls
                    .stack_mut(ev.task.tid)
                    .iter_mut()
                    .rev()
                    .find(|f| f.x.requested().is_some() && f.call.mdev == Some(ptr));
                let mut fault = None;
                if let Some(parent) = parent {
                    if let Some(from) = parent.x.step_state() {
                        match to {
                            Ok(to) if arcs.direct(from, to) => {}
                            Ok(to) => fault = Some(format!("{from} → {to}")),
                            Err(raw) => fault = Some(format!("{from} → invalid state {raw}")),
                        }
                        if fault.is_some() {
                            parent.x.mark_step_fault();
                        }
                    }
                }
                if let Some(arc) = fault {
                    let label = self.mdev_label(ptr);
                    let msg = format!(
                        "{func} stepped {label} along {arc}, which is not one direct arc of the VFIO migration state machine"
                    );
                    self.raise_plain(Kind::InvalidMigrationArc, Some(ptr), ev, func, msg);
                }
            }
            Role::Reset => {
                self.sessions.reset(ptr, ev.ts_ns);
                let m = self.mdevs.get_mut(&ptr).expect("touched");
                if m.mig_state.is_some() {
                    m.mig_state = Some(MigState::Running);
                    m.note(ev, Note::Text("reset"), Some(MigState::Running));
                }
            }
            _ => {}
        }
    }

    /// The return of set_state, get_state or a transition step.
    #[allow(clippy::too_many_arguments)]
    pub(in crate::audit) fn exit_migration(
        &mut self,
        ev: &Event,
        frame: Option<&Frame>,
        ptr: u64,
        role: Role,
        ret: u64,
        failed: bool,
        field: Option<u64>,
        func: &Arc<str>,
    ) {
        match role {
            Role::SetState => {
                if let Some(f) = frame {
                    self.check_set_state(ptr, f, ev, ret, failed, func);
                }
            }
            Role::GetDataSize if !failed => {
                if let (Some(size), Some(m)) = (field, self.mdevs.get(&ptr)) {
                    let mdev = m.reference();
                    self.sessions.data_size(&mdev, size);
                }
            }
            Role::GetState if !failed => {
                let Some(read) = field else { return };
                if read == MigState::Error as u64 {
                    self.sessions.error_state(ptr, ev.ts_ns);
                }
                let m = &self.mdevs[&ptr];
                if let Some(tracked) = m.mig_state {
                    if read != tracked as u64 {
                        let shown = MigState::try_from(read)
                            .map(|s| s.to_string())
                            .unwrap_or_else(|raw| format!("invalid state {raw}"));
                        let label = self.mdev_label(ptr);
                        let msg = format!(
                            "{func} read back {shown} on {label}, but the last accepted request left it in {tracked}"
                        );
                        self.raise_plain(Kind::InvalidMigrationArc, Some(ptr), ev, func, msg);
                    }
                } else if let Ok(s) = MigState::try_from(read) {
                    // Learn the state of an adopted mdev or after an error.
                    if self.mdevs[&ptr].open || self.mdevs[&ptr].adopted {
                        self.mdevs.get_mut(&ptr).expect("touched").mig_state = Some(s);
                    }
                }
            }
            Role::TransitionStep if !failed => {
                let to = frame
                    .and_then(|f| f.call.arg(1))
                    .and_then(|raw| MigState::try_from(raw).ok());
                if let (Some(to), Some(parent)) = (
                    to,
                    self.calls
                        .stack_mut(ev.task.tid)
                        .iter_mut()
                        .rev()
                        .find(|f| f.x.requested().is_some() && f.call.mdev == Some(ptr)),
                ) {
                    parent.x.set_step_state(to);
                }
            }
            _ => {}
        }
    }

    #[allow(clippy::too_many_arguments)]
    fn check_set_state(
        &mut self,
        ptr: u64,
        frame: &Frame,
        ev: &Event,
        ret: u64,
        failed: bool,
        func: &Arc<str>,
    ) {
        let flags = self.profile.migration_flags;
        let raw = frame.x.requested().unwrap_or(0);
        let requested = MigState::try_from(raw);
        let before = frame.x.state_before();
        // Messages are built only for a fault: most calls are clean.
        let label = || self.mdev_label(ptr);
        let fault = if frame.x.step_fault() {
            None // already reported at the step that broke the machine
        } else if !requested.is_ok_and(|s| s.supported(flags)) {
            (!failed).then(|| {
                let why = match requested {
                    Ok(MigState::Error) => {
                        "ERROR is entered by the device, never requested".to_string()
                    }
                    Ok(s) => format!(
                        "{s} needs {}, which the device did not set",
                        s.missing_flags(flags).join(" and ")
                    ),
                    Err(_) => "no such state exists".to_string(),
                };
                format!(
                    "{func} accepted a request for {} on {}, a state outside the device's migration flags ({flags:#x}): {why}; it must fail",
                    state_name(raw),
                    label()
                )
            })
        } else if before == Some(MigState::Error) {
            (!failed).then(|| {
                format!("{func} accepted a request for {} on {} while the device was in ERROR; nothing leaves ERROR but a reset", state_name(raw), label())
            })
        } else if failed {
            None
        } else {
            let to = requested.expect("checked supported");
            let opens = self.arcs.opens_data_file(before, to);
            let has_file = ret != 0;
            if opens == Some(true) && !has_file {
                Some(format!(
                    "{func} moved {} into {to} but returned no migration data file",
                    label()
                ))
            } else if opens == Some(false) && has_file && before.is_some() {
                Some(format!(
                    "{func} returned a file ({ret:#x}) for {} on a request for {to}, whose last arc opens no data stream",
                    label()
                ))
            } else if let (Some(from), false) =
                (before, self.arcs.reachable(before.unwrap_or(to), to))
            {
                Some(format!(
                    "{func} accepted {from} → {to} on {}, a request the VFIO core refuses: no walk of direct arcs leads there",
                    label()
                ))
            } else {
                None
            }
        };
        let m = self.mdevs.get_mut(&ptr).expect("touched");
        if failed {
            // An error leaves the state as it was or in ERROR: learn it from get_state.
            if requested.is_ok_and(|s| s.supported(flags)) {
                self.sessions.set_state_failed(ptr, ev.ts_ns);
            }
            if before.is_some() && requested.is_ok_and(|s| s.supported(flags)) {
                m.mig_state = None;
            }
            m.note(ev, Note::Refused(raw), m.mig_state);
        } else if let Ok(to) = requested {
            if let Some(from) = before {
                self.transitions[from as usize][to as usize] += 1;
            }
            // An unsupported state was already reported: what follows cannot be judged.
            m.mig_state = Some(to).filter(|s| s.supported(flags));
            m.note(ev, Note::Step(before, to), Some(to));
            let m = &*m;
            let who = || (m.reference(), m.guest.clone());
            self.sessions
                .set_state_of(ptr, m.incarnation, who, to, ret, ev.ts_ns);
        }
        if let Some(msg) = fault {
            self.raise(
                Kind::InvalidMigrationArc,
                Some(ptr),
                ev,
                Some(func.clone()),
                msg,
                vec![(*frame.call.enter).clone()],
                Vec::new(),
            );
        }
    }
}
