//! `--all-allocations`: the allocator itself. Raw tracepoints for the kmalloc family and
//! kmem_cache (their first two arguments, call_site and ptr, are stable across versions and
//! need no BTF); kvmalloc and vfree through kprobes with the caller from the return address
//! (inside kvmalloc the kmalloc tracepoint's call site is in mm/). An allocation is kept
//! when its call site is in the module's text; a free when its pointer is tracked or its
//! call site is in the module's text.
//!
//! Every allocation and free on the host runs these programs, and where the kernel
//! interprets BPF (Debian's s390x kernels) each instruction counts. So the tracepoint
//! programs decide with the fewest loads first (userspace leaves the text range empty
//! unless `--all-allocations`, so there is no separate switch to read), call no helper
//! before the decision, and leave the rest to a function of its own: its registers and
//! stack are not set up on the path that returns early (the x86_64 JIT saves the callee-
//! saved registers a function uses at its entry, whichever path it then takes).

use core::ffi::c_void;

use aya_ebpf::{
    helpers::bpf_get_current_pid_tgid,
    macros::{kprobe, kretprobe, raw_tracepoint},
    programs::{ProbeContext, RawTracePointContext, RetProbeContext},
    EbpfContext,
};
use tracer_common::{allocator, counter, flags, kind, AllocRecord, FreeRecord, PendingAlloc};

use crate::{
    maps::{
        config, count, hint_mark, in_text, maybe_tracked, wake_flags, EVENTS, PENDING_ALLOCS,
        TRACKED,
    },
    record::{fill_header, now, pid_tgid},
    stacks,
};

/// `ZERO_SIZE_PTR` and NULL are not allocations.
const SMALLEST_PTR: u64 = 16;

/// Whether `addr` is in the traced module's text (an empty range without
/// `--all-allocations`).
#[inline(always)]
fn from_module(addr: u64) -> bool {
    in_text(config(), addr)
}

#[inline(always)]
fn send_alloc<C: EbpfContext + aya_ebpf::programs::tracing::StackIdContext>(
    ctx: &C,
    ptr: u64,
    bytes: u64,
    call_site: u64,
    which: u8,
) {
    // The hint first: a free that finds it clear skips the TRACKED lookup.
    hint_mark(ptr);
    let _ = TRACKED.insert(ptr, 1, 0);
    let mut fl = 0;
    let stack_id = match stacks::take(ctx) {
        Some(id) => {
            fl |= flags::STACK_VALID;
            id
        }
        None => -1,
    };
    let Some(mut entry) = EVENTS.reserve::<AllocRecord>(0) else {
        count(counter::RINGBUF_FULL);
        return;
    };
    let rec = entry.as_mut_ptr();
    // SAFETY: reserved ring-buffer memory of the right size; every field is written.
    unsafe {
        fill_header(&mut (*rec).header, kind::ALLOC, fl, now(), pid_tgid());
        (*rec).ptr = ptr;
        (*rec).bytes_req = bytes;
        (*rec).call_site = call_site;
        (*rec).allocator = which;
        (*rec)._pad = [0; 3];
        (*rec).stack_id = stack_id;
    }
    entry.submit(wake_flags());
}

#[inline(always)]
fn send_free(ptr: u64, call_site: u64, which: u8) {
    let Some(mut entry) = EVENTS.reserve::<FreeRecord>(0) else {
        count(counter::RINGBUF_FULL);
        return;
    };
    let rec = entry.as_mut_ptr();
    // SAFETY: as in send_alloc.
    unsafe {
        fill_header(&mut (*rec).header, kind::FREE, 0, now(), pid_tgid());
        (*rec).ptr = ptr;
        (*rec).call_site = call_site;
        (*rec).allocator = which;
        (*rec)._pad = [0; 7];
    }
    entry.submit(wake_flags());
}

#[inline(always)]
fn on_alloc_tp(ctx: &RawTracePointContext, which: u8, with_bytes: bool) -> u32 {
    let call_site: u64 = ctx.arg(0);
    if from_module(call_site) {
        alloc_from_module(ctx.as_ptr(), call_site, which, with_bytes);
    }
    0
}

/// An allocation from the module's text: tracked and sent.
#[inline(never)]
fn alloc_from_module(ctx: *mut c_void, call_site: u64, which: u8, with_bytes: bool) {
    let ctx = RawTracePointContext::new(ctx);
    let ptr: u64 = ctx.arg(1);
    if ptr < SMALLEST_PTR {
        return;
    }
    // kmem_cache_alloc's third argument is the cache (6.1+) or bytes_req (older): only
    // kmalloc's is a size on every version.
    let bytes = if with_bytes { ctx.arg(2) } else { 0 };
    send_alloc(&ctx, ptr, bytes, call_site, which);
}

/// Whether `ptr` is in TRACKED. Most frees on a host are of pointers the module never
/// had: the hint answers for them without the hash lookup.
#[inline(always)]
fn is_tracked(ptr: u64) -> bool {
    // SAFETY: only the presence is used.
    maybe_tracked(ptr) && unsafe { TRACKED.get(ptr) }.is_some()
}

/// A free is looked at further only when it is from the module's text or its pointer may
/// be tracked: with nothing tracked yet, a free from elsewhere costs the text test and
/// one load. The context, not the arguments, goes to the rest: the pointer is loaded only
/// when the test needs it, and the context stays where it arrived (the first register).
/// As an integer, so that the compiler does not turn it back into the loaded arguments.
#[inline(always)]
fn on_free_tp(ctx: &RawTracePointContext, which: u8) -> u32 {
    let call_site: u64 = ctx.arg(0);
    if from_module(call_site) || maybe_tracked(ctx.arg(1)) {
        free_tp_checked(ctx.as_ptr() as usize, which);
    }
    0
}

#[inline(never)]
fn free_tp_checked(ctx: usize, which: u8) {
    let ctx = RawTracePointContext::new(ctx as *mut c_void);
    free_checked(ctx.arg(1), ctx.arg(0), which);
}

/// A free from the module's text, or of a pointer that may be tracked: sent when it is
/// either. The text test again rather than its answer as an argument: that way the
/// compiler keeps the early return's tests short-circuited.
#[inline(always)]
fn free_checked(ptr: u64, call_site: u64, which: u8) {
    if ptr < SMALLEST_PTR {
        return;
    }
    // The delete says whether the pointer was tracked and forgets it, in one helper call.
    let tracked = maybe_tracked(ptr) && TRACKED.remove(ptr).is_ok();
    if tracked || from_module(call_site) {
        send_free(ptr, call_site, which);
    }
}

/// Attached to `kmalloc` (and `kmalloc_node` where it exists).
#[raw_tracepoint(tracepoint = "kmalloc")]
pub fn kmalloc(ctx: RawTracePointContext) -> u32 {
    on_alloc_tp(&ctx, allocator::KMALLOC, true)
}

/// Attached to `kmem_cache_alloc` (and `kmem_cache_alloc_node` where it exists).
#[raw_tracepoint(tracepoint = "kmem_cache_alloc")]
pub fn kmem_cache_alloc(ctx: RawTracePointContext) -> u32 {
    on_alloc_tp(&ctx, allocator::KMEM_CACHE, false)
}

#[raw_tracepoint(tracepoint = "kfree")]
pub fn kfree(ctx: RawTracePointContext) -> u32 {
    on_free_tp(&ctx, allocator::KMALLOC)
}

#[raw_tracepoint(tracepoint = "kmem_cache_free")]
pub fn kmem_cache_free(ctx: RawTracePointContext) -> u32 {
    on_free_tp(&ctx, allocator::KMEM_CACHE)
}

/// The return address at a function's first instruction: where it was called from.
#[inline(always)]
fn return_address(ctx: &ProbeContext) -> u64 {
    let regs = ctx.as_ptr() as *const u8;
    #[cfg(bpf_target_arch = "s390x")]
    {
        // struct user_pt_regs { args[1]; psw (16); gprs[16] }: r14 holds the return address.
        // SAFETY: kprobe programs may load from their pt_regs context.
        unsafe { core::ptr::read_volatile(regs.add(0x18 + 14 * 8) as *const u64) }
    }
    #[cfg(bpf_target_arch = "x86_64")]
    {
        // struct pt_regs: sp is the 20th word; the return address sits on top of the stack.
        // SAFETY: as above; the stack is read with bpf_probe_read_kernel.
        let sp = unsafe { core::ptr::read_volatile(regs.add(19 * 8) as *const u64) };
        unsafe { aya_ebpf::helpers::bpf_probe_read_kernel(sp as *const u64) }.unwrap_or(0)
    }
    #[cfg(not(any(bpf_target_arch = "s390x", bpf_target_arch = "x86_64")))]
    {
        let _ = regs;
        0
    }
}

/// Entry of the kernel's kvmalloc function (`__kvmalloc_node_noprof`, `__kvmalloc_node` or
/// `kvmalloc_node`, whichever the kernel has).
#[kprobe]
pub fn kvmalloc_enter(ctx: ProbeContext) -> u32 {
    let caller = return_address(&ctx);
    if !from_module(caller) {
        return 0;
    }
    let bytes = ctx.arg::<u64>(0).unwrap_or(0);
    let _ = PENDING_ALLOCS.insert(
        bpf_get_current_pid_tgid(),
        PendingAlloc { caller, bytes },
        0,
    );
    0
}

/// The instruction pointer of a return probe: the kernel sets it to the real return
/// address (the caller) before the handlers run.
#[inline(always)]
fn return_ip(ctx: &RetProbeContext) -> u64 {
    let regs = ctx.as_ptr() as *const u8;
    #[cfg(bpf_target_arch = "s390x")]
    {
        // struct user_pt_regs { args[1]; psw { mask, addr }; ... }
        // SAFETY: kretprobe programs may load from their pt_regs context.
        unsafe { core::ptr::read_volatile(regs.add(0x10) as *const u64) }
    }
    #[cfg(bpf_target_arch = "x86_64")]
    {
        // struct pt_regs: ip is the 17th word.
        // SAFETY: as above.
        unsafe { core::ptr::read_volatile(regs.add(16 * 8) as *const u64) }
    }
    #[cfg(not(any(bpf_target_arch = "s390x", bpf_target_arch = "x86_64")))]
    {
        let _ = regs;
        0
    }
}

#[kretprobe]
pub fn kvmalloc_leave(ctx: RetProbeContext) -> u32 {
    let key = bpf_get_current_pid_tgid();
    let ptr: u64 = ctx.ret();
    // SAFETY: copied out at once.
    match (unsafe { PENDING_ALLOCS.get(key) }).copied() {
        Some(p) => {
            let _ = PENDING_ALLOCS.remove(key);
            if ptr >= SMALLEST_PTR {
                send_alloc(&ctx, ptr, p.bytes, p.caller, allocator::KVMALLOC);
            }
        }
        // The entry did not see the driver as the caller (its return address already
        // replaced by this probe's trampoline): the return's own instruction pointer is the
        // caller. The size is unknown then.
        None => {
            let caller = return_ip(&ctx);
            if ptr >= SMALLEST_PTR && from_module(caller) {
                send_alloc(&ctx, ptr, 0, caller, allocator::KVMALLOC);
            }
        }
    }
    0
}

/// `vfree`: vmalloc has no tracepoint with a caller.
#[kprobe]
pub fn vfree_enter(ctx: ProbeContext) -> u32 {
    let ptr = ctx.arg::<u64>(0).unwrap_or(0);
    let caller = return_address(&ctx);
    if from_module(caller) || maybe_tracked(ptr) {
        free_checked(ptr, caller, allocator::VMALLOC);
    }
    0
}

/// `kvfree` of a pointer that is not tracked, from the module: an unknown free that the
/// kfree tracepoint (whose call site is inside kvfree) would not attribute. Tracked pointers
/// are reported by the kfree tracepoint or vfree probe that kvfree ends in.
#[kprobe]
pub fn kvfree_enter(ctx: ProbeContext) -> u32 {
    let ptr = ctx.arg::<u64>(0).unwrap_or(0);
    if ptr < SMALLEST_PTR || is_tracked(ptr) {
        return 0;
    }
    let caller = return_address(&ctx);
    if from_module(caller) {
        send_free(ptr, caller, allocator::KVMALLOC);
    }
    0
}

/// Does nothing: attached by `aptrace live --noop-floor` to the same allocator tracepoints as
/// `--all-allocations`, it is the floor any BPF program there pays (issue 7, figure (c)).
#[raw_tracepoint(tracepoint = "kmalloc")]
pub fn noop_alloc(_ctx: RawTracePointContext) -> u32 {
    0
}
