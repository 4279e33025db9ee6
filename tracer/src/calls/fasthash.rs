//! A fast hasher for the auditor's maps, whose keys are kernel pointers, task ids and short
//! function names: SipHash cost more than the rest of an event's analysis.
//!
//! The multiply-rotate scheme of rustc's FxHasher, started from a per-process random seed so
//! the layout differs between runs (as `RandomState`'s does). It is not a keyed PRF: the keys
//! come from the traced kernel, not from an adversary choosing collisions.

use std::collections::HashMap;
use std::hash::{BuildHasher, Hasher};
use std::sync::OnceLock;

const K: u64 = 0xf135_7aea_2e62_a9c5;

#[derive(Clone, Copy)]
pub struct FastHasher(u64);

impl FastHasher {
    #[inline]
    fn add(&mut self, w: u64) {
        self.0 = (self.0.rotate_left(26) ^ w).wrapping_mul(K);
    }
}

impl Hasher for FastHasher {
    #[inline]
    fn write(&mut self, bytes: &[u8]) {
        let mut chunks = bytes.chunks_exact(8);
        for c in &mut chunks {
            self.add(u64::from_le_bytes(c.try_into().expect("8 bytes")));
        }
        let rest = chunks.remainder();
        if !rest.is_empty() {
            let mut b = [0u8; 8];
            b[..rest.len()].copy_from_slice(rest);
            self.add(u64::from_le_bytes(b));
        }
    }
    #[inline]
    fn write_u8(&mut self, i: u8) {
        self.add(u64::from(i));
    }
    #[inline]
    fn write_u32(&mut self, i: u32) {
        self.add(u64::from(i));
    }
    #[inline]
    fn write_u64(&mut self, i: u64) {
        self.add(i);
    }
    #[inline]
    fn write_usize(&mut self, i: usize) {
        self.add(i as u64);
    }
    #[inline]
    fn finish(&self) -> u64 {
        // Fold the high bits down: hashbrown takes its bucket from the low bits and its tag
        // from the top seven.
        self.0 ^ (self.0 >> 29)
    }
}

#[derive(Clone, Copy)]
pub struct FastState(u64);

impl Default for FastState {
    fn default() -> Self {
        static SEED: OnceLock<u64> = OnceLock::new();
        FastState(*SEED.get_or_init(|| {
            std::collections::hash_map::RandomState::new().hash_one(0x0061_7074_7261_6365_u64)
        }))
    }
}

impl BuildHasher for FastState {
    type Hasher = FastHasher;
    #[inline]
    fn build_hasher(&self) -> FastHasher {
        FastHasher(self.0)
    }
}

pub type FastMap<K, V> = HashMap<K, V, FastState>;
pub type FastSet<K> = std::collections::HashSet<K, FastState>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pointers_spread_over_buckets() {
        // Kernel pointers a page apart differ only in middle bits: the low bits of the hash
        // must still differ.
        let s = FastState::default();
        let mut low: Vec<u64> = (0..4096u64)
            .map(|i| s.hash_one(0xffff_8880_1000_0000u64 + i * 0x1000) & 0xfff)
            .collect();
        low.sort_unstable();
        low.dedup();
        assert!(low.len() > 2000, "{} distinct of 4096", low.len());
    }

    #[test]
    fn strings_hash_by_content() {
        let s = FastState::default();
        let a = String::from("vfio_ap_set_state");
        assert_eq!(s.hash_one(&a), s.hash_one("vfio_ap_set_state"));
        assert_ne!(
            s.hash_one("vfio_ap_set_state"),
            s.hash_one("vfio_ap_get_state")
        );
    }
}
