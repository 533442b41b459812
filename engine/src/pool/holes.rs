//! Which free data blocks are known to read as zeros ("known holes").
//!
//! A new block that a write only partly covers must read zeros elsewhere. Rather than
//! trusting that every free block is a hole (which would need punching every block the
//! space map calls free, on the space map's word alone), the pool remembers the blocks it
//! knows to be holes: the whole data device of a pool it just created, the range an extend
//! added, and each block it hole-punched after the commit that freed it. Any other block
//! (free after a reopen, or after a crash that lost the transaction that wrote it) is
//! prepared when it is allocated for a partial write. The set is in memory only: after a
//! reopen it is empty and the first partial writes to new blocks pay the preparation.
//!
//! Stored as disjoint, non-adjacent runs `[start, end)` keyed by start, so a freshly
//! created pool of any size costs one entry.

use std::collections::BTreeMap;

#[derive(Debug, Default)]
pub(super) struct Holes {
    /// start → end (exclusive); runs never overlap nor touch.
    runs: BTreeMap<u64, u64>,
}

impl Holes {
    /// Every block of `[start, start + n)` is a hole.
    pub(super) fn insert(&mut self, start: u64, n: u64) {
        if n == 0 {
            return;
        }
        let (mut lo, mut hi) = (start, start + n);
        // A run that starts at or before `lo` and reaches it merges.
        if let Some((&s, &e)) = self.runs.range(..=lo).next_back() {
            if e >= lo {
                lo = s;
                hi = hi.max(e);
            }
        }
        // Runs that start inside [lo, hi] merge too.
        let inside: Vec<(u64, u64)> = self.runs.range(lo..=hi).map(|(&s, &e)| (s, e)).collect();
        for (s, e) in inside {
            self.runs.remove(&s);
            hi = hi.max(e);
        }
        self.runs.insert(lo, hi);
    }

    /// Forgets `block` (it is being allocated); returns whether it was a hole.
    pub(super) fn take(&mut self, block: u64) -> bool {
        let Some((&s, &e)) = self.runs.range(..=block).next_back() else { return false };
        if block >= e {
            return false;
        }
        self.runs.remove(&s);
        if s < block {
            self.runs.insert(s, block);
        }
        if block + 1 < e {
            self.runs.insert(block + 1, e);
        }
        true
    }

    #[cfg(test)]
    fn contains(&self, block: u64) -> bool {
        self.runs.range(..=block).next_back().is_some_and(|(_, &e)| block < e)
    }
}

#[cfg(test)]
mod tests {
    use super::Holes;

    #[test]
    fn runs_merge_and_split_as_blocks_come_and_go() {
        let mut h = Holes::default();
        h.insert(0, 10);
        assert!(h.take(5));
        assert!(!h.take(5), "a taken block is no longer a hole");
        assert!(h.contains(4) && h.contains(6) && !h.contains(10));
        h.insert(5, 1);
        assert_eq!(h.runs.len(), 1, "refilling the gap merges the runs");
        h.insert(12, 3);
        h.insert(10, 2);
        assert_eq!(h.runs.into_iter().collect::<Vec<_>>(), vec![(0, 15)]);
    }

    #[test]
    fn overlapping_inserts_keep_one_run() {
        let mut h = Holes::default();
        h.insert(20, 5);
        h.insert(0, 5);
        h.insert(3, 20);
        assert_eq!(h.runs.iter().map(|(&s, &e)| (s, e)).collect::<Vec<_>>(), vec![(0, 25)]);
        assert!(h.take(0) && h.take(24) && !h.take(25));
        assert!(h.contains(1) && h.contains(23));
    }
}
