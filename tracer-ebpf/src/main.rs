//! aptrace's eBPF probes. Thin: they capture and send; the agent decides.
//!
//! One module per probe family:
//! - [`functions`]: generic kprobe/kretprobe slots bound by userspace to the profile's
//!   functions (slot → address and what to read in the global `APTRACE_CONFIG`),
//!   so a profile file adds a function without rebuilding this object;
//! - [`lock`]: the `matrix_dev->mdevs_lock` owner compared with the current task;
//! - [`alloc`]: with `--all-allocations`, the allocator's raw tracepoints and kvmalloc;
//! - [`stacks`]: the kernel stack map whose ids ride in records;
//! - [`maps`]: the ring buffer, the configuration global and the per-CPU loss counters.
#![no_std]
#![no_main]
// The compare-and-swap of `pending` (the BPF targets have no `AtomicU64::compare_exchange`).
#![allow(internal_features)]
#![feature(core_intrinsics)]

mod alloc;
mod functions;
mod lock;
mod maps;
mod pending;
mod record;
mod stacks;

#[cfg(not(test))]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    loop {}
}

#[unsafe(link_section = "license")]
#[unsafe(no_mangle)]
static LICENSE: [u8; 4] = *b"GPL\0";
