//! The allocation ledger: what each mdev allocated and freed, leaks at release, leaks on an
//! error path or by overwriting the field, double and unknown frees.

use std::sync::Arc;

use serde::{Deserialize, Serialize};

use super::lifecycle::Note;
use super::migration::MigState;
use super::{secs, Auditor, Frame, Kind, MdevRef};
use crate::calls::show::errno_name;
use crate::model::{hex_u64, Body, Event};
use crate::profile::Role;

/// How many freed pointers are remembered for double-free detection.
const FREED_CAP: usize = 1 << 16;

/// The freeing roles of which some row no probe sees: missing (inlined or absent), failed, or
/// attached without the read of what it frees.
#[derive(Clone, Copy, Debug, Default)]
pub(super) struct UnseenFrees {
    /// `free-field` (the mdev's migration data).
    pub field: bool,
    /// `buffer-free` (the release helpers of the configuration buffers).
    pub buffer: bool,
}

impl Auditor {
    /// Tells the auditor how its probes attached (the live agent's attach, a recording's
    /// header). Where no probe sees the row that frees an allocation, the default mode (no
    /// allocator events) would only ever see it allocated and report a leak that may not be
    /// one: such allocations are not entered in the ledger, and the agent's probe list says
    /// which findings that costs. With `--all-allocations` the allocator's own frees still
    /// end them.
    pub fn probes_attached(&mut self, probes: &[crate::recording::ProbeStatus]) {
        use crate::recording::ProbeState;
        // Any row of the role unseen: which slot's allocations it alone frees is not known,
        // so none of the role's allocations is guessed at.
        let unseen = |role: Role| {
            self.profile.functions.iter().any(|f| {
                f.role == role
                    && probes.iter().any(|p| {
                        p.name == f.name
                            && matches!(
                                p.state,
                                ProbeState::Missing | ProbeState::Failed | ProbeState::Degraded
                            )
                    })
            })
        };
        self.unseen_frees = UnseenFrees {
            field: unseen(Role::FreeField),
            buffer: unseen(Role::BufferFree),
        };
    }
}

/// An allocation still outstanding.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Outstanding {
    #[serde(with = "hex_u64")]
    pub ptr: u64,
    pub bytes: u64,
    pub function: Arc<str>,
    pub mdev: Option<MdevRef>,
    pub seq: u64,
    #[serde(with = "crate::model::dec_u64")]
    pub ts_ns: u64,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub stack: Vec<Arc<str>>,
}

#[derive(Clone, Debug)]
pub(super) struct Allocation {
    pub(super) bytes: u64,
    pub(super) mdev: Option<u64>,
    /// Which life of `mdev` it was allocated in.
    pub(super) life: u32,
    pub(super) function: Arc<str>,
    pub(super) tid: u32,
    pub(super) event: Event,
    pub(super) stack: Vec<Arc<str>>,
    /// Stored into the profile's field (as opposed to seen only at the allocator).
    pub(super) in_field: bool,
    /// Already reported (error-path-leak / overwrite-leak / buffer-held-at-close): not a
    /// leak again.
    pub(super) reported: bool,
    /// A configuration buffer of a migration file (audit/buffers.rs).
    pub(super) buffer: bool,
    /// Known to be in its file's slot (read there at allocation or by a release helper).
    pub(super) in_slot: bool,
}

#[derive(Clone, Debug)]
pub(super) struct Freed {
    pub(super) event: Event,
    pub(super) tid: u32,
    /// seq of the entry of the call that freed it (to merge the allocator's own kfree).
    pub(super) call_seq: Option<u64>,
}

/// Frames of the allocator and of the tracepoint that reported it (`--all-allocations`):
/// inside the tracing machinery, not where the driver allocated.
const MACHINERY: &[&str] = &[
    "kmalloc",
    "__kmalloc",
    "kmem_cache_alloc",
    "kvmalloc",
    "__kvmalloc",
    "kzalloc",
    "krealloc",
    "slab_",
    "__slab_",
    "___slab_",
    "trace_",
    "__trace",
    "__bpf_trace",
    "bpf_trace_run",
    "perf_trace",
];

fn function_of(frame: &str) -> &str {
    frame.split(['+', ' ']).next().unwrap_or(frame)
}

/// An allocation's stack as a reader wants it: from the allocation's call site outwards.
/// The allocator's own frames (and the tracepoint's) above the call site are dropped; the
/// event in the evidence keeps the stack as captured.
fn from_call_site(stack: &[Arc<str>], site: Option<&str>) -> Vec<Arc<str>> {
    let site = site.map(function_of).filter(|s| !s.is_empty() && *s != "?");
    if let Some(at) = site.and_then(|s| stack.iter().position(|f| function_of(f) == s)) {
        return stack[at..].to_vec();
    }
    let skip = stack
        .iter()
        .take_while(|f| MACHINERY.iter().any(|m| function_of(f).starts_with(m)))
        .count();
    stack[skip..].to_vec()
}

impl Auditor {
    pub(super) fn alloc_into_field(
        &mut self,
        ptr: u64,
        p: u64,
        ev: &Event,
        func: &Arc<str>,
        frame: Option<&Frame>,
        lock_fault: bool,
    ) {
        let life = self.current_life(ptr).unwrap_or(0);
        // An older allocation still in the same field is lost by this store.
        let older: Option<u64> = self
            .ledger
            .iter()
            .find(|(&q, a)| {
                q != p
                    && a.mdev == Some(ptr)
                    && a.life == life
                    && a.in_field
                    && !a.reported
                    && a.function == *func
            })
            .map(|(&q, _)| q);
        let stack = match frame.map(|f| &f.call.enter.body) {
            Some(Body::Enter { stack, .. }) => stack.clone(),
            _ => Vec::new(),
        };
        match self.ledger.get_mut(&p) {
            // The allocator's own event (--all-allocations) came first: same allocation.
            Some(a) if a.tid == ev.task.tid && !a.in_field => {
                a.in_field = true;
                a.function = func.clone();
                a.mdev = Some(ptr);
                a.life = life;
                if a.stack.is_empty() {
                    a.stack = stack;
                }
            }
            // Only the freeing row could end it, and no probe sees that row: never freed to
            // the auditor, the allocation would be a leak by guess (see probes_attached).
            _ if self.unseen_frees.field => {}
            _ => {
                self.freed.remove(&p);
                if let Some(old) = self.ledger.remove(&p) {
                    self.forget_outstanding(&old);
                }
                let m = self.mdevs.get_mut(&ptr).expect("touched");
                m.outstanding += 1;
                self.ledger.insert(
                    p,
                    Allocation {
                        bytes: 0,
                        mdev: Some(ptr),
                        life,
                        function: func.clone(),
                        tid: ev.task.tid,
                        event: ev.clone(),
                        stack,
                        in_field: true,
                        reported: false,
                        buffer: false,
                        in_slot: false,
                    },
                );
            }
        }
        self.mdevs.get_mut(&ptr).expect("touched").note(
            ev,
            Note::MigAllocated(p),
            Some(MigState::Running),
        );
        self.mdevs.get_mut(&ptr).expect("touched").mig_state = Some(MigState::Running);
        if let Some(q) = older {
            let a = self.ledger.get_mut(&q).expect("found above");
            a.reported = true;
            let mut evidence = vec![a.event.clone()];
            // Cloned only here, when a finding needs it, not on every store.
            evidence.extend(frame.map(|f| (*f.call.enter).clone()));
            let (at, afunc) = (a.event.ts_ns, a.function.clone());
            let msg = format!(
                "{func} stored {p:#x} into mig_data of {} while {q:#x} (allocated by {afunc} at {}) was still there: the older allocation is leaked",
                self.mdev_label(ptr),
                secs(at)
            );
            let _ = lock_fault;
            self.raise(
                Kind::OverwriteLeak,
                Some(ptr),
                ev,
                Some(func.clone()),
                msg,
                evidence,
                Vec::new(),
            );
        }
    }

    pub(super) fn forget_outstanding(&mut self, a: &Allocation) {
        if let Some(m) = a.mdev.and_then(|p| self.life_mut(p, a.life)) {
            m.outstanding = m.outstanding.saturating_sub(1);
            m.outstanding_bytes = m.outstanding_bytes.saturating_sub(a.bytes);
        }
    }

    /// A failed open or probe: what it allocated for the mdev must be gone.
    pub(super) fn error_path_leaks(
        &mut self,
        ptr: u64,
        frame: &Frame,
        ev: &Event,
        func: &Arc<str>,
        err: i32,
    ) {
        let since = frame.call.enter.seq;
        let life = self.current_life(ptr);
        let mut left: Vec<u64> = self
            .ledger
            .iter()
            .filter(|(_, a)| {
                a.mdev == Some(ptr)
                    && Some(a.life) == life
                    && !a.reported
                    && a.tid == ev.task.tid
                    && a.event.seq > since
            })
            .map(|(&p, _)| p)
            .collect();
        left.sort_unstable();
        for p in left {
            let a = self.ledger.get_mut(&p).expect("listed");
            a.reported = true;
            let (aev, afunc, astack) = (a.event.clone(), a.function.clone(), a.stack.clone());
            let msg = format!(
                "{func} failed with {} on {} ({}) but left {p:#x} allocated by {afunc} at {} outstanding",
                errno_name(err),
                self.mdev_label(ptr),
                self.guest_label(ptr),
                secs(aev.ts_ns)
            );
            self.raise(
                Kind::ErrorPathLeak,
                Some(ptr),
                ev,
                Some(func.clone()),
                msg,
                vec![(*frame.call.enter).clone(), aev],
                astack,
            );
        }
    }

    /// release_dev returned: whatever the mdev still holds is leaked.
    pub(super) fn leaks_at_release(&mut self, ptr: u64, ev: &Event, func: &Arc<str>) {
        // Only this life's: an earlier life that was never seen released keeps its own.
        let life = self.current_life(ptr);
        let mut leaked: Vec<u64> = self
            .ledger
            .iter()
            .filter(|(_, a)| a.mdev == Some(ptr) && Some(a.life) == life)
            .map(|(&p, _)| p)
            .collect();
        leaked.sort_unstable();
        for p in leaked {
            let a = self.ledger.remove(&p).expect("listed");
            self.forget_outstanding(&a);
            if a.reported {
                continue;
            }
            let what = if a.in_field { "mig_data " } else { "" };
            let size = if a.bytes > 0 {
                format!(" ({} bytes)", a.bytes)
            } else {
                String::new()
            };
            let msg = format!(
                "{what}{p:#x}{size} allocated by {} at {} for {} ({}) was never freed before {func} returned at {}",
                a.function,
                secs(a.event.ts_ns),
                self.mdev_label(ptr),
                self.guest_label(ptr),
                secs(ev.ts_ns)
            );
            self.raise(
                Kind::Leak,
                Some(ptr),
                ev,
                Some(a.function.clone()),
                msg,
                vec![a.event.clone()],
                a.stack.clone(),
            );
        }
    }

    pub(super) fn on_alloc(
        &mut self,
        ev: &Event,
        p: u64,
        bytes: u64,
        site: Option<Arc<str>>,
        stack: &[Arc<str>],
    ) {
        if p == 0 {
            return;
        }
        let ctx = self.context_mdev(ev.task.tid);
        self.freed.remove(&p);
        if let Some(old) = self.ledger.remove(&p) {
            self.forget_outstanding(&old);
        }
        let mut life = 0;
        if let Some(m) = ctx.and_then(|c| self.mdevs.get_mut(&c)) {
            m.outstanding += 1;
            m.outstanding_bytes += bytes;
            life = m.incarnation;
        }
        let stack = from_call_site(stack, site.as_deref());
        let function = site.unwrap_or_else(|| Arc::from("?"));
        self.ledger.insert(
            p,
            Allocation {
                bytes,
                mdev: ctx,
                life,
                function,
                tid: ev.task.tid,
                event: ev.clone(),
                stack,
                in_field: false,
                reported: false,
                buffer: false,
                in_slot: false,
            },
        );
    }

    /// A free: from the allocator (`by_field` None) or from the profile's freeing function.
    pub(super) fn on_free(&mut self, ev: &Event, p: u64, by_field: Option<(u64, Arc<str>)>) {
        if p == 0 {
            return;
        }
        let tid = ev.task.tid;
        let call_seq = match &by_field {
            Some(_) => Some(ev.seq),
            // The allocator's kfree inside the freeing function is the same free.
            None => self
                .calls
                .stack(tid)
                .iter()
                .rev()
                .find(|f| {
                    matches!(
                        self.profile.functions[f.call.spec].role,
                        Role::FreeField | Role::BufferFree
                    )
                })
                .map(|f| f.call.enter.seq),
        };
        let ctx = by_field
            .as_ref()
            .map(|(m, _)| *m)
            .or_else(|| self.context_mdev(tid));
        let func = by_field
            .as_ref()
            .map(|(_, f)| f.clone())
            .or_else(|| match &ev.body {
                Body::Free { site, .. } => site.clone(),
                _ => None,
            });
        if let Some(a) = self.ledger.remove(&p) {
            self.forget_outstanding(&a);
            if let Some(m) = a.mdev.and_then(|q| self.life_mut(q, a.life)) {
                if a.in_field {
                    m.note(ev, Note::MigFreed(p), None);
                }
            }
            self.remember_freed(p, ev, tid, call_seq);
            return;
        }
        if let Some(prev) = self.freed.get(&p) {
            if by_field.is_none()
                && prev.tid == tid
                && prev.call_seq.is_some()
                && self
                    .calls
                    .stack(tid)
                    .iter()
                    .any(|f| Some(f.call.enter.seq) == prev.call_seq)
            {
                return; // the kfree inside a freeing function whose free we already counted
            }
            let first = prev.event.clone();
            let label = ctx
                .map(|m| format!(" of {}", self.mdev_label(m)))
                .unwrap_or_default();
            let msg = format!(
                "{p:#x}{label} freed again by {} at {}; it was already freed at {} (event #{}) and not allocated since",
                func.as_deref().unwrap_or("?"),
                secs(ev.ts_ns),
                secs(first.ts_ns),
                first.seq
            );
            self.raise(
                Kind::DoubleFree,
                ctx,
                ev,
                func,
                msg,
                vec![first],
                Vec::new(),
            );
            return;
        }
        // Never seen allocated. Only a finding when we watched the mdev from its birth.
        let known_birth = ctx
            .and_then(|m| self.mdevs.get(&m))
            .is_some_and(|m| !m.adopted);
        self.remember_freed(p, ev, tid, call_seq);
        if known_birth {
            let label = self.mdev_label(ctx.expect("known"));
            let msg = format!(
                "{} freed {p:#x} of {label}, a pointer never seen allocated",
                func.as_deref().unwrap_or("?")
            );
            self.raise(
                Kind::UnknownFree,
                ctx,
                ev,
                func,
                msg,
                Vec::new(),
                Vec::new(),
            );
        }
    }

    pub(super) fn remember_freed(&mut self, p: u64, ev: &Event, tid: u32, call_seq: Option<u64>) {
        if self
            .freed
            .insert(
                p,
                Freed {
                    event: ev.clone(),
                    tid,
                    call_seq,
                },
            )
            .is_none()
        {
            self.freed_order.push_back(p);
        }
        while self.freed_order.len() > FREED_CAP {
            if let Some(old) = self.freed_order.pop_front() {
                self.freed.remove(&old);
            }
        }
    }
}

#[cfg(test)]
mod stack_tests {
    use super::*;

    fn frames(names: &[&str]) -> Vec<Arc<str>> {
        names.iter().map(|n| Arc::from(*n)).collect()
    }

    #[test]
    fn an_allocation_stack_starts_at_its_call_site() {
        let captured = frames(&[
            "__traceiter_kmalloc+0x40",
            "__kmalloc_cache_noprof+0x1f2",
            "vfio_ap_init_migration_data+0x3c",
            "vfio_ap_mdev_open_device+0x88",
        ]);
        let s = from_call_site(&captured, Some("vfio_ap_init_migration_data+0x3c"));
        assert_eq!(
            s,
            frames(&[
                "vfio_ap_init_migration_data+0x3c",
                "vfio_ap_mdev_open_device+0x88"
            ])
        );
        // Without a symbolized call site, the known machinery is dropped.
        let s = from_call_site(&captured, None);
        assert_eq!(s[0].as_ref(), "vfio_ap_init_migration_data+0x3c");
        // A stack already starting in the driver is kept whole.
        let driver = frames(&["vfio_ap_mdev_probe+0x10", "mdev_probe+0x20"]);
        assert_eq!(from_call_site(&driver, Some("somewhere_else+0x1")), driver);
    }
}
