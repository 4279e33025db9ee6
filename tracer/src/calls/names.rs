//! Which profile function an event's function name is, cached by the name's `Arc`.

use std::sync::Arc;

use super::fasthash::FastMap;
use crate::profile::strip_clone_suffix;

/// Remembers which profile function (and whether a compiler clone) recent function-name
/// strings are, by the identity of their `Arc`: events of one source share their name
/// strings, so most lookups are one pointer comparison. Each slot holds its `Arc`, so the
/// address cannot be reused by another string while cached.
#[derive(Default)]
pub(super) struct NameCache {
    slots: [Option<(Arc<str>, NameHit)>; 32],
}

/// The profile function's index and whether the name is a compiler clone; `None` when the
/// profile does not have the function.
type NameHit = Option<(usize, bool)>;

impl NameCache {
    fn slot(name: &Arc<str>) -> usize {
        let p = Arc::as_ptr(name) as *const u8 as usize;
        (p >> 4 ^ p >> 9) % 32
    }

    #[inline]
    pub(super) fn lookup(&mut self, name: &Arc<str>, index: &FastMap<String, usize>) -> NameHit {
        let i = Self::slot(name);
        if let Some((cached, hit)) = &self.slots[i] {
            if Arc::ptr_eq(cached, name) {
                return *hit;
            }
        }
        let (base, clone) = strip_clone_suffix(name);
        let hit = index.get(base).map(|&spec| (spec, clone));
        self.slots[i] = Some((name.clone(), hit));
        hit
    }
}
