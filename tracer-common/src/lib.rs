//! The ABI between aptrace's eBPF probes and its userspace agent.
//!
//! Every record that crosses the ring buffer starts with [`RecordHeader`]. All records are
//! `#[repr(C)]`, contain no implicit padding (checked by the `const` size asserts below) and
//! use explicit integer flags instead of `bool`. The kernel writes them in its native byte
//! order; userspace decodes them with an explicit byte order chosen from the source
//! architecture, so an s390x (big-endian) capture decodes on a little-endian laptop.
#![no_std]

/// Record kinds, the first field of every record.
pub mod kind {
    /// A profiled function was entered ([`super::FuncEntry`]).
    pub const FUNC_ENTRY: u16 = 1;
    /// A profiled function returned ([`super::FuncExit`]).
    pub const FUNC_EXIT: u16 = 2;
    /// The allocator handed out memory from the traced module ([`super::AllocRecord`]).
    pub const ALLOC: u16 = 3;
    /// Memory was freed ([`super::FreeRecord`]).
    pub const FREE: u16 = 4;
    /// The name (`dev_name()`) of an mdev's device, read on entry ([`super::NameRecord`]).
    pub const MDEV_NAME: u16 = 5;
}

/// How the probe saw `matrix_dev->mdevs_lock` on entry.
pub mod lock_state {
    /// The probe did not read the lock (no address configured, or the read failed).
    pub const NOT_CHECKED: u8 = 0;
    /// The mutex had no owner.
    pub const FREE: u8 = 1;
    /// The current task owns the mutex.
    pub const HELD_BY_CURRENT: u8 = 2;
    /// Another task owns the mutex.
    pub const HELD_BY_OTHER: u8 = 3;
}

/// Bits of [`RecordHeader::flags`].
pub mod flags {
    /// `FuncEntry::field` / `FuncExit::field` holds a value read from kernel memory.
    pub const FIELD_VALID: u16 = 1 << 0;
    /// The kernel stack id is valid.
    pub const STACK_VALID: u16 = 1 << 1;
    /// The function is a compiler clone (`.isra.0`, `.constprop.0`): arguments untrusted.
    pub const ARGS_UNTRUSTED: u16 = 1 << 2;
    /// The exit record's entry timestamp was found (duration is valid).
    pub const DURATION_VALID: u16 = 1 << 3;
}

/// Which allocator an [`AllocRecord`] / [`FreeRecord`] came from.
pub mod allocator {
    pub const KMALLOC: u8 = 1;
    pub const KMEM_CACHE: u8 = 2;
    pub const KVMALLOC: u8 = 3;
    pub const VMALLOC: u8 = 4;
}

/// Number of register arguments captured on entry.
pub const MAX_ARGS: usize = 4;
/// Length of the kernel's task comm.
pub const COMM_LEN: usize = 16;

/// The fixed header on every record. 40 bytes.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RecordHeader {
    /// One of [`kind`].
    pub kind: u16,
    /// Bits of [`flags`].
    pub flags: u16,
    /// CPU the probe ran on.
    pub cpu: u32,
    /// `bpf_ktime_get_boot_ns()`, so it survives suspend and matches the recording's offset.
    pub ts_ns: u64,
    /// Thread group id (the process id userspace sees).
    pub tgid: u32,
    /// Thread id.
    pub pid: u32,
    /// `bpf_get_current_comm()`, NUL padded.
    pub comm: [u8; COMM_LEN],
}

/// Entry of a profiled function. 144 bytes; records of agents before the lock reads end
/// at `lock_owners` (104 bytes), and decode as reading none.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FuncEntry {
    pub header: RecordHeader,
    /// Address of the probed function: the one userspace bound the probe's slot to in
    /// [`ProbeConfig::slots`] (not `bpf_get_func_ip`, missing before 5.15).
    pub func_ip: u64,
    /// The first [`MAX_ARGS`] argument registers.
    pub args: [u64; MAX_ARGS],
    /// The profile's field read at entry (e.g. `matrix_mdev->mig_data`), if FIELD_VALID.
    pub field: u64,
    /// Raw owner word of `matrix_dev->mdevs_lock` (0 when not checked).
    pub lock_owner: u64,
    /// One of [`lock_state`].
    pub lock_state: u8,
    pub _pad: [u8; 3],
    /// Kernel stack id in the stack map, if STACK_VALID.
    pub stack_id: i32,
    /// Raw owner words of the slot's [`SlotConfig::locks`], in their order (0 when not read).
    pub lock_owners: [u64; MAX_LOCK_READS],
    /// The profile's index of each lock read ([`LockRead::id`]).
    pub lock_ids: [u8; MAX_LOCK_READS],
    /// One of [`lock_state`] per read: NOT_CHECKED for a read that failed or is unused.
    pub lock_states: [u8; MAX_LOCK_READS],
}

/// Most declared locks besides `mdevs_lock` one entry reads (one [`LockRead`] each).
pub const MAX_LOCK_READS: usize = 4;

/// Return of a profiled function. 80 bytes.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FuncExit {
    pub header: RecordHeader,
    pub func_ip: u64,
    /// The raw return register.
    pub ret: u64,
    /// First argument as captured at entry (the mdev), 0 if the entry was missed.
    pub arg0: u64,
    /// Time spent in the function, if DURATION_VALID.
    pub duration_ns: u64,
    /// The profile's field read at return, if FIELD_VALID.
    pub field: u64,
}

/// An allocation whose call site lies in the traced module. 72 bytes.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct AllocRecord {
    pub header: RecordHeader,
    pub ptr: u64,
    pub bytes_req: u64,
    pub call_site: u64,
    /// One of [`allocator`].
    pub allocator: u8,
    pub _pad: [u8; 3],
    pub stack_id: i32,
}

/// A free of a tracked pointer or from the traced module. 64 bytes.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FreeRecord {
    pub header: RecordHeader,
    pub ptr: u64,
    pub call_site: u64,
    pub allocator: u8,
    pub _pad: [u8; 7],
}

/// What the probes of one function do, in the function's [`SlotConfig`] of
/// [`ProbeConfig::slots`]. Set by userspace from the
/// profile, so a profile file can add a function without rebuilding the eBPF object.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct FuncConfig {
    /// Byte offset of the field from `args[field_arg]`: the argument itself at entry, the
    /// value it had at entry (kept in [`PendingCall::field_base`]) at return. Read only
    /// when `read_field_at` is non-zero.
    pub field_offset: u32,
    /// Which argument points at the struct holding the field.
    pub field_arg: u8,
    /// Bits of [`read_at`]: read the field at entry, at return, or neither (0).
    pub read_field_at: u8,
    /// Size of the field in bytes (4 or 8).
    pub field_size: u8,
    /// One of [`check_lock`]: whether to read mdevs_lock on entry, and when to take a stack.
    pub check_lock: u8,
    /// Non-zero: take a kernel stack on entry.
    pub stack_on_entry: u8,
    /// Bits of [`flags`] copied into every record of this function (ARGS_UNTRUSTED).
    pub extra_flags: u8,
    /// Non-zero: on entry, read `dev_name(((struct vfio_device *)args[0])->dev)` (the
    /// device pointer is the vfio_device's first member, the name the kobject's first) and
    /// send it as a [`NameRecord`].
    pub read_name: u8,
    /// How many of the slot's [`SlotConfig::locks`] to read on entry (0: none).
    pub lock_reads: u8,
    pub _pad: [u8; 4],
}

/// Length of the name buffer of a [`NameRecord`] (a UUID is 36 bytes).
pub const NAME_LEN: usize = 48;

/// The name of an mdev's device. 96 bytes.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct NameRecord {
    pub header: RecordHeader,
    /// The object (`args[0]` of the function: the vfio device / `ap_matrix_mdev`).
    pub obj: u64,
    /// NUL-terminated name.
    pub name: [u8; NAME_LEN],
}

/// Number of generic function probe slots (a kprobe `enter_NN` and a kretprobe `leave_NN`
/// each). Userspace binds slot N to a function by attaching its two programs there and
/// writing the function's address into `ProbeConfig::slots[N]`.
pub const FUNC_SLOTS: u32 = 32;

/// Values of [`FuncConfig::check_lock`]. The probe never judges; it only takes a stack
/// when the observation is one the contract forbids, so the finding can show it.
pub mod check_lock {
    pub const OFF: u8 = 0;
    /// Read the lock, never take a stack for it.
    pub const READ: u8 = 1;
    /// The function takes the lock: stack when this task already holds it.
    pub const STACK_IF_HELD: u8 = 2;
    /// The function asserts the lock: stack when this task does not hold it.
    pub const STACK_IF_NOT_HELD: u8 = 3;
}

/// Bits of [`FuncConfig::read_field_at`].
pub mod read_at {
    pub const ENTRY: u8 = 1;
    pub const EXIT: u8 = 2;
}

/// Global settings written by userspace before attach.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct GlobalConfig {
    /// Address of the `matrix_dev` pointer variable (0: lock checks off).
    pub matrix_dev_addr: u64,
    /// Offset of the mutex owner word from `matrix_dev`: mdevs_lock offset + owner offset.
    pub lock_owner_offset: u64,
    /// Mask applied to the owner word before comparing with `current` (`!0x7`, RT `!0x1`).
    pub owner_mask: u64,
    /// Traced module's text range, for `--all-allocations`; empty (0, 0) without it, which
    /// is all the allocator programs test.
    pub text_start: u64,
    pub text_end: u64,
    /// Non-zero when `--all-allocations` is on (the probes go by the text range).
    pub all_allocations: u32,
    /// 1: the owner word is a `task_struct *` once masked. Userspace always sets it; the
    /// probes do not read it yet (they always compare with `current`).
    pub owner_is_task: u32,
}

/// Most pointers a [`PointerPath`] follows: enough for `file → private_data → mig_data →
/// slot` and `vfio_device → dev_set → lock`, few enough for the verifier to unroll.
pub const MAX_HOPS: usize = 3;

/// Pointers to follow from the base before a value is read: `base = *(u64 *)(base +
/// hops[i])` for each of the first `count` hops, stopping (no value) at a failed read or a
/// NULL. Generic: a field read uses it today, a lock's owner word behind pointers can later.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct PointerPath {
    /// Byte offset of each pointer from the base reached so far.
    pub hops: [u32; MAX_HOPS],
    /// How many of `hops` to follow (0: the base itself; most slots).
    pub count: u8,
    pub _pad: [u8; 3],
}

/// Where a [`LockRead`] starts.
pub mod lock_from {
    /// At the address of a global ([`super::LockRead::start`]).
    pub const GLOBAL: u8 = 1;
    /// At an argument's value (`args[arg]`).
    pub const ARG: u8 = 2;
    /// At the pointer the probed lock's check read at this entry (`*matrix_dev_addr`): a
    /// lock behind the same global pointer costs no second read of it.
    pub const HOLDER: u8 = 3;
}

/// The owner word of one declared lock, read on entry: from the start, follow `path`, then
/// read the word at `owner_offset` (the lock's member plus the owner inside the mutex) and
/// compare it, masked, with the current task. A failed read or a NULL on the way is
/// NOT_CHECKED: no edge, no error.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct LockRead {
    /// The global's address, when `from` is [`lock_from::GLOBAL`].
    pub start: u64,
    /// Leaves the owner's task pointer (`!0x7`, PREEMPT_RT `!0x1`).
    pub owner_mask: u64,
    pub path: PointerPath,
    pub owner_offset: u32,
    /// One of [`lock_from`].
    pub from: u8,
    /// The argument the path starts at, when `from` is [`lock_from::ARG`].
    pub arg: u8,
    /// The profile's index of the lock, sent back in [`FuncEntry::lock_ids`].
    pub id: u8,
    pub _pad: u8,
}

/// One function slot: the address of the function its probes are attached to (0: the slot
/// is off), what they read, and the pointers followed before the field read.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct SlotConfig {
    pub addr: u64,
    pub func: FuncConfig,
    /// Followed from `args[func.field_arg]` before the field is read.
    pub path: PointerPath,
    /// The declared locks this function can reach, the first `func.lock_reads` of them.
    /// Those that start at argument 0 come last: the probe ends the reads at the first of
    /// them that finds the argument NULL.
    pub locks: [LockRead; MAX_LOCK_READS],
}

/// Everything userspace tells the probes, held in the object's one global variable
/// (`APTRACE_CONFIG`, in its `.bss` map) and written whole by the agent at each attach and
/// detach. A global is read by direct loads: an array map lookup is a helper call for every
/// probe hit where the kernel interprets BPF (no JIT, as on Debian's s390x kernels).
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ProbeConfig {
    pub global: GlobalConfig,
    pub slots: [SlotConfig; FUNC_SLOTS as usize],
    /// Written by the probes, zero from userspace: byte `tracked_bucket(p)` is set once a
    /// pointer `p` hashing there was tracked, and never cleared (a store of 1 needs no
    /// atomics). A free whose byte is clear cannot be of a tracked pointer, so it costs no
    /// hash lookup; a tracked pointer's byte is always set, so its free is never missed.
    pub tracked_hint: [u8; TRACKED_HINT_BUCKETS],
    /// Written by the probes, zero from userspace: 1 once any pointer was tracked, never
    /// cleared. While it is 0 a free from outside the module's text is decided by one load.
    pub tracked_any: u64,
}

/// Buckets of [`ProbeConfig::tracked_hint`].
pub const TRACKED_HINT_BUCKETS: usize = 1 << 14;

/// The byte of `tracked_hint` for pointer `ptr`: the top bits of a multiplicative hash,
/// where every bit of the pointer counts (slab objects are aligned to their size, so the
/// low bits alone say little). Three BPF instructions: a 64-bit constant, a multiply and
/// a shift, which also bounds the index.
#[inline(always)]
pub fn tracked_bucket(ptr: u64) -> usize {
    (ptr.wrapping_mul(0x9e37_79b9_7f4a_7c15) >> (64 - TRACKED_HINT_BUCKETS.trailing_zeros()))
        as usize
}

impl ProbeConfig {
    /// All zero: every slot off, no lock check, no allocation tracing.
    pub const OFF: ProbeConfig = ProbeConfig {
        global: GlobalConfig {
            matrix_dev_addr: 0,
            lock_owner_offset: 0,
            owner_mask: 0,
            text_start: 0,
            text_end: 0,
            all_allocations: 0,
            owner_is_task: 0,
        },
        slots: [SlotConfig {
            addr: 0,
            func: FuncConfig {
                field_offset: 0,
                field_arg: 0,
                read_field_at: 0,
                field_size: 0,
                check_lock: 0,
                stack_on_entry: 0,
                extra_flags: 0,
                read_name: 0,
                lock_reads: 0,
                _pad: [0; 4],
            },
            path: PointerPath {
                hops: [0; MAX_HOPS],
                count: 0,
                _pad: [0; 3],
            },
            locks: [LockRead {
                start: 0,
                owner_mask: 0,
                path: PointerPath {
                    hops: [0; MAX_HOPS],
                    count: 0,
                    _pad: [0; 3],
                },
                owner_offset: 0,
                from: 0,
                arg: 0,
                id: 0,
                _pad: 0,
            }; MAX_LOCK_READS],
        }; FUNC_SLOTS as usize],
        tracked_hint: [0; TRACKED_HINT_BUCKETS],
        tracked_any: 0,
    };
}

/// Entry-side state of a kvmalloc call, kept until its return.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct PendingAlloc {
    pub caller: u64,
    pub bytes: u64,
}

/// Entry-side state of a profiled call, kept until its return (keyed by task and slot).
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct PendingCall {
    pub ts_ns: u64,
    pub arg0: u64,
    /// The argument the profile reads a field through (`args[field_arg]`).
    pub field_base: u64,
}

/// Kretprobe miss and lost-event counter slots in the per-CPU `COUNTERS` array.
pub mod counter {
    /// Ring buffer reservation failed.
    pub const RINGBUF_FULL: u32 = 0;
    /// A return had no matching entry (the kretprobe's entry was missed).
    pub const EXIT_WITHOUT_ENTRY: u32 = 1;
    /// An entry found the same thread's previous call of the same function still pending:
    /// that call's return never ran (a kretprobe miss, counted on kernels whose link info
    /// lacks the kernel's own `missed`, before 6.7).
    pub const RETURN_MISSED: u32 = 2;
    pub const COUNT: u32 = 3;
}

const _: () = assert!(core::mem::size_of::<RecordHeader>() == 40);
const _: () = assert!(
    core::mem::size_of::<FuncEntry>()
        == 40 + 8 + 32 + 8 + 8 + 4 + 4 + 8 * MAX_LOCK_READS + 2 * MAX_LOCK_READS
);
const _: () = assert!(core::mem::offset_of!(FuncEntry, lock_owners) == 104);
const _: () = assert!(core::mem::size_of::<LockRead>() == 40);
const _: () = assert!(core::mem::size_of::<FuncExit>() == 40 + 40);
const _: () = assert!(core::mem::size_of::<AllocRecord>() == 40 + 24 + 8);
const _: () = assert!(core::mem::size_of::<FreeRecord>() == 40 + 16 + 8);
const _: () = assert!(core::mem::size_of::<FuncConfig>() == 16);
const _: () = assert!(core::mem::size_of::<GlobalConfig>() == 48);
const _: () = assert!(core::mem::size_of::<NameRecord>() == 40 + 8 + NAME_LEN);
const _: () = assert!(core::mem::size_of::<PointerPath>() == 4 * MAX_HOPS + 4);
const _: () = assert!(core::mem::size_of::<SlotConfig>() == 40 + 40 * MAX_LOCK_READS);
const _: () = assert!(
    core::mem::size_of::<ProbeConfig>()
        == 48 + (40 + 40 * MAX_LOCK_READS) * FUNC_SLOTS as usize + TRACKED_HINT_BUCKETS + 8
);
const _: () = assert!(core::mem::size_of::<PendingAlloc>() == 16);
const _: () = assert!(core::mem::size_of::<PendingCall>() == 24);

#[cfg(feature = "user")]
mod pod {
    // SAFETY: all of these are repr(C), made of integers, with no padding (asserted above).
    unsafe impl aya::Pod for super::FuncConfig {}
    unsafe impl aya::Pod for super::GlobalConfig {}
    unsafe impl aya::Pod for super::ProbeConfig {}
    unsafe impl aya::Pod for super::RecordHeader {}
    unsafe impl aya::Pod for super::PendingAlloc {}
    unsafe impl aya::Pod for super::PendingCall {}
}
