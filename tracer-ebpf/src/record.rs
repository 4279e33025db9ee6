//! Filling the common record header, in place in reserved ring-buffer memory: a record built
//! on the stack and copied by `bpf_ringbuf_output` costs every field twice, and without a
//! JIT (Debian's s390x kernels) every instruction is interpreted.

use core::ffi::c_void;

use aya_ebpf::helpers::{
    bpf_get_current_pid_tgid, bpf_get_smp_processor_id, bpf_ktime_get_boot_ns, generated,
};
use tracer_common::{RecordHeader, COMM_LEN};

#[inline(always)]
pub fn now() -> u64 {
    // SAFETY: a helper without arguments.
    unsafe { bpf_ktime_get_boot_ns() }
}

/// Writes every field of the header at `h` (reserved, uninitialised memory), the task's
/// name straight from the helper into the record.
///
/// # Safety
/// `h` points at a writable header in memory reserved from the ring buffer.
#[inline(always)]
pub unsafe fn fill_header(h: *mut RecordHeader, kind: u16, flags: u16, ts_ns: u64, pid_tgid: u64) {
    // SAFETY: the caller's promise; helpers without pointer arguments, and get_current_comm
    // writes at most COMM_LEN bytes (zeroing them when it fails).
    unsafe {
        (*h).kind = kind;
        (*h).flags = flags;
        (*h).cpu = bpf_get_smp_processor_id();
        (*h).ts_ns = ts_ns;
        (*h).tgid = (pid_tgid >> 32) as u32;
        (*h).pid = pid_tgid as u32;
        generated::bpf_get_current_comm((*h).comm.as_mut_ptr() as *mut c_void, COMM_LEN as u32);
    }
}

/// The current task's pid_tgid.
#[inline(always)]
pub fn pid_tgid() -> u64 {
    bpf_get_current_pid_tgid()
}
