//! What a call's entry keeps for its return: the entry's time, argument 0 and the base of
//! the field read at return.
//!
//! A table of cells in a global of its own, indexed by a hash of (thread, slot): reached by
//! plain loads and stores, with no helper call and no lock. A thread claims a free cell with
//! a compare-and-swap of its key and frees it at the return; the thread's previous call
//! still holding it means that call's return was missed. When another thread's call holds
//! the cell, the entry goes to the `PENDING_CALLS` hash map instead, which the return then
//! looks up. The hash map costs two helper calls at entry and two at return, each a bucket
//! lock and a free-list operation in the kernel: on an interpreted kernel (Debian's s390x)
//! that was a tenth of a traced call.

use core::intrinsics::{atomic_cxchg, AtomicOrdering};
use core::sync::atomic::{compiler_fence, Ordering};

use aya_ebpf::bindings::BPF_NOEXIST;
use tracer_common::{counter, PendingCall};

use crate::maps::{count, PENDING_CALLS};

/// Cells in the table: calls in flight at once are few, so collisions are rare.
const CELLS: usize = 4096;

/// A cell: `key` 0 is free, otherwise the key of the call it holds.
#[repr(C)]
#[derive(Clone, Copy)]
struct Cell {
    key: u64,
    call: PendingCall,
}

const FREE: Cell = Cell {
    key: 0,
    call: PendingCall {
        ts_ns: 0,
        arg0: 0,
        field_base: 0,
    },
};

/// Its own `.bss` section, so its own map: the agent rewrites `APTRACE_CONFIG` whole, and
/// must not wipe the calls in flight.
#[unsafe(link_section = ".bss.pending")]
#[unsafe(no_mangle)]
static mut APTRACE_PENDING: [Cell; CELLS] = [FREE; CELLS];

/// Never 0 (a free cell): bit 31 is always set, the slot is below it.
#[inline(always)]
fn key(pid_tgid: u64, slot: u32) -> u64 {
    (pid_tgid << 32) | 0x8000_0000 | slot as u64
}

/// The cell of (thread, slot): the thread id's multiplicative hash, its top 12 bits, with
/// the slot mixed in (slots are below 32, so the index stays below `CELLS`).
#[inline(always)]
fn cell(pid_tgid: u64, slot: u32) -> *mut Cell {
    const _: () = assert!(CELLS == 1 << 12 && tracer_common::FUNC_SLOTS <= 32);
    let tid = pid_tgid as u32;
    let i = ((tid.wrapping_mul(0x9e37_79b1) >> 20) ^ slot) as usize & (CELLS - 1);
    // SAFETY: `i` is below CELLS; only the address is taken.
    unsafe { core::ptr::addr_of_mut!(APTRACE_PENDING[i]) }
}

/// Keeps `call` for its return.
#[inline(always)]
pub fn enter(pid_tgid: u64, slot: u32, call: PendingCall) {
    let key = key(pid_tgid, slot);
    let c = cell(pid_tgid, slot);
    // SAFETY: `c` points into the global table and the key word is aligned. The BPF
    // instruction (BPF_CMPXCHG) is atomic in the kernel; Rust's BPF targets offer no
    // compare-and-swap through `AtomicU64`, so the intrinsic.
    let (prev, _) = unsafe {
        atomic_cxchg::<u64, { AtomicOrdering::SeqCst }, { AtomicOrdering::SeqCst }>(
            core::ptr::addr_of_mut!((*c).key),
            0,
            key,
        )
    };
    if prev != 0 {
        if prev != key {
            // Another thread's call holds the cell.
            to_map(key, call);
            return;
        }
        count(counter::RETURN_MISSED);
    }
    // SAFETY: the cell is this thread's until its return frees it.
    unsafe { (*c).call = call };
}

/// BPF_NOEXIST fails when this thread's previous call is still pending: its return was
/// missed. Overwriting then succeeds; if that fails too the map is full (not a miss).
#[inline(always)]
fn to_map(key: u64, call: PendingCall) {
    if PENDING_CALLS.insert(key, call, BPF_NOEXIST as u64).is_err()
        && PENDING_CALLS.insert(key, call, 0).is_ok()
    {
        count(counter::RETURN_MISSED);
    }
}

/// What the entry of this thread's call of `slot` kept, which the call gives up; None when
/// the entry was not seen.
#[inline(always)]
pub fn leave(pid_tgid: u64, slot: u32) -> Option<PendingCall> {
    let key = key(pid_tgid, slot);
    let c = cell(pid_tgid, slot);
    // SAFETY: as in `enter`; only this thread writes a cell holding its key.
    unsafe {
        let at = core::ptr::addr_of_mut!((*c).key);
        if core::ptr::read_volatile(at) == key {
            let call = (*c).call;
            // The call is read before the cell is freed for another thread.
            compiler_fence(Ordering::SeqCst);
            core::ptr::write_volatile(at, 0);
            return Some(call);
        }
    }
    // SAFETY: the value is copied at once, before the remove.
    let call = unsafe { PENDING_CALLS.get(key) }.copied()?;
    let _ = PENDING_CALLS.remove(key);
    Some(call)
}
