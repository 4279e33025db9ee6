//! The maps shared by every probe family. Userspace sizes `EVENTS` before load
//! (`--ring-buffer-size`) and writes `APTRACE_CONFIG` (the global variable) before attach.

use aya_ebpf::{
    bindings::{BPF_RB_AVAIL_DATA, BPF_RB_FORCE_WAKEUP, BPF_RB_NO_WAKEUP},
    macros::map,
    maps::{HashMap, LruHashMap, PerCpuArray, RingBuf},
};
use tracer_common::{
    counter, tracked_bucket, GlobalConfig, PendingAlloc, PendingCall, ProbeConfig, SlotConfig,
};

/// The one ring buffer every record goes through. The size here is a default only.
#[map]
pub static EVENTS: RingBuf = RingBuf::with_byte_size(256 * 1024, 0);

/// What userspace tells the probes: written whole by the agent (it is the `.bss` map's one
/// value), read here with plain loads. Exported, so the compiler cannot assume it stays zero.
#[unsafe(no_mangle)]
static mut APTRACE_CONFIG: ProbeConfig = ProbeConfig::OFF;

/// (thread id << 32 | slot) → what the entry saw, for the return. A plain (preallocated)
/// hash: cheaper per call than an LRU, and a key left behind by a missed return is found
/// and counted by the thread's next call of that function, which overwrites it.
#[map]
pub static PENDING_CALLS: HashMap<u64, PendingCall> = HashMap::with_max_entries(8192, 0);

/// Thread id → kvmalloc call in flight from the module.
#[map]
pub static PENDING_ALLOCS: LruHashMap<u64, PendingAlloc> = LruHashMap::with_max_entries(4096, 0);

/// Pointers handed to the module by the allocator and not yet freed.
#[map]
pub static TRACKED: LruHashMap<u64, u8> = LruHashMap::with_max_entries(65536, 0);

/// Marks `ptr`'s bucket of the tracked hint (a tracked pointer may hash there), and that
/// something is tracked.
#[inline(always)]
pub fn hint_mark(ptr: u64) {
    // SAFETY: plain stores into the global, in bounds by construction; every writer stores
    // the same 1, so racing CPUs cannot undo each other.
    unsafe {
        let hint = core::ptr::addr_of_mut!(APTRACE_CONFIG.tracked_hint);
        if let Some(b) = (*hint).get_mut(tracked_bucket(ptr)) {
            *b = 1;
        }
        *core::ptr::addr_of_mut!(APTRACE_CONFIG.tracked_any) = 1;
    }
}

/// Whether `ptr` may be tracked: something is, and some tracked pointer may hash to
/// `ptr`'s bucket. False only when `ptr` certainly is not.
#[inline(always)]
pub fn maybe_tracked(ptr: u64) -> bool {
    // SAFETY: as in `config`.
    unsafe {
        *core::ptr::addr_of!(APTRACE_CONFIG.tracked_any) != 0
            && (*core::ptr::addr_of!(APTRACE_CONFIG.tracked_hint))
                .get(tracked_bucket(ptr))
                .is_none_or(|b| *b != 0)
    }
}

/// Per-CPU counters of lost events, indexed by [`tracer_common::counter`].
#[map]
pub static COUNTERS: PerCpuArray<u64> = PerCpuArray::with_max_entries(counter::COUNT, 0);

/// Bytes waiting in the ring from which a record forces a wakeup: an eighth of the ring,
/// set by the loader (a frozen read-only global, so the verifier knows it). The ring's size
/// asked of the kernel per record was one more helper call per record.
#[unsafe(no_mangle)]
static WAKE_AT: u64 = 256 * 1024 / 8;

/// The flags for the next record: no wakeup while the ring is less than an eighth full
/// (the agent drains it on its own timer), a forced one beyond. A wakeup per record costs
/// more than the record itself on a busy host.
#[inline(always)]
pub fn wake_flags() -> u64 {
    let avail = EVENTS.query(BPF_RB_AVAIL_DATA as u64);
    // SAFETY: a plain read of a static; volatile so the compiler keeps the load for the
    // loader to set.
    if avail >= unsafe { core::ptr::read_volatile(&WAKE_AT) } {
        BPF_RB_FORCE_WAKEUP as u64
    } else {
        BPF_RB_NO_WAKEUP as u64
    }
}

#[inline(always)]
pub fn config() -> &'static GlobalConfig {
    // SAFETY: the global lives as long as the program; userspace may rewrite it at any time,
    // which at worst gives one hit a mix of old and new settings.
    unsafe { &(*core::ptr::addr_of!(APTRACE_CONFIG)).global }
}

/// Slot `n` (a constant in each slot's programs): its function address and what to read.
#[inline(always)]
pub fn slot(n: u32) -> Option<&'static SlotConfig> {
    // SAFETY: as in `config`; `get` bounds the index.
    unsafe { (*core::ptr::addr_of!(APTRACE_CONFIG)).slots.get(n as usize) }
}

#[inline(always)]
pub fn count(slot: u32) {
    if let Some(p) = COUNTERS.get_ptr_mut(slot) {
        // SAFETY: a per-CPU slot: no other program touches it concurrently on this CPU.
        unsafe { *p += 1 };
    }
}

/// Whether `addr` is in the traced module's text. The end first: modules loaded after it
/// lie above it (the kernel places modules upwards), and for them the test stops there.
#[inline(always)]
pub fn in_text(cfg: &GlobalConfig, addr: u64) -> bool {
    addr < cfg.text_end && addr >= cfg.text_start
}
