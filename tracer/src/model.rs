//! The typed, architecture-neutral event model, decoded from the ABI records of
//! `tracer-common` with an explicit byte order.
//!
//! Everything after the source (reorder, auditor, recorder, sinks) speaks this model; a
//! recording stores it, and the JSON-lines format is its serde form.

use std::sync::Arc;

use serde::{Deserialize, Serialize};

mod args;
mod record;

pub use crate::bytes_reader::Endian;
pub use args::Args;
pub use record::{
    decode_record, decode_record_into, encode_record, Addresses, DecodeError, Decoded, EncodeError,
};

/// How a probe saw `matrix_dev->mdevs_lock` when a function was entered.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "kebab-case", tag = "state")]
pub enum LockObs {
    /// Not read (no lock address known, or the function has no contract).
    #[default]
    NotChecked,
    Free,
    HeldByCurrent,
    HeldByOther {
        #[serde(with = "hex_u64")]
        owner: u64,
    },
}

/// A declared lock other than `mdevs_lock`, as the probe read its owner word at an entry
/// (a read that failed is not listed).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct LockSeen {
    /// The profile's name of the lock.
    pub lock: Arc<str>,
    #[serde(flatten)]
    pub obs: LockObs,
}

/// Which allocator an allocation or free went through.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Allocator {
    Kmalloc,
    KmemCache,
    Kvmalloc,
    Vmalloc,
}

/// Why events were lost.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum LossSource {
    /// The ring buffer was full.
    RingBuffer,
    /// A kretprobe had no free instance (the kernel's `nmissed`).
    KretprobeMiss,
    /// A return arrived without its entry.
    ExitWithoutEntry,
    /// Chunks of a recording were damaged and skipped.
    Recording,
}

/// The task an event happened in.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Task {
    /// Process id (tgid).
    pub pid: u32,
    /// Thread id.
    pub tid: u32,
    pub comm: Arc<str>,
}

/// One event.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Event {
    /// Position in the ordered stream; findings cite these.
    pub seq: u64,
    /// Kernel boot-clock nanoseconds.
    #[serde(with = "dec_u64")]
    pub ts_ns: u64,
    pub cpu: u32,
    #[serde(flatten)]
    pub task: Task,
    #[serde(flatten)]
    pub body: Body,
}

/// Cache lines an event can span (it need not start on a line).
pub const EVENT_LINES: usize = std::mem::size_of::<Event>().div_ceil(64) + 1;

/// Asks the CPU to bring the first `lines` cache lines of `x` into its cache, ahead of
/// their use (a hint: no effect on what the program does). Only on x86_64; elsewhere it
/// does nothing.
#[inline(always)]
pub fn prefetch<T: ?Sized>(x: &T, lines: usize) {
    #[cfg(target_arch = "x86_64")]
    {
        use std::arch::x86_64::{_mm_prefetch, _MM_HINT_T0};
        let p = x as *const T as *const i8;
        for i in 0..lines {
            // SAFETY: a prefetch reads nothing the program sees and cannot fault.
            unsafe { _mm_prefetch::<_MM_HINT_T0>(p.wrapping_add(64 * i)) };
        }
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = (x, lines);
}

/// What happened.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "kebab-case")]
pub enum Body {
    /// A profiled function was entered.
    Enter {
        func: Arc<str>,
        /// Argument registers (as many as the probe captured).
        args: Args,
        /// The profile's field read on entry, if any.
        #[serde(default, skip_serializing_if = "Option::is_none", with = "hex_opt")]
        field: Option<u64>,
        #[serde(default)]
        lock: LockObs,
        /// The other declared locks the probe read (recordings before 1.4 have none).
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        locks: Vec<LockSeen>,
        /// Arguments are not trustworthy (compiler clone).
        #[serde(default, skip_serializing_if = "is_false")]
        untrusted: bool,
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        stack: Vec<Arc<str>>,
    },
    /// A profiled function returned.
    Exit {
        func: Arc<str>,
        /// The raw return register; errors are negative as i64.
        #[serde(with = "hex_u64")]
        ret: u64,
        /// First argument as seen at entry (0 if unknown).
        #[serde(with = "hex_u64")]
        arg0: u64,
        #[serde(default, skip_serializing_if = "Option::is_none", with = "dec_opt")]
        duration_ns: Option<u64>,
        #[serde(default, skip_serializing_if = "Option::is_none", with = "hex_opt")]
        field: Option<u64>,
    },
    /// The allocator returned memory to the traced module.
    Alloc {
        #[serde(with = "hex_u64")]
        ptr: u64,
        bytes: u64,
        /// Function of the call site (symbolized), if known.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        site: Option<Arc<str>>,
        allocator: Allocator,
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        stack: Vec<Arc<str>>,
    },
    /// Memory was freed.
    Free {
        #[serde(with = "hex_u64")]
        ptr: u64,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        site: Option<Arc<str>>,
        allocator: Allocator,
    },
    /// Events were dropped before this point.
    Lost { count: u64, source: LossSource },
    /// Userspace learned an mdev's name (the vfio device's `dev_name()`).
    MdevName {
        #[serde(with = "hex_u64")]
        mdev: u64,
        uuid: Arc<str>,
    },
    /// Userspace learned a guest's name (`-name guest=` of a QEMU process).
    GuestName { guest_pid: u32, name: Arc<str> },
}

fn is_false(b: &bool) -> bool {
    !*b
}

impl Body {
    /// The function this event belongs to, if it is a call event.
    pub fn func(&self) -> Option<&str> {
        match self {
            Body::Enter { func, .. } | Body::Exit { func, .. } => Some(func),
            _ => None,
        }
    }
}

/// Resolves kernel addresses to names (functions, call sites, stack frames).
pub trait Symbolizer {
    /// The function containing `addr`, as `name` (or `name+0xoff` where `exact` is false).
    fn function_at(&self, addr: u64) -> Option<Arc<str>>;
    /// A stack frame for display: `name+0xoff [module]` or the raw address.
    fn frame(&self, addr: u64) -> Arc<str> {
        self.function_at(addr)
            .unwrap_or_else(|| Arc::from(format!("{addr:#x}")))
    }
    /// The name of the profile's lock number `id` (an entry record's lock reads): the
    /// live agent knows its profile; elsewhere the lock is `lock#ID`.
    fn lock_name(&self, id: u8) -> Arc<str> {
        Arc::from(format!("lock#{id}"))
    }
}

/// A symbolizer that knows nothing, for tests and replays of raw captures.
pub struct NoSymbols;
impl Symbolizer for NoSymbols {
    fn function_at(&self, _addr: u64) -> Option<Arc<str>> {
        None
    }
}

/// Kernel pointers as `"0xffff..."` strings: they do not fit a JSON double.
pub mod hex_u64 {
    use serde::{de::Error, Deserialize, Deserializer, Serializer};
    pub fn serialize<S: Serializer>(v: &u64, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&format!("{v:#x}"))
    }
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<u64, D::Error> {
        let s = String::deserialize(d)?;
        parse(&s).map_err(D::Error::custom)
    }
    /// Parses `0x...` hex or plain decimal.
    pub fn parse(s: &str) -> Result<u64, String> {
        let t = s.trim();
        let r = match t.strip_prefix("0x").or_else(|| t.strip_prefix("0X")) {
            Some(h) => u64::from_str_radix(h, 16),
            None => t.parse::<u64>(),
        };
        r.map_err(|e| format!("bad integer {s:?}: {e}"))
    }
}

/// Optional kernel pointer as a hex string.
pub mod hex_opt {
    use serde::{Deserialize, Deserializer, Serializer};
    pub fn serialize<S: Serializer>(v: &Option<u64>, s: S) -> Result<S::Ok, S::Error> {
        match v {
            Some(v) => super::hex_u64::serialize(v, s),
            None => s.serialize_none(),
        }
    }
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<u64>, D::Error> {
        let s: Option<String> = Option::deserialize(d)?;
        s.map(|s| super::hex_u64::parse(&s).map_err(serde::de::Error::custom))
            .transpose()
    }
}

/// A list of register values as hex strings.
pub mod hex_vec {
    use serde::{ser::SerializeSeq, Deserialize, Deserializer, Serializer};
    pub fn serialize<S: Serializer>(v: &[u64], s: S) -> Result<S::Ok, S::Error> {
        let mut seq = s.serialize_seq(Some(v.len()))?;
        for x in v {
            seq.serialize_element(&format!("{x:#x}"))?;
        }
        seq.end()
    }
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<u64>, D::Error> {
        let v: Vec<String> = Vec::deserialize(d)?;
        v.iter()
            .map(|s| super::hex_u64::parse(s).map_err(serde::de::Error::custom))
            .collect()
    }
}

/// Nanosecond times as decimal strings: they do not fit a JSON double.
pub mod dec_u64 {
    use serde::{Deserialize, Deserializer, Serializer};
    pub fn serialize<S: Serializer>(v: &u64, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&v.to_string())
    }
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<u64, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum StrOrNum {
            S(String),
            N(u64),
        }
        match StrOrNum::deserialize(d)? {
            StrOrNum::S(s) => super::hex_u64::parse(&s).map_err(serde::de::Error::custom),
            StrOrNum::N(n) => Ok(n),
        }
    }
}

/// Optional nanoseconds as a decimal string.
pub mod dec_opt {
    use serde::{Deserialize, Deserializer, Serializer};
    pub fn serialize<S: Serializer>(v: &Option<u64>, s: S) -> Result<S::Ok, S::Error> {
        match v {
            Some(v) => super::dec_u64::serialize(v, s),
            None => s.serialize_none(),
        }
    }
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<u64>, D::Error> {
        #[derive(Deserialize)]
        struct W(#[serde(with = "super::dec_u64")] u64);
        Ok(Option::<W>::deserialize(d)?.map(|w| w.0))
    }
}

impl Event {
    /// An event that says nothing (no loss counted), to be overwritten: the room a
    /// decoder fills ([`decode_record_into`]).
    pub fn placeholder() -> Event {
        Event {
            seq: 0,
            ts_ns: 0,
            cpu: 0,
            task: Task {
                pid: 0,
                tid: 0,
                comm: Arc::from(""),
            },
            body: Body::Lost {
                count: 0,
                source: LossSource::RingBuffer,
            },
        }
    }

    /// One line a person can read: what happened, without the time and task. Without the
    /// function's signature: two arguments, the return register read as best it can be.
    pub fn describe(&self) -> String {
        self.describe_with(Some(2), |ret| {
            let r = ret as i64;
            Some(
                if (-4095..0).contains(&r) || (ret as u32 as i32) < 0 && (ret >> 32) == 0 {
                    format!("{}", ret as u32 as i32)
                } else if ret > 0xffff {
                    format!("{ret:#x}")
                } else {
                    ret.to_string()
                },
            )
        })
    }

    /// [`Event::describe`] with the function's own number of arguments (`None`: every
    /// captured one) and its return value as text (`None`: a void function, no value).
    pub fn describe_with(
        &self,
        n_args: Option<usize>,
        ret_text: impl Fn(u64) -> Option<String>,
    ) -> String {
        match &self.body {
            Body::Enter {
                func,
                args,
                field,
                lock,
                locks,
                untrusted,
                ..
            } => {
                let mut s = format!("→ {func}(");
                let shown: Vec<String> = args
                    .iter()
                    .take(n_args.unwrap_or(args.len()))
                    .map(|a| {
                        if *a > 0xffff {
                            format!("{a:#x}")
                        } else {
                            a.to_string()
                        }
                    })
                    .collect();
                s.push_str(&shown.join(", "));
                s.push(')');
                if let Some(f) = field {
                    s.push_str(&format!(" field={f:#x}"));
                }
                match lock {
                    LockObs::NotChecked => {}
                    LockObs::Free => s.push_str(" [mdevs_lock free]"),
                    LockObs::HeldByCurrent => s.push_str(" [mdevs_lock held by this task]"),
                    LockObs::HeldByOther { owner } => {
                        s.push_str(&format!(" [mdevs_lock held by task {owner:#x}]"))
                    }
                }
                for l in locks {
                    match l.obs {
                        LockObs::NotChecked => {}
                        LockObs::Free => s.push_str(&format!(" [{} free]", l.lock)),
                        LockObs::HeldByCurrent => {
                            s.push_str(&format!(" [{} held by this task]", l.lock))
                        }
                        LockObs::HeldByOther { owner } => {
                            s.push_str(&format!(" [{} held by task {owner:#x}]", l.lock))
                        }
                    }
                }
                if *untrusted {
                    s.push_str(" (clone: args untrusted)");
                }
                s
            }
            Body::Exit {
                func,
                ret,
                field,
                duration_ns,
                ..
            } => {
                let mut s = match ret_text(*ret) {
                    Some(shown) => format!("← {func} = {shown}"),
                    None => format!("← {func}"),
                };
                if let Some(f) = field {
                    s.push_str(&format!(" field={f:#x}"));
                }
                if let Some(d) = duration_ns {
                    s.push_str(&format!(" ({})", human_ns(*d)));
                }
                s
            }
            Body::Alloc {
                ptr,
                bytes,
                site,
                allocator,
                ..
            } => format!(
                "alloc {ptr:#x} {bytes} bytes via {allocator:?} from {}",
                site.as_deref().unwrap_or("?")
            ),
            Body::Free { ptr, site, .. } => {
                format!("free {ptr:#x} from {}", site.as_deref().unwrap_or("?"))
            }
            Body::Lost { count, source } => format!("{count} events lost ({source:?})"),
            Body::MdevName { mdev, uuid } => format!("mdev {mdev:#x} is {uuid}"),
            Body::GuestName { guest_pid, name } => format!("pid {guest_pid} is guest {name}"),
        }
    }
}

/// `1.2µs`, `35ms`, `2.0s`.
pub fn human_ns(ns: u64) -> String {
    match ns {
        0..=999 => format!("{ns}ns"),
        1_000..=999_999 => format!("{:.1}µs", ns as f64 / 1e3),
        1_000_000..=999_999_999 => format!("{:.1}ms", ns as f64 / 1e6),
        _ => format!("{:.2}s", ns as f64 / 1e9),
    }
}
