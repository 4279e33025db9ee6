//! An entry's argument registers, held in the event itself.
//!
//! The probes capture [`abi::MAX_ARGS`] registers, so nearly every entry has that many or
//! fewer: those live inline, and an entry costs no allocation to decode, copy or drop (a
//! `Vec` cost an allocation and a free per entry, more than the rest of its decoding).
//! Recordings and JSON may carry more (a recording up to 16); those go to the heap.

use std::ops::Deref;

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use tracer_common as abi;

/// How many arguments live in the event without an allocation.
pub const INLINE_ARGS: usize = abi::MAX_ARGS;

/// Argument registers as captured, in order; reads as a `[u64]`.
pub struct Args(Repr);

#[derive(Clone)]
enum Repr {
    Inline { len: u8, vals: [u64; INLINE_ARGS] },
    Heap(Vec<u64>),
}

impl Args {
    pub const fn new() -> Args {
        Args(Repr::Inline {
            len: 0,
            vals: [0; INLINE_ARGS],
        })
    }

    /// Exactly the [`abi::MAX_ARGS`] arguments the probes capture.
    #[inline]
    pub const fn captured(vals: [u64; INLINE_ARGS]) -> Args {
        Args(Repr::Inline {
            len: INLINE_ARGS as u8,
            vals,
        })
    }

    /// Appends one argument, moving to the heap past [`abi::MAX_ARGS`].
    pub fn push(&mut self, v: u64) {
        match &mut self.0 {
            Repr::Inline { len, vals } if usize::from(*len) < INLINE_ARGS => {
                vals[usize::from(*len)] = v;
                *len += 1;
            }
            Repr::Inline { vals, .. } => {
                let mut heap = Vec::with_capacity(INLINE_ARGS * 2);
                heap.extend_from_slice(vals);
                heap.push(v);
                self.0 = Repr::Heap(heap);
            }
            Repr::Heap(h) => h.push(v),
        }
    }

    /// Keeps the first `n` arguments.
    pub fn truncate(&mut self, n: usize) {
        match &mut self.0 {
            Repr::Inline { len, .. } => *len = (*len).min(n.min(INLINE_ARGS) as u8),
            Repr::Heap(h) => h.truncate(n),
        }
    }
}

impl Clone for Args {
    fn clone(&self) -> Args {
        Args(self.0.clone())
    }

    /// Without an allocation, nor a drop of the old value, when both fit inline: a reused
    /// entry box takes its new entry's arguments this way.
    #[inline]
    fn clone_from(&mut self, src: &Args) {
        match (&mut self.0, &src.0) {
            (
                Repr::Inline { len, vals },
                Repr::Inline {
                    len: slen,
                    vals: svals,
                },
            ) => {
                *len = *slen;
                *vals = *svals;
            }
            _ => *self = src.clone(),
        }
    }
}

impl Default for Args {
    fn default() -> Args {
        Args::new()
    }
}

impl Deref for Args {
    type Target = [u64];
    #[inline]
    fn deref(&self) -> &[u64] {
        match &self.0 {
            Repr::Inline { len, vals } => &vals[..usize::from(*len)],
            Repr::Heap(h) => h,
        }
    }
}

impl FromIterator<u64> for Args {
    fn from_iter<I: IntoIterator<Item = u64>>(iter: I) -> Args {
        let mut a = Args::new();
        for v in iter {
            a.push(v);
        }
        a
    }
}

impl From<&[u64]> for Args {
    fn from(v: &[u64]) -> Args {
        v.iter().copied().collect()
    }
}

impl<const N: usize> From<[u64; N]> for Args {
    fn from(v: [u64; N]) -> Args {
        v.into_iter().collect()
    }
}

impl From<Vec<u64>> for Args {
    fn from(v: Vec<u64>) -> Args {
        if v.len() <= INLINE_ARGS {
            Args::from(v.as_slice())
        } else {
            Args(Repr::Heap(v))
        }
    }
}

impl PartialEq for Args {
    fn eq(&self, other: &Args) -> bool {
        **self == **other
    }
}

impl Eq for Args {}

impl std::fmt::Debug for Args {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_list().entries(self.iter()).finish()
    }
}

/// As a list of `"0x..."` strings, as the arguments always were in JSON.
impl Serialize for Args {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        super::hex_vec::serialize(self, s)
    }
}

impl<'de> Deserialize<'de> for Args {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Args, D::Error> {
        super::hex_vec::deserialize(d).map(Args::from)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn arguments_read_back_in_order_inline_and_past_it() {
        for n in 0..=16u64 {
            let v: Vec<u64> = (1..=n).map(|i| i * 0x1000).collect();
            let a = Args::from(v.clone());
            assert_eq!(&*a, v.as_slice(), "{n} arguments");
            let pushed: Args = v.iter().copied().collect();
            assert_eq!(pushed, a);
            let mut cut = a.clone();
            cut.truncate(2);
            assert_eq!(&*cut, &v[..v.len().min(2)]);
            let mut copy = Args::from([9u64, 9]);
            copy.clone_from(&a);
            assert_eq!(&*copy, v.as_slice(), "copied over two");
        }
    }

    #[test]
    fn arguments_are_hex_strings_in_json() {
        let a = Args::from([0xffff_8880_1000_0000u64, 3]);
        let j = serde_json::to_string(&a).expect("serializes");
        assert_eq!(j, r#"["0xffff888010000000","0x3"]"#);
        let back: Args = serde_json::from_str(&j).expect("parses");
        assert_eq!(back, a);
        let long = Args::from((0..9).collect::<Vec<u64>>());
        let back: Args = serde_json::from_str(&serde_json::to_string(&long).expect("serializes"))
            .expect("parses");
        assert_eq!(back, long);
    }
}
