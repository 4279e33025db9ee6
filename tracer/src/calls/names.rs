//! Which profile function an event's function name is, cached by the name's `Arc`.

use std::sync::Arc;

use super::fasthash::FastMap;
use crate::profile::{strip_clone_suffix, Profile};

/// Slots of the cache: more than the names a profile and its compiler clones give, so that
/// every name of a run keeps its slot.
const SLOTS: usize = 256;
/// How many slots after its own a name may take when its own is taken.
const PROBE: usize = 4;

/// Remembers which profile function (and whether a compiler clone) recent function-name
/// strings are, by the identity of their `Arc`: events of one source share their name
/// strings, so most lookups are one pointer comparison. Each slot holds its `Arc`, so the
/// address cannot be reused by another string while cached. A name whose slot is taken
/// tries the next few (two names on one slot would otherwise evict each other on every
/// call, each time paying the suffix scan and the map).
pub(crate) struct NameCache {
    /// The profile's functions by name, for a name not cached.
    index: FastMap<String, usize>,
    slots: [Option<(Arc<str>, NameHit)>; SLOTS],
}

/// The profile function's index and whether the name is a compiler clone; `None` when the
/// profile does not have the function.
type NameHit = Option<(usize, bool)>;

impl NameCache {
    /// For the functions of `profile`.
    pub(crate) fn new(profile: &Profile) -> NameCache {
        NameCache::with_index(profile.index().into_iter().collect())
    }

    fn with_index(index: FastMap<String, usize>) -> NameCache {
        NameCache {
            index,
            slots: std::array::from_fn(|_| None),
        }
    }

    #[inline]
    fn slot(name: &Arc<str>) -> usize {
        let p = Arc::as_ptr(name) as *const u8 as usize as u64;
        // The top bits of a multiply mix every bit of the address.
        (p.wrapping_mul(0x9e37_79b9_7f4a_7c15) >> 56) as usize
    }

    #[inline]
    pub(crate) fn lookup(&mut self, name: &Arc<str>) -> NameHit {
        let home = Self::slot(name);
        // Nearly every lookup: the name on its own slot.
        if let Some((cached, hit)) = &self.slots[home] {
            if Arc::ptr_eq(cached, name) {
                return *hit;
            }
        }
        self.lookup_further(name, home)
    }

    #[inline(never)]
    fn lookup_further(&mut self, name: &Arc<str>, home: usize) -> NameHit {
        let mut free = None;
        for i in (home..home + PROBE).map(|i| i % SLOTS) {
            match &self.slots[i] {
                Some((cached, hit)) if Arc::ptr_eq(cached, name) => return *hit,
                Some(_) => {}
                None => {
                    free = Some(i);
                    break;
                }
            }
        }
        let (base, clone) = strip_clone_suffix(name);
        let hit = self.index.get(base).map(|&spec| (spec, clone));
        self.slots[free.unwrap_or(home)] = Some((name.clone(), hit));
        hit
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_resolve_through_the_cache_as_without_it() {
        let index: FastMap<String, usize> = [("f".to_string(), 0), ("g".to_string(), 1)]
            .into_iter()
            .collect();
        let mut cache = NameCache::with_index(index);
        // More names than slots: slots are shared and replaced, answers stay the same.
        let names: Vec<Arc<str>> = (0..200)
            .map(|i| match i % 4 {
                0 => Arc::from("f"),
                1 => Arc::from("g.isra.0"),
                2 => Arc::from("g"),
                _ => Arc::from(format!("other{i}")),
            })
            .collect();
        for _ in 0..3 {
            for (i, n) in names.iter().enumerate() {
                let want = match i % 4 {
                    0 => Some((0, false)),
                    1 => Some((1, true)),
                    2 => Some((1, false)),
                    _ => None,
                };
                assert_eq!(cache.lookup(n), want, "{n}");
            }
        }
    }
}
