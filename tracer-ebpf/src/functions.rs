//! Generic entry and return probes for the profile's functions.
//!
//! Userspace writes each function's address and what to read into a slot of
//! `APTRACE_CONFIG`: a profile file adds a function without a new object. Where the kernel
//! has attach cookies (5.15+), `enter_any` and `leave_any` serve every function, the link's
//! cookie naming the slot, so the kernel verifies two programs however many functions are
//! traced. Elsewhere there is one `enter_NN` kprobe and one `leave_NN` kretprobe per slot.
//! The slot, not `bpf_get_func_ip`, names the function: that helper is missing before 5.15
//! and returns the trampoline in kretprobes of kernels without rethook (s390x 6.1).

use aya_ebpf::{
    helpers::{bpf_probe_read_kernel, bpf_probe_read_kernel_str_bytes, generated},
    macros::{kprobe, kretprobe},
    programs::{ProbeContext, RetProbeContext},
    EbpfContext,
};
use tracer_common::{
    check_lock, counter, flags, kind, lock_state, read_at, FuncConfig, FuncEntry, FuncExit,
    NameRecord, PendingCall, PointerPath, SlotConfig, MAX_ARGS, MAX_HOPS, MAX_LOCK_READS,
};

use crate::{
    lock,
    maps::{config, count, slot, wake_flags, EVENTS},
    pending,
    record::{fill_header, now, pid_tgid},
    stacks,
};

/// The slot's configuration, by reference: copying it out costs a load and a store per
/// byte in the interpreter.
#[inline(always)]
fn slot_config(n: u32) -> Option<&'static SlotConfig> {
    let s = slot(n)?;
    if s.addr == 0 {
        return None;
    }
    Some(s)
}

/// Follows the path's pointers from `base`; None at a failed read or a NULL. A slot without
/// a path pays one compare (s390x interprets every instruction).
#[inline(always)]
fn follow(mut base: u64, path: &PointerPath) -> Option<u64> {
    let count = path.count as usize;
    // A constant bound the verifier sees; `count` only shortens it.
    for i in 0..MAX_HOPS {
        if i >= count {
            break;
        }
        if base == 0 {
            return None;
        }
        let at = base.wrapping_add(path.hops[i] as u64);
        // SAFETY: bpf_probe_read_kernel copes with any address.
        base = unsafe { bpf_probe_read_kernel(at as *const u64) }.ok()?;
    }
    Some(base)
}

#[inline(always)]
fn read_field(base: u64, cfg: &FuncConfig, path: &PointerPath) -> Option<u64> {
    let base = if path.count == 0 {
        base
    } else {
        follow(base, path)?
    };
    if base == 0 {
        return None;
    }
    let at = base.wrapping_add(cfg.field_offset as u64);
    // SAFETY: bpf_probe_read_kernel copes with any address.
    unsafe {
        if cfg.field_size == 4 {
            bpf_probe_read_kernel(at as *const u32).ok().map(u64::from)
        } else {
            bpf_probe_read_kernel(at as *const u64).ok()
        }
    }
}

/// `dev_name(vdev->dev)`: the vfio device's first member is `struct device *dev`, whose
/// first member is the kobject, whose first member is the name.
#[inline(always)]
fn send_name(obj: u64, ts_ns: u64, pid_tgid: u64) {
    if obj == 0 {
        return;
    }
    // SAFETY: bpf_probe_read_kernel copes with any address.
    let Ok(dev) = (unsafe { bpf_probe_read_kernel(obj as *const u64) }) else {
        return;
    };
    if dev == 0 {
        return;
    }
    // SAFETY: as above.
    let Ok(name) = (unsafe { bpf_probe_read_kernel(dev as *const u64) }) else {
        return;
    };
    if name == 0 {
        return;
    }
    let Some(mut entry) = EVENTS.reserve::<NameRecord>(0) else {
        count(counter::RINGBUF_FULL);
        return;
    };
    let rec = entry.as_mut_ptr();
    // SAFETY: `rec` points at reserved ring-buffer memory of the right size; the string
    // helper zero-fills the rest of the name.
    unsafe {
        fill_header(&mut (*rec).header, kind::MDEV_NAME, 0, ts_ns, pid_tgid);
        (*rec).obj = obj;
        if bpf_probe_read_kernel_str_bytes(name as *const u8, &mut (*rec).name).is_err() {
            entry.discard(0);
            return;
        }
    }
    entry.submit(wake_flags());
}

#[inline(always)]
fn on_entry(ctx: &ProbeContext, slot: u32) -> u32 {
    let Some(sc) = slot_config(slot) else {
        return 0;
    };
    let (addr, fc) = (sc.addr, &sc.func);
    let ts = now();
    let pid_tgid = pid_tgid();
    let args: [u64; MAX_ARGS] = [
        ctx.arg::<u64>(0).unwrap_or(0),
        ctx.arg::<u64>(1).unwrap_or(0),
        ctx.arg::<u64>(2).unwrap_or(0),
        ctx.arg::<u64>(3).unwrap_or(0),
    ];
    let mut fl = fc.extra_flags as u16;
    let untrusted = fl & flags::ARGS_UNTRUSTED != 0;
    if fc.read_name != 0 && !untrusted {
        send_name(args[0], ts.wrapping_sub(1), pid_tgid);
    }
    let field_base = match fc.field_arg {
        0 => args[0],
        1 => args[1],
        2 => args[2],
        _ => args[3],
    };
    pending::enter(
        pid_tgid,
        slot,
        PendingCall {
            ts_ns: ts,
            arg0: args[0],
            field_base,
        },
    );
    let mut field = 0;
    if fc.read_field_at & read_at::ENTRY != 0 && !untrusted {
        if let Some(v) = read_field(field_base, fc, &sc.path) {
            field = v;
            fl |= flags::FIELD_VALID;
        }
    }
    let (lock_state, lock_owner, holder) = if fc.check_lock != 0 {
        lock::check(config())
    } else {
        (lock_state::NOT_CHECKED, 0, 0)
    };
    let suspicious = match fc.check_lock {
        check_lock::STACK_IF_HELD => lock_state == lock_state::HELD_BY_CURRENT,
        check_lock::STACK_IF_NOT_HELD => {
            lock_state == lock_state::FREE || lock_state == lock_state::HELD_BY_OTHER
        }
        _ => false,
    };
    let mut stack_id = -1;
    if fc.stack_on_entry != 0 || suspicious {
        if let Some(id) = stacks::take(ctx) {
            stack_id = id;
            fl |= flags::STACK_VALID;
        }
    }
    let Some(mut entry) = EVENTS.reserve::<FuncEntry>(0) else {
        count(counter::RINGBUF_FULL);
        return 0;
    };
    let rec = entry.as_mut_ptr();
    // SAFETY: `rec` points at reserved ring-buffer memory of the right size; every field,
    // padding included, is written (the memory is not zeroed).
    unsafe {
        fill_header(&mut (*rec).header, kind::FUNC_ENTRY, fl, ts, pid_tgid);
        (*rec).func_ip = addr;
        (*rec).args = args;
        (*rec).field = field;
        (*rec).lock_owner = lock_owner;
        // The state and its padding as one word, and the lock reads' fields zeroed
        // (NOT_CHECKED, no owner: what an unused or failed read leaves) by word stores,
        // volatile: LLVM merges plain zero stores into a call to the object's memset, a
        // byte loop the interpreter pays per byte.
        let w = core::ptr::write_volatile::<u64>;
        core::ptr::write_volatile(
            core::ptr::addr_of_mut!((*rec).lock_state) as *mut u32,
            u32::from_ne_bytes([lock_state, 0, 0, 0]),
        );
        (*rec).stack_id = stack_id;
        w(core::ptr::addr_of_mut!((*rec).lock_owners[0]), 0);
        w(core::ptr::addr_of_mut!((*rec).lock_owners[1]), 0);
        w(core::ptr::addr_of_mut!((*rec).lock_owners[2]), 0);
        w(core::ptr::addr_of_mut!((*rec).lock_owners[3]), 0);
        w(core::ptr::addr_of_mut!((*rec).lock_ids) as *mut u64, 0);
        // The other declared locks this function can reach, straight into the record; most
        // slots read none and pay one compare (no JIT on s390x). Unrolled by hand with
        // constant indices: a loop kept its index and reloaded its registers per read.
        let reads = fc.lock_reads;
        // A read that starts at a NULL argument 0 ends them (userspace puts those last).
        let _ = reads != 0
            && lock::reads_enabled()
            && lock::read_into::<0>(rec, &sc.locks[0], &args, holder)
            && reads > 1
            && lock::read_into::<1>(rec, &sc.locks[1], &args, holder)
            && reads > 2
            && lock::read_into::<2>(rec, &sc.locks[2], &args, holder)
            && reads > 3
            && lock::read_into::<3>(rec, &sc.locks[3], &args, holder);
    }
    // The u32 and u64 stores above: aligned, and covering exactly those fields.
    const _: () = {
        use core::mem::offset_of;
        assert!(MAX_LOCK_READS == 4 && lock_state::NOT_CHECKED == 0);
        assert!(offset_of!(FuncEntry, lock_state) % 4 == 0);
        assert!(offset_of!(FuncEntry, _pad) == offset_of!(FuncEntry, lock_state) + 1);
        assert!(offset_of!(FuncEntry, stack_id) == offset_of!(FuncEntry, lock_state) + 4);
        assert!(offset_of!(FuncEntry, lock_ids) % 8 == 0);
        assert!(offset_of!(FuncEntry, lock_states) == offset_of!(FuncEntry, lock_ids) + 4);
        assert!(core::mem::size_of::<FuncEntry>() == offset_of!(FuncEntry, lock_states) + 4);
    };
    entry.submit(wake_flags());
    0
}

#[inline(always)]
fn on_exit(ctx: &RetProbeContext, slot: u32) -> u32 {
    let Some(sc) = slot_config(slot) else {
        return 0;
    };
    let (addr, fc) = (sc.addr, &sc.func);
    let ts = now();
    let pid_tgid = pid_tgid();
    let mut fl = fc.extra_flags as u16;
    let untrusted = fl & flags::ARGS_UNTRUSTED != 0;
    let (arg0, duration, field) = match pending::leave(pid_tgid, slot) {
        Some(p) => {
            fl |= flags::DURATION_VALID;
            let mut field = 0;
            if fc.read_field_at & read_at::EXIT != 0 && !untrusted {
                if let Some(v) = read_field(p.field_base, fc, &sc.path) {
                    field = v;
                    fl |= flags::FIELD_VALID;
                }
            }
            (p.arg0, ts.wrapping_sub(p.ts_ns), field)
        }
        None => {
            count(counter::EXIT_WITHOUT_ENTRY);
            (0, 0, 0)
        }
    };
    let Some(mut entry) = EVENTS.reserve::<FuncExit>(0) else {
        count(counter::RINGBUF_FULL);
        return 0;
    };
    let rec = entry.as_mut_ptr();
    // SAFETY: as in on_entry.
    unsafe {
        fill_header(&mut (*rec).header, kind::FUNC_EXIT, fl, ts, pid_tgid);
        (*rec).func_ip = addr;
        (*rec).ret = ctx.ret::<u64>();
        (*rec).arg0 = arg0;
        (*rec).duration_ns = duration;
        (*rec).field = field;
    }
    entry.submit(wake_flags());
    0
}

/// The entry of whichever function the link's cookie names (its slot): one program for
/// every function where the kernel has attach cookies (5.15+), so one verification.
#[kprobe]
pub fn enter_any(ctx: ProbeContext) -> u32 {
    on_entry(&ctx, cookie_slot(ctx.as_ptr()))
}

/// The return of whichever function the link's cookie names.
#[kretprobe]
pub fn leave_any(ctx: RetProbeContext) -> u32 {
    on_exit(&ctx, cookie_slot(ctx.as_ptr()))
}

/// The slot userspace put in the link's cookie; out of range, [`slot`] finds none.
#[inline(always)]
fn cookie_slot(ctx: *mut core::ffi::c_void) -> u32 {
    // SAFETY: the program's own context pointer.
    unsafe { generated::bpf_get_attach_cookie(ctx) as u32 }
}

macro_rules! slots {
    ($($n:literal: $enter:ident, $leave:ident;)*) => {
        $(
            #[kprobe]
            pub fn $enter(ctx: ProbeContext) -> u32 {
                on_entry(&ctx, $n)
            }
            #[kretprobe]
            pub fn $leave(ctx: RetProbeContext) -> u32 {
                on_exit(&ctx, $n)
            }
        )*
        /// Must equal `tracer_common::FUNC_SLOTS`.
        const SLOTS_DEFINED: u32 = [$($n),*].len() as u32;
    };
}

slots! {
    0: enter_00, leave_00; 1: enter_01, leave_01; 2: enter_02, leave_02; 3: enter_03, leave_03;
    4: enter_04, leave_04; 5: enter_05, leave_05; 6: enter_06, leave_06; 7: enter_07, leave_07;
    8: enter_08, leave_08; 9: enter_09, leave_09; 10: enter_10, leave_10; 11: enter_11, leave_11;
    12: enter_12, leave_12; 13: enter_13, leave_13; 14: enter_14, leave_14; 15: enter_15, leave_15;
    16: enter_16, leave_16; 17: enter_17, leave_17; 18: enter_18, leave_18; 19: enter_19, leave_19;
    20: enter_20, leave_20; 21: enter_21, leave_21; 22: enter_22, leave_22; 23: enter_23, leave_23;
    24: enter_24, leave_24; 25: enter_25, leave_25; 26: enter_26, leave_26; 27: enter_27, leave_27;
    28: enter_28, leave_28; 29: enter_29, leave_29; 30: enter_30, leave_30; 31: enter_31, leave_31;
}

const _: () = assert!(SLOTS_DEFINED == tracer_common::FUNC_SLOTS);
