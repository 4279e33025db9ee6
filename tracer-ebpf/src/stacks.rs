//! Kernel stacks: ids into `STACKS`, symbolized by the agent when it decodes the record.

use aya_ebpf::{macros::map, maps::StackTrace, programs::tracing::StackIdContext};

#[map]
pub static STACKS: StackTrace = StackTrace::with_max_entries(4096, 0);

/// The kernel stack of the current call, or `None` (the map is full or the helper failed).
#[inline(always)]
pub fn take<C: StackIdContext>(ctx: &C) -> Option<i32> {
    ctx.get_stackid(&STACKS, 0).ok().map(|id| id as i32)
}
