//! The current life of each mdev pointer, looked up by pointer.
//!
//! An event's rules look the same mdev up several times (the entry's touch, the rule's
//! read, the return's touch), nearly always the mdev of the event before: the last pointer
//! found is remembered, and the hash lookup is paid when the mdev changes.

use std::cell::Cell;
use std::ops::Index;

use super::lifecycle::Mdev;
use crate::calls::fasthash::FastMap;

#[derive(Default)]
pub(super) struct Lives {
    index: FastMap<u64, u32>,
    slots: Vec<Option<Mdev>>,
    free: Vec<u32>,
    /// (pointer, slot) of the last lookup that found one.
    last: Cell<Option<(u64, u32)>>,
}

impl Lives {
    #[inline]
    fn slot(&self, ptr: u64) -> Option<u32> {
        if let Some((p, i)) = self.last.get() {
            if p == ptr {
                return Some(i);
            }
        }
        let i = *self.index.get(&ptr)?;
        self.last.set(Some((ptr, i)));
        Some(i)
    }

    #[inline]
    pub(super) fn get(&self, ptr: &u64) -> Option<&Mdev> {
        let i = self.slot(*ptr)?;
        self.slots[i as usize].as_ref()
    }

    #[inline]
    pub(super) fn get_mut(&mut self, ptr: &u64) -> Option<&mut Mdev> {
        let i = self.slot(*ptr)?;
        self.slots[i as usize].as_mut()
    }

    pub(super) fn insert(&mut self, ptr: u64, m: Mdev) {
        match self.slot(ptr) {
            Some(i) => self.slots[i as usize] = Some(m),
            None => {
                let i = match self.free.pop() {
                    Some(i) => {
                        self.slots[i as usize] = Some(m);
                        i
                    }
                    None => {
                        self.slots.push(Some(m));
                        (self.slots.len() - 1) as u32
                    }
                };
                self.index.insert(ptr, i);
                self.last.set(Some((ptr, i)));
            }
        }
    }

    /// The life of `ptr`, made by `make` when there is none.
    #[inline]
    pub(super) fn get_or_insert_with(
        &mut self,
        ptr: u64,
        make: impl FnOnce() -> Mdev,
    ) -> &mut Mdev {
        if self.slot(ptr).is_none() {
            self.insert(ptr, make());
        }
        self.get_mut(&ptr).expect("just inserted")
    }

    pub(super) fn remove(&mut self, ptr: &u64) -> Option<Mdev> {
        let i = self.index.remove(ptr)?;
        if self.last.get().is_some_and(|(p, _)| p == *ptr) {
            self.last.set(None);
        }
        self.free.push(i);
        self.slots[i as usize].take()
    }

    pub(super) fn values(&self) -> impl Iterator<Item = &Mdev> {
        self.slots.iter().flatten()
    }

    pub(super) fn values_mut(&mut self) -> impl Iterator<Item = &mut Mdev> {
        self.slots.iter_mut().flatten()
    }
}

impl Index<&u64> for Lives {
    type Output = Mdev;
    fn index(&self, ptr: &u64) -> &Mdev {
        self.get(ptr).expect("an mdev the auditor tracks")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lives_are_found_replaced_and_removed_by_pointer() {
        let mut l = Lives::default();
        for p in 1..=5u64 {
            l.insert(p, Mdev::new(p, 0, false));
        }
        assert_eq!(l[&3].ptr, 3);
        assert_eq!(l.get(&2).map(|m| m.ptr), Some(2));
        assert_eq!(l.remove(&2).map(|m| m.ptr), Some(2));
        assert!(
            l.get(&2).is_none(),
            "the remembered lookup is forgotten with the life"
        );
        l.insert(7, Mdev::new(7, 1, false));
        assert_eq!(
            l.get(&7).map(|m| m.incarnation),
            Some(1),
            "in the freed slot"
        );
        l.insert(7, Mdev::new(7, 2, false));
        assert_eq!(l[&7].incarnation, 2);
        l.get_or_insert_with(9, || Mdev::new(9, 0, true)).events += 1;
        l.get_or_insert_with(9, || unreachable!()).events += 1;
        assert_eq!(l[&9].events, 2);
        let mut ptrs: Vec<u64> = l.values().map(|m| m.ptr).collect();
        ptrs.sort();
        assert_eq!(ptrs, [1, 3, 4, 5, 7, 9]);
    }
}
