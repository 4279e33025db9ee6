//! `lockdep_assert_held` without lockdep: the mutex owner word of `matrix_dev->mdevs_lock`
//! compared with the current task. `matrix_dev` is a pointer variable: its address comes
//! from userspace, it is dereferenced here. The owner's offset and mask come from vmlinux
//! BTF or overrides (PREEMPT_RT: the rt_mutex owner, mask `!1`). [`read`] does the same
//! for the other declared locks a function can reach, along the path userspace configured.

use aya_ebpf::helpers::{bpf_get_current_task, bpf_probe_read_kernel};
use tracer_common::{lock_from, lock_state, FuncEntry, GlobalConfig, LockRead, MAX_HOPS};

/// Whether entries read the other declared locks at all: set by the loader (1 by default, 0
/// for `--lock-reads off`, or where a kernel's verifier refused the entry programs with the
/// reads). In a frozen read-only map, so the verifier knows its value and drops the reads'
/// code when 0: older verifiers (6.1) give up on the four reads' paths.
#[unsafe(no_mangle)]
static LOCK_READS: u8 = 1;

#[inline(always)]
pub fn reads_enabled() -> bool {
    // SAFETY: a plain read of a static; volatile so the compiler keeps the load for the loader
    // to set.
    unsafe { core::ptr::read_volatile(&LOCK_READS) != 0 }
}

/// (one of [`lock_state`], raw owner word, the `matrix_dev` pointer read or 0).
#[inline(always)]
pub fn check(cfg: &GlobalConfig) -> (u8, u64, u64) {
    if cfg.matrix_dev_addr == 0 {
        return (lock_state::NOT_CHECKED, 0, 0);
    }
    // SAFETY: bpf_probe_read_kernel copes with any address.
    let Ok(matrix_dev) = (unsafe { bpf_probe_read_kernel(cfg.matrix_dev_addr as *const u64) })
    else {
        return (lock_state::NOT_CHECKED, 0, 0);
    };
    if matrix_dev == 0 {
        return (lock_state::NOT_CHECKED, 0, 0);
    }
    let owner_at = matrix_dev.wrapping_add(cfg.lock_owner_offset);
    // SAFETY: as above.
    let Ok(owner) = (unsafe { bpf_probe_read_kernel(owner_at as *const u64) }) else {
        return (lock_state::NOT_CHECKED, 0, matrix_dev);
    };
    let task = owner & cfg.owner_mask;
    if task == 0 {
        return (lock_state::FREE, owner, matrix_dev);
    }
    // SAFETY: a helper without arguments.
    let current = unsafe { bpf_get_current_task() };
    if task == current {
        (lock_state::HELD_BY_CURRENT, owner, matrix_dev)
    } else {
        (lock_state::HELD_BY_OTHER, owner, matrix_dev)
    }
}

/// One pointer hop: `*(base + off)`, None at a failed read or a NULL.
#[inline(always)]
fn hop(base: u64, off: u32) -> Option<u64> {
    // SAFETY: bpf_probe_read_kernel copes with any address.
    match unsafe { bpf_probe_read_kernel(base.wrapping_add(off as u64) as *const u64) } {
        Ok(v) if v != 0 => Some(v),
        _ => None,
    }
}

/// Reads the owner word of one declared lock the slot can reach into read `I` of the entry
/// record at `rec`, whose lock fields the caller has zeroed (NOT_CHECKED: a read that
/// fails, or stops at a NULL, writes nothing). `args` are the entry's argument registers,
/// `holder` the pointer [`check`] read (0: none). False when the read starts at a NULL
/// argument 0: userspace puts those reads last ([`tracer_common::SlotConfig::locks`]), so
/// the slot's remaining reads would stop there too. Written for the interpreter (no JIT on
/// Debian's s390x kernels): the two usual starts cost one compare each, the hops are
/// unrolled and stop at the path's length, and the record is written in place.
///
/// # Safety
/// `rec` points at an entry record reserved in the ring buffer.
#[inline(always)]
pub unsafe fn read_into<const I: usize>(
    rec: *mut FuncEntry,
    r: &LockRead,
    args: &[u64; 4],
    holder: u64,
) -> bool {
    // `from` and `arg` as one word: the holder pointer and the first argument (the driver's
    // object) are decided by one compare each.
    const _: () = assert!(
        core::mem::offset_of!(LockRead, arg) == core::mem::offset_of!(LockRead, from) + 1
            && core::mem::offset_of!(LockRead, from) % 2 == 0
    );
    const FROM_HOLDER: u16 = u16::from_ne_bytes([lock_from::HOLDER, 0]);
    const FROM_ARG_0: u16 = u16::from_ne_bytes([lock_from::ARG, 0]);
    // SAFETY: two adjacent bytes of `r`, aligned (asserted above).
    let start = unsafe { core::ptr::read_volatile(core::ptr::addr_of!(r.from) as *const u16) };
    let mut base = if start == FROM_HOLDER {
        holder
    } else if start == FROM_ARG_0 {
        if args[0] == 0 {
            return false;
        }
        args[0]
    } else {
        match r.from {
            lock_from::HOLDER => holder,
            lock_from::ARG => match r.arg {
                0 => args[0],
                1 => args[1],
                2 => args[2],
                _ => args[3],
            },
            lock_from::GLOBAL => r.start,
            _ => 0,
        }
    };
    if base == 0 {
        return true;
    }
    let count = r.path.count;
    const _: () = assert!(MAX_HOPS == 3);
    if count != 0 {
        let Some(b) = hop(base, r.path.hops[0]) else {
            return true;
        };
        base = b;
        if count > 1 {
            let Some(b) = hop(base, r.path.hops[1]) else {
                return true;
            };
            base = b;
            if count > 2 {
                let Some(b) = hop(base, r.path.hops[2]) else {
                    return true;
                };
                base = b;
            }
        }
    }
    let owner_at = base.wrapping_add(r.owner_offset as u64);
    // SAFETY: as in `hop`.
    let Ok(owner) = (unsafe { bpf_probe_read_kernel(owner_at as *const u64) }) else {
        return true;
    };
    let task = owner & r.owner_mask;
    // SAFETY: the caller's promise; I < MAX_LOCK_READS, checked at compile time. The owner
    // word of a free lock says nothing: it stays 0.
    unsafe {
        (*rec).lock_ids[I] = r.id;
        if task == 0 {
            (*rec).lock_states[I] = lock_state::FREE;
            return true;
        }
        (*rec).lock_owners[I] = owner;
        // (bpf_get_current_task: a helper without arguments)
        (*rec).lock_states[I] = if task == bpf_get_current_task() {
            lock_state::HELD_BY_CURRENT
        } else {
            lock_state::HELD_BY_OTHER
        };
    }
    true
}
