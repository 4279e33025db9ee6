//! The kernel side of the stream: records out of the ring buffer, stacks out of the stack
//! map, and loss counters out of the per-CPU array and the links' info.

use std::collections::HashSet;

use aya::maps::{MapData, PerCpuArray, RingBuf, StackTraceMap};
use aya::Ebpf;
use tracer_common as abi;

use crate::live::decode::{Decoder, StackFrames};
use crate::live::losses::{is_function_program, Ledger, Reading};
use crate::model::{Event, Symbolizer};

pub struct KernelStacks(pub StackTraceMap<MapData>);

impl StackFrames for KernelStacks {
    fn frames(&self, stack_id: u32) -> Option<Vec<u64>> {
        let st = self.0.get(&stack_id, 0).ok()?;
        Some(st.frames().iter().map(|f| f.ip).collect())
    }
}

/// Decodes up to `limit` records from the ring; returns how many it took.
// Boxed: each box goes on into the pipeline as it is (`Pipeline::push_boxed`).
#[allow(clippy::vec_box)]
pub fn drain(
    decoder: &mut Decoder,
    ring: &mut RingBuf<MapData>,
    limit: usize,
    symbols: &dyn Symbolizer,
    stacks: &KernelStacks,
    spare: &mut dyn FnMut() -> Box<Event>,
    out: &mut Vec<Box<Event>>,
) -> usize {
    let mut drained = 0;
    while drained < limit {
        let Some(item) = ring.next() else { break };
        decoder.decode(&item, symbols, stacks, spare, out);
        drained += 1;
    }
    drained
}

/// Lost events, from the probes' per-CPU counters and the kernel's own miss counts.
pub struct KernelLosses {
    counters: PerCpuArray<MapData, u64>,
    /// Ids of the function slots' kprobe programs, whose links report `missed` (6.7+).
    kprobe_ids: HashSet<u32>,
    ledger: Ledger,
}

impl KernelLosses {
    pub fn new(counters: PerCpuArray<MapData, u64>) -> Self {
        Self {
            counters,
            kprobe_ids: HashSet::new(),
            ledger: Ledger::new(),
        }
    }

    /// After an attach: programs are loaded on first use, so their ids are known now.
    pub fn note_programs(&mut self, ebpf: &Ebpf) {
        self.kprobe_ids = ebpf
            .programs()
            .filter(|(name, _)| is_function_program(name))
            .filter_map(|(_, p)| match p {
                aya::programs::Program::KProbe(k) => k.info().ok().map(|i| i.id()),
                _ => None,
            })
            .collect();
    }

    /// Appends the losses new since the last call, stamped `now_ns`.
    pub fn push(&mut self, now_ns: u64, out: &mut Vec<Event>) {
        let mut counters = [None; abi::counter::COUNT as usize];
        for (idx, slot) in counters.iter_mut().enumerate() {
            *slot = self
                .counters
                .get(&(idx as u32), 0)
                .ok()
                .map(|v| v.iter().sum());
        }
        let reading = Reading {
            counters,
            kernel_missed: crate::live::linkinfo::kprobe_missed(&self.kprobe_ids)
                .map_err(|e| e.to_string()),
        };
        self.ledger.account(&reading, now_ns, out);
    }
}
