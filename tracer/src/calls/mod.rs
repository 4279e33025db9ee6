//! Calls: the ordered event stream read as function calls. The one place that pairs entries
//! with returns on per-task stacks, decides which calls can be believed, which mdev a call is
//! about, and whether it failed.
//!
//! What a call *means* for the driver's rules is the auditor's; sinks read the interpretation
//! of the event just delivered as a [`Step`].

pub(crate) mod fasthash;
pub(crate) mod names;
mod ret;
pub mod show;

use std::sync::Arc;

use crate::model::{Body, Event, LockObs};
use crate::profile::{LockContract, MdevArg, Profile, RetType, Role};
use fasthash::FastMap;
use names::NameCache;
pub use ret::{as_int, failed};

/// One call of a profiled function, as entered.
#[derive(Clone, Debug)]
pub struct Call {
    /// Index of the function in the profile.
    pub spec: usize,
    /// The entry event. Boxed: calls are pushed and popped on every pair of events, and an
    /// event is large to move.
    pub enter: Box<Event>,
    /// The registers are the C arguments: not a compiler clone, not marked untrusted.
    pub trusted: bool,
    /// The vfio_ap object (`ap_matrix_mdev`) the call is about, when known.
    pub mdev: Option<u64>,
    /// The `struct mdev_device *` argument of probe/remove.
    pub mdev_device: Option<u64>,
}

/// Argument `i` of an entry, as captured, when it was.
pub fn entry_arg(enter: &Event, i: usize) -> Option<u64> {
    match &enter.body {
        Body::Enter { args, .. } => args.get(i).copied(),
        _ => None,
    }
}

impl Call {
    /// Argument `i` as captured at entry, when it was.
    pub fn arg(&self, i: usize) -> Option<u64> {
        entry_arg(&self.enter, i)
    }

    /// The lock as the probe read it at entry.
    pub fn lock(&self) -> LockObs {
        match &self.enter.body {
            Body::Enter { lock, .. } => *lock,
            _ => LockObs::NotChecked,
        }
    }

    /// The function's name as the event gave it (a clone keeps its suffix).
    pub fn func(&self) -> Arc<str> {
        match &self.enter.body {
            Body::Enter { func, .. } => func.clone(),
            _ => Arc::from(""),
        }
    }
}

/// A [`Call`] before its entry is boxed into it: what [`Calls::enter`] gives to be judged,
/// and then to [`Calls::push`]. Small and `Copy`, so that judging it moves nothing large.
#[derive(Clone, Copy, Debug)]
pub struct Entered {
    pub spec: usize,
    pub trusted: bool,
    pub mdev: Option<u64>,
    pub mdev_device: Option<u64>,
}

impl Entered {
    fn with(self, enter: Box<Event>) -> Call {
        Call {
            spec: self.spec,
            enter,
            trusted: self.trusted,
            mdev: self.mdev,
            mdev_device: self.mdev_device,
        }
    }
}

/// A call on its task's stack, with what the user of [`Calls`] keeps about it.
///
/// `x` first, in a fixed order: after the call (whose last field is a lone byte), the
/// pushed frame was assembled on the stack and copied with wide reads across both, which
/// waited for the narrow writes that had just made them (a failed store forward).
#[derive(Clone, Debug)]
#[repr(C)]
pub struct Frame<X> {
    pub x: X,
    pub call: Call,
}

/// A return, paired with its entry when there was one.
#[derive(Clone, Debug)]
pub struct Return {
    pub spec: usize,
    pub ret: u64,
    /// The function's return type says this value is a failure.
    pub failed: bool,
    /// Neither the return nor its entry is a compiler clone or marked untrusted.
    pub trusted: bool,
    /// The mdev of the call (from its entry, or from the return's arg0 without one).
    pub mdev: Option<u64>,
    /// Calls above this one on the task's stack, dropped: their returns were missed.
    pub missed: usize,
}

/// A return and the call it ends (none when its entry was not seen).
#[derive(Debug)]
#[repr(C)]
pub struct Exited<X> {
    pub frame: Option<Frame<X>>,
    pub ret: Return,
}

/// The interpretation of the event just delivered.
#[derive(Clone, Copy, Debug)]
pub enum Step<'a> {
    /// Not a call of the profile.
    Other,
    /// A call was entered. `attributed` is an enclosing call that learned its mdev from this
    /// one (probe, once init_dev names the object).
    Enter {
        call: &'a Call,
        attributed: Option<&'a Call>,
    },
    /// A call returned.
    Exit {
        ret: &'a Return,
        call: Option<&'a Call>,
    },
}

/// What the last event was; a return's [`Exited`] is kept beside it (`Calls::exited`), so
/// that marking every event costs a small write, not a move of a return and its frame.
#[derive(Clone, Copy)]
enum Last {
    Other,
    Enter { tid: u32, attributed: Option<usize> },
    Exit,
}

/// Whether the lock as read satisfies the function's contract; `None` when it was not read.
pub fn lock_kept(contract: LockContract, obs: LockObs) -> Option<bool> {
    if obs == LockObs::NotChecked {
        return None;
    }
    Some(match contract {
        LockContract::None => true,
        LockContract::Held => obs == LockObs::HeldByCurrent,
        LockContract::NotHeld => obs != LockObs::HeldByCurrent,
    })
}

/// What the interpretation needs of a profiled function.
#[derive(Clone, Copy)]
struct Spec {
    role: Role,
    mdev: MdevArg,
    ret: RetType,
}

/// The call stacks by task. A task's stack is looked up several times per event (entry,
/// return, the rules' look at enclosing calls), nearly always the same task's in a row:
/// the last one found is remembered, and a hash lookup paid only on a change of task.
struct Tasks<X> {
    index: FastMap<u32, u32>,
    stacks: Vec<Vec<Frame<X>>>,
    /// (tid, position in `stacks`) of the last task looked up mutably.
    last: Option<(u32, u32)>,
}

impl<X> Default for Tasks<X> {
    fn default() -> Self {
        Tasks {
            index: FastMap::default(),
            stacks: Vec::new(),
            last: None,
        }
    }
}

impl<X> Tasks<X> {
    #[inline]
    fn position(&self, tid: u32) -> Option<u32> {
        match self.last {
            Some((t, i)) if t == tid => Some(i),
            _ => self.index.get(&tid).copied(),
        }
    }

    #[inline]
    fn get(&self, tid: u32) -> Option<&Vec<Frame<X>>> {
        self.position(tid).map(|i| &self.stacks[i as usize])
    }

    #[inline]
    fn get_mut(&mut self, tid: u32) -> Option<&mut Vec<Frame<X>>> {
        let i = self.position(tid)?;
        self.last = Some((tid, i));
        Some(&mut self.stacks[i as usize])
    }

    /// The task's stack, made empty on its first call.
    #[inline]
    fn entry(&mut self, tid: u32) -> &mut Vec<Frame<X>> {
        let i = match self.position(tid) {
            Some(i) => i,
            None => {
                let i = self.stacks.len() as u32;
                self.stacks.push(Vec::new());
                self.index.insert(tid, i);
                i
            }
        };
        self.last = Some((tid, i));
        &mut self.stacks[i as usize]
    }
}

/// Per-task call stacks and the mdev each call is about. `X` is what the user keeps per call.
pub struct Calls<X> {
    specs: Vec<Spec>,
    names: NameCache,
    tasks: Tasks<X>,
    /// `struct mdev_device *` → object, learned from init_dev nested in probe.
    mdev_devices: FastMap<u64, u64>,
    /// The entered call that learned its mdev, between `enter` and `push`.
    attributed: Option<usize>,
    last: Last,
    /// The last return, while `last` is `Exit`.
    exited: Option<Exited<X>>,
    /// Boxes of retired entry events, refilled by the next entries: an entry's copy then
    /// costs no allocation (neither the box nor, usually, its argument vector).
    // The boxes themselves are what is reused: they move into `Call::enter` as they are.
    #[allow(clippy::vec_box)]
    spare: Vec<Box<Event>>,
    /// Retired entry boxes by function, for that function's next entries: its name and,
    /// usually, its task's name are the same strings already, so the copy touches no
    /// reference count (an atomic operation each, which cost more than the rest of it).
    #[allow(clippy::vec_box)]
    by_spec: Vec<Vec<Box<Event>>>,
    /// The function whose spares grew last, for a pipeline's `boxed_owned`.
    spared_last: usize,
}

/// How many retired boxes each function keeps for its own next entries.
const SPARE_PER_FUNCTION: usize = 16;

/// How many retired boxes are kept for reuse: enough for a pipeline's window to take
/// and give back boxes without going to the allocator for them.
const SPARE_BOXES: usize = 1024;

/// `*dst = src.clone()`, without touching the counts when both are one string already
/// (a task's name, a function's: events of one source share them).
#[inline]
fn assign(dst: &mut Arc<str>, src: &Arc<str>) {
    if !Arc::ptr_eq(dst, src) {
        *dst = src.clone();
    }
}

/// Makes `dst` a copy of `src`, reusing `dst`'s vectors where both are entries.
fn refill(dst: &mut Event, src: &Event) {
    dst.seq = src.seq;
    dst.ts_ns = src.ts_ns;
    dst.cpu = src.cpu;
    dst.task.pid = src.task.pid;
    dst.task.tid = src.task.tid;
    assign(&mut dst.task.comm, &src.task.comm);
    match (&mut dst.body, &src.body) {
        (
            Body::Enter {
                func,
                args,
                field,
                lock,
                locks,
                untrusted,
                stack,
            },
            Body::Enter {
                func: sfunc,
                args: sargs,
                field: sfield,
                lock: slock,
                locks: slocks,
                untrusted: suntrusted,
                stack: sstack,
            },
        ) => {
            assign(func, sfunc);
            args.clone_from(sargs);
            *field = *sfield;
            *lock = *slock;
            // Usually both empty: not even a call then.
            if !(locks.is_empty() && slocks.is_empty()) {
                locks.clone_from(slocks);
            }
            *untrusted = *suntrusted;
            if !(stack.is_empty() && sstack.is_empty()) {
                stack.clone_from(sstack);
            }
        }
        (d, s) => *d = s.clone(),
    }
}

impl<X> Calls<X> {
    pub fn new(profile: &Profile) -> Calls<X> {
        Calls {
            specs: profile
                .functions
                .iter()
                .map(|f| Spec {
                    role: f.role,
                    mdev: f.mdev,
                    ret: f.ret_type(),
                })
                .collect(),
            names: NameCache::new(profile),
            tasks: Tasks::default(),
            mdev_devices: FastMap::default(),
            attributed: None,
            last: Last::Other,
            exited: None,
            spare: Vec::new(),
            by_spec: vec![Vec::new(); profile.functions.len()],
            spared_last: 0,
        }
    }

    /// Starts a new event: the last one is forgotten, and a retired call's entry box goes
    /// back to the spares. Once per event; `push` and `retire` then only say what it was.
    #[inline(always)]
    fn next_event(&mut self) {
        if let Last::Exit = self.last {
            if let Some(f) = self.exited.as_mut().and_then(|e| e.frame.take()) {
                let spec = f.call.spec;
                match self.by_spec.get_mut(spec) {
                    Some(own) if own.len() < SPARE_PER_FUNCTION => {
                        own.push(f.call.enter);
                        self.spared_last = spec;
                    }
                    _ => self.spare(f.call.enter),
                }
            }
        }
        self.last = Last::Other;
    }

    /// `ev` moved into a spare box when there is one.
    #[inline]
    pub fn boxed_owned(&mut self, ev: Event) -> Box<Event> {
        match self.take_spare() {
            Some(mut b) => {
                *b = ev;
                b
            }
            None => Box::new(ev),
        }
    }

    /// A box that is done with, for the next event, when there is one.
    #[inline]
    pub fn take_spare(&mut self) -> Option<Box<Event>> {
        match self.spare.pop() {
            Some(b) => Some(b),
            // A pipeline's entries come boxed: their retired boxes wait by function.
            None => self.by_spec.get_mut(self.spared_last).and_then(|v| v.pop()),
        }
    }

    /// Keeps a box for reuse (while there are fewer than [`SPARE_BOXES`]).
    #[inline]
    pub fn spare(&mut self, b: Box<Event>) {
        if self.spare.len() < SPARE_BOXES {
            self.spare.push(b);
        }
    }

    /// A boxed copy of an entry of function `spec`, in a spare box when there is one: one
    /// of that function's first.
    fn boxed(&mut self, spec: usize, ev: &Event) -> Box<Event> {
        let own = self.by_spec.get_mut(spec).and_then(|v| v.pop());
        match own.or_else(|| self.spare.pop()) {
            Some(mut b) => {
                refill(&mut b, ev);
                b
            }
            None => Box::new(ev.clone()),
        }
    }

    /// An event that is not a call of the profile.
    pub fn other(&mut self) {
        self.next_event();
    }

    /// An entry: what it says of its call (and the attribution of an enclosing probe), not
    /// yet on its task's stack. [`Calls::push`] it once judged (the judge may look at the
    /// calls it is nested in).
    // Inlined: returned through memory, the `Entered` written field by field was read
    // back whole at once, and that read waited for the writes (a failed store forward):
    // a sixth of the auditor's time.
    #[inline(always)]
    pub fn enter(&mut self, ev: &Event) -> Option<Entered> {
        self.next_event();
        self.attributed = None;
        let Body::Enter {
            func,
            args,
            untrusted,
            ..
        } = &ev.body
        else {
            return None;
        };
        let (spec, clone) = self.names.lookup(func)?;
        let s = self.specs[spec];
        let arg0 = args.first().copied().unwrap_or(0);
        let mut call = Entered {
            spec,
            trusted: !*untrusted && !clone,
            mdev: None,
            mdev_device: None,
        };
        if call.trusted {
            match s.mdev {
                MdevArg::Object => call.mdev = Some(arg0).filter(|&p| p != 0),
                MdevArg::MdevDevice => {
                    call.mdev_device = Some(arg0);
                    call.mdev = self.mdev_devices.get(&arg0).copied();
                }
                MdevArg::None => {}
            }
        }
        if let (Role::InitDev, Some(ptr)) = (s.role, call.mdev) {
            // init_dev nested in probe, same task: the probe's mdev_device is this object.
            if let Some(fs) = self.tasks.get_mut(ev.task.tid) {
                if let Some(i) = fs.iter().rposition(|f| f.call.mdev_device.is_some()) {
                    let outer = &mut fs[i].call;
                    outer.mdev = Some(ptr);
                    if let Some(dev) = outer.mdev_device {
                        self.mdev_devices.insert(dev, ptr);
                    }
                    self.attributed = Some(i);
                }
            }
        }
        Some(call)
    }

    /// Puts an entered call on its task's stack, with a copy of its entry `ev` (in a spare
    /// box when there is one) and what the user keeps about it.
    #[inline]
    pub fn push(&mut self, call: Entered, ev: &Event, x: X) {
        let enter = self.boxed(call.spec, ev);
        self.push_boxed(call, enter, x);
    }

    /// [`Calls::push`] of a boxed entry the caller gives away: the box becomes the call's,
    /// without a copy.
    #[inline(always)]
    pub fn push_boxed(&mut self, call: Entered, enter: Box<Event>, x: X) {
        let tid = enter.task.tid;
        self.tasks.entry(tid).push(Frame {
            x,
            call: call.with(enter),
        });
        let attributed = self.attributed.take();
        self.last = Last::Enter { tid, attributed };
    }

    /// A return: pops its call (and the calls above it, whose returns were missed). Give the
    /// result back with `retire` once judged, so sinks can read it.
    pub fn exit(&mut self, ev: &Event) -> Option<Exited<X>> {
        self.next_event();
        let Body::Exit {
            func, ret, arg0, ..
        } = &ev.body
        else {
            return None;
        };
        let (spec, clone) = self.names.lookup(func)?;
        let s = self.specs[spec];
        let mut missed = 0;
        let frame = self.tasks.get_mut(ev.task.tid).and_then(|fs| {
            let pos = fs.iter().rposition(|f| f.call.spec == spec)?;
            missed = fs.len() - pos - 1;
            fs.truncate(pos + 1);
            fs.pop()
        });
        let trusted = !clone && !frame.as_ref().is_some_and(|f| entered_untrusted(&f.call));
        let mdev = match (&frame, s.mdev) {
            _ if !trusted => None,
            (Some(f), _) => f.call.mdev,
            (None, MdevArg::Object) => Some(*arg0).filter(|&p| p != 0),
            (None, _) => None,
        };
        if let (Role::ReleaseDev, Some(ptr)) = (s.role, mdev) {
            // The object is gone: its mdev_device names nothing any more.
            self.mdev_devices.retain(|_, v| *v != ptr);
        }
        Some(Exited {
            ret: Return {
                spec,
                ret: *ret,
                failed: failed(s.ret, *ret),
                trusted,
                mdev,
                missed,
            },
            frame,
        })
    }

    /// A judged return, kept until the next event for [`Calls::step`].
    pub fn retire(&mut self, exited: Exited<X>) {
        self.last = Last::Exit;
        self.exited = Some(exited);
    }

    /// The interpretation of the last event.
    pub fn step(&self) -> Step<'_> {
        match &self.last {
            Last::Other => Step::Other,
            Last::Enter { tid, attributed } => {
                let Some(fs) = self.tasks.get(*tid) else {
                    return Step::Other;
                };
                match fs.last() {
                    Some(top) => Step::Enter {
                        call: &top.call,
                        attributed: attributed.and_then(|i| fs.get(i)).map(|f| &f.call),
                    },
                    None => Step::Other,
                }
            }
            Last::Exit => match &self.exited {
                Some(e) => Step::Exit {
                    ret: &e.ret,
                    call: e.frame.as_ref().map(|f| &f.call),
                },
                None => Step::Other,
            },
        }
    }

    /// The task's calls in progress, outermost first.
    pub fn stack(&self, tid: u32) -> &[Frame<X>] {
        self.tasks.get(tid).map_or(&[], |fs| fs.as_slice())
    }

    pub fn stack_mut(&mut self, tid: u32) -> &mut [Frame<X>] {
        self.tasks
            .get_mut(tid)
            .map_or(&mut [], |fs| fs.as_mut_slice())
    }

    /// The mdev of the innermost call of the task that has one.
    pub fn context_mdev(&self, tid: u32) -> Option<u64> {
        self.stack(tid).iter().rev().find_map(|f| f.call.mdev)
    }

    /// Every call in progress, in no order.
    pub fn in_progress(&self) -> impl Iterator<Item = &Call> {
        self.tasks.stacks.iter().flatten().map(|f| &f.call)
    }
}

fn entered_untrusted(call: &Call) -> bool {
    matches!(
        call.enter.body,
        Body::Enter {
            untrusted: true,
            ..
        }
    )
}

#[cfg(test)]
mod tests;
