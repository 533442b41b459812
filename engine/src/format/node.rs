//! B-tree node layout (spec §4.1): a 32-byte header, `max_entries` u64 keys, then
//! `max_entries` values of `value_size` bytes, zeros to the end of the block.
//!
//! Nodes are used in place: these functions read and edit the raw block, so lookups and
//! inserts never decode a node into a separate structure. Callers validate the header once
//! (`NodeHeader::check`) when the block enters the cache; after that the accessors trust it.

use super::{le_u32, le_u64, put_u32, put_u64};
use crate::error::{Error, Result};
use crate::limits::META_BLOCK_SIZE;
use crate::units::MetaBlock;

pub const NODE_HEADER_SIZE: usize = 32;
const OFF_FLAGS: usize = 4;
const OFF_NR_ENTRIES: usize = 16;
const OFF_MAX_ENTRIES: usize = 20;
const OFF_VALUE_SIZE: usize = 24;

pub const FLAG_INTERNAL: u32 = 1;
pub const FLAG_LEAF: u32 = 2;

/// Internal nodes always carry 8-byte child block numbers (spec §4.2).
pub const INTERNAL_VALUE_SIZE: usize = 8;

/// Capacity for a value size, rounded down to a multiple of 3 (spec §4.2):
/// 4 → 336, 8 → 252, 16 → 168, 24 → 126.
pub const fn max_entries(value_size: usize) -> usize {
    3 * (((META_BLOCK_SIZE - NODE_HEADER_SIZE) / (8 + value_size)) / 3)
}

/// Fewest entries a non-root node may hold: max_entries / 3 (spec §4.4 rule 5).
pub const fn min_entries(max_entries: usize) -> usize {
    max_entries / 3
}

/// The header fields of a node.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NodeHeader {
    pub is_leaf: bool,
    pub nr_entries: usize,
    pub max_entries: usize,
    pub value_size: usize,
}

impl NodeHeader {
    pub fn decode(b: &[u8]) -> Self {
        NodeHeader {
            is_leaf: le_u32(b, OFF_FLAGS) & FLAG_LEAF != 0,
            nr_entries: le_u32(b, OFF_NR_ENTRIES) as usize,
            max_entries: le_u32(b, OFF_MAX_ENTRIES) as usize,
            value_size: le_u32(b, OFF_VALUE_SIZE) as usize,
        }
    }

    /// The structural rules every reader needs before trusting the accessors (the kernel
    /// validator's rules): a known flag, the arrays fit in the block, nr ≤ max,
    /// internal values are 8 bytes.
    pub fn check(b: &[u8], location: MetaBlock) -> Result<Self> {
        let flags = le_u32(b, OFF_FLAGS);
        let h = Self::decode(b);
        let bad = |reason: String| Err(Error::corrupt(location, "btree node", reason));
        if flags != FLAG_INTERNAL && flags != FLAG_LEAF {
            return bad(format!("flags {flags:#x} (must be 1 or 2)"));
        }
        if h.value_size == 0 || h.value_size > 1024 {
            return bad(format!("value_size {}", h.value_size));
        }
        if h.max_entries == 0
            || NODE_HEADER_SIZE + (8 + h.value_size) * h.max_entries > META_BLOCK_SIZE
        {
            return bad(format!("max_entries {} does not fit the block", h.max_entries));
        }
        if h.nr_entries > h.max_entries {
            return bad(format!("nr_entries {} > max_entries {}", h.nr_entries, h.max_entries));
        }
        if !h.is_leaf && h.value_size != INTERNAL_VALUE_SIZE {
            return bad(format!("internal node with value_size {}", h.value_size));
        }
        Ok(h)
    }
}

/// Makes `b` an empty node (all zeros, then the header).
pub fn init(b: &mut [u8], is_leaf: bool, value_size: usize) {
    b.fill(0);
    put_u32(b, OFF_FLAGS, if is_leaf { FLAG_LEAF } else { FLAG_INTERNAL });
    put_u32(b, OFF_MAX_ENTRIES, max_entries(value_size) as u32);
    put_u32(b, OFF_VALUE_SIZE, value_size as u32);
}

#[inline]
pub fn is_leaf(b: &[u8]) -> bool {
    le_u32(b, OFF_FLAGS) & FLAG_LEAF != 0
}

#[inline]
pub fn nr_entries(b: &[u8]) -> usize {
    le_u32(b, OFF_NR_ENTRIES) as usize
}

#[inline]
pub fn set_nr_entries(b: &mut [u8], n: usize) {
    put_u32(b, OFF_NR_ENTRIES, n as u32);
}

#[inline]
pub fn max_entries_of(b: &[u8]) -> usize {
    le_u32(b, OFF_MAX_ENTRIES) as usize
}

#[inline]
pub fn value_size(b: &[u8]) -> usize {
    le_u32(b, OFF_VALUE_SIZE) as usize
}

#[inline]
fn values_offset(b: &[u8]) -> usize {
    NODE_HEADER_SIZE + 8 * max_entries_of(b)
}

#[inline]
pub fn key(b: &[u8], i: usize) -> u64 {
    le_u64(b, NODE_HEADER_SIZE + 8 * i)
}

#[inline]
pub fn set_key(b: &mut [u8], i: usize, k: u64) {
    put_u64(b, NODE_HEADER_SIZE + 8 * i, k);
}

/// The bytes of value `i`.
#[inline]
pub fn value(b: &[u8], i: usize) -> &[u8] {
    let vs = value_size(b);
    let off = values_offset(b) + vs * i;
    &b[off..off + vs]
}

/// Value `i` of a node whose values are 8 bytes (internal nodes, mapping leaves).
#[inline]
pub fn value_u64(b: &[u8], i: usize) -> u64 {
    le_u64(b, values_offset(b) + 8 * i)
}

#[inline]
pub fn set_value(b: &mut [u8], i: usize, v: &[u8]) {
    let vs = value_size(b);
    debug_assert_eq!(v.len(), vs);
    let off = values_offset(b) + vs * i;
    b[off..off + vs].copy_from_slice(v);
}

#[inline]
pub fn set_value_u64(b: &mut [u8], i: usize, v: u64) {
    let off = values_offset(b) + 8 * i;
    put_u64(b, off, v);
}

/// Index of the largest key ≤ `k`, or `None` if every key is larger (spec §4.3).
#[inline]
pub fn lower_bound(b: &[u8], k: u64) -> Option<usize> {
    let (mut lo, mut hi) = (0usize, nr_entries(b));
    // Invariant: keys[..lo] ≤ k < keys[hi..].
    while lo < hi {
        let mid = (lo + hi) / 2;
        if key(b, mid) <= k {
            lo = mid + 1;
        } else {
            hi = mid;
        }
    }
    lo.checked_sub(1)
}

/// Index of key `k` if present.
#[inline]
pub fn find(b: &[u8], k: u64) -> Option<usize> {
    lower_bound(b, k).filter(|&i| key(b, i) == k)
}

/// Inserts (k, v) at position `i`, shifting later entries right. The node must not be full.
pub fn insert_at(b: &mut [u8], i: usize, k: u64, v: &[u8]) {
    let n = nr_entries(b);
    let vs = value_size(b);
    assert!(n < max_entries_of(b) && i <= n, "insert_at on a full node or past the end");
    let ko = NODE_HEADER_SIZE + 8 * i;
    b.copy_within(ko..NODE_HEADER_SIZE + 8 * n, ko + 8);
    let vo = values_offset(b) + vs * i;
    b.copy_within(vo..values_offset(b) + vs * n, vo + vs);
    set_nr_entries(b, n + 1);
    set_key(b, i, k);
    set_value(b, i, v);
}

/// Removes entry `i`, shifting later entries left and zeroing the freed slot.
pub fn remove_at(b: &mut [u8], i: usize) {
    let n = nr_entries(b);
    let vs = value_size(b);
    assert!(i < n, "remove_at past the end");
    let ko = NODE_HEADER_SIZE + 8 * i;
    b.copy_within(ko + 8..NODE_HEADER_SIZE + 8 * n, ko);
    put_u64(b, NODE_HEADER_SIZE + 8 * (n - 1), 0);
    let vbase = values_offset(b);
    b.copy_within(vbase + vs * (i + 1)..vbase + vs * n, vbase + vs * i);
    b[vbase + vs * (n - 1)..vbase + vs * n].fill(0);
    set_nr_entries(b, n - 1);
}

/// Keeps the first `n` entries and zeroes the slots after them.
pub fn truncate(b: &mut [u8], n: usize) {
    let old = nr_entries(b);
    assert!(n <= old);
    let vs = value_size(b);
    b[NODE_HEADER_SIZE + 8 * n..NODE_HEADER_SIZE + 8 * old].fill(0);
    let vbase = values_offset(b);
    b[vbase + vs * n..vbase + vs * old].fill(0);
    set_nr_entries(b, n);
}

/// Drops the first `n` entries, shifting the rest to the front.
pub fn drop_front(b: &mut [u8], n: usize) {
    let old = nr_entries(b);
    assert!(n <= old);
    let vs = value_size(b);
    b.copy_within(NODE_HEADER_SIZE + 8 * n..NODE_HEADER_SIZE + 8 * old, NODE_HEADER_SIZE);
    let vbase = values_offset(b);
    b.copy_within(vbase + vs * n..vbase + vs * old, vbase);
    truncate_tail(b, old, old - n);
}

fn truncate_tail(b: &mut [u8], old: usize, new: usize) {
    let vs = value_size(b);
    b[NODE_HEADER_SIZE + 8 * new..NODE_HEADER_SIZE + 8 * old].fill(0);
    let vbase = values_offset(b);
    b[vbase + vs * new..vbase + vs * old].fill(0);
    set_nr_entries(b, new);
}

/// Appends entries `src[from..to]` to the end of `dst` (same value size).
pub fn append_from(dst: &mut [u8], src: &[u8], from: usize, to: usize) {
    let vs = value_size(src);
    assert_eq!(vs, value_size(dst));
    let n = nr_entries(dst);
    let count = to - from;
    assert!(n + count <= max_entries_of(dst), "append_from overflows the node");
    let (sk, dk) = (NODE_HEADER_SIZE + 8 * from, NODE_HEADER_SIZE + 8 * n);
    dst[dk..dk + 8 * count].copy_from_slice(&src[sk..sk + 8 * count]);
    let (sv, dv) = (values_offset(src) + vs * from, values_offset(dst) + vs * n);
    dst[dv..dv + vs * count].copy_from_slice(&src[sv..sv + vs * count]);
    set_nr_entries(dst, n + count);
}

/// Prepends entries `src[from..to]` to the front of `dst` (same value size).
pub fn prepend_from(dst: &mut [u8], src: &[u8], from: usize, to: usize) {
    let vs = value_size(src);
    let n = nr_entries(dst);
    let count = to - from;
    assert!(n + count <= max_entries_of(dst), "prepend_from overflows the node");
    let kb = NODE_HEADER_SIZE;
    dst.copy_within(kb..kb + 8 * n, kb + 8 * count);
    dst[kb..kb + 8 * count].copy_from_slice(&src[kb + 8 * from..kb + 8 * to]);
    let (sv, dv) = (values_offset(src), values_offset(dst));
    dst.copy_within(dv..dv + vs * n, dv + vs * count);
    dst[dv..dv + vs * count].copy_from_slice(&src[sv + vs * from..sv + vs * to]);
    set_nr_entries(dst, n + count);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn capacities_match_the_spec_table() {
        assert_eq!(max_entries(4), 336);
        assert_eq!(max_entries(8), 252);
        assert_eq!(max_entries(16), 168);
        assert_eq!(max_entries(24), 126);
    }

    #[test]
    fn insert_remove_and_search_keep_keys_sorted() {
        let mut b = vec![0u8; META_BLOCK_SIZE];
        init(&mut b, true, 8);
        for k in [50u64, 10, 30, 20, 40] {
            let i = lower_bound(&b, k).map_or(0, |i| i + 1);
            insert_at(&mut b, i, k, &(k * 100).to_le_bytes());
        }
        let keys: Vec<u64> = (0..nr_entries(&b)).map(|i| key(&b, i)).collect();
        assert_eq!(keys, [10, 20, 30, 40, 50]);
        assert_eq!(find(&b, 30).map(|i| value_u64(&b, i)), Some(3000));
        assert_eq!(find(&b, 31), None);
        assert_eq!(lower_bound(&b, 5), None);
        assert_eq!(lower_bound(&b, 99), Some(4));
        remove_at(&mut b, 0);
        assert_eq!(key(&b, 0), 20);
        assert_eq!(value_u64(&b, 3), 5000);
        // Unused slots are zero, so the checksum of the block is reproducible.
        let mut fresh = vec![0u8; META_BLOCK_SIZE];
        init(&mut fresh, true, 8);
        for k in [20u64, 30, 40, 50] {
            let n = nr_entries(&fresh);
            insert_at(&mut fresh, n, k, &(k * 100).to_le_bytes());
        }
        assert_eq!(b, fresh);
    }

    #[test]
    fn moving_entries_between_nodes_keeps_order() {
        let mut a = vec![0u8; META_BLOCK_SIZE];
        let mut c = vec![0u8; META_BLOCK_SIZE];
        init(&mut a, true, 4);
        init(&mut c, true, 4);
        for k in 0..10u64 {
            insert_at(&mut a, k as usize, k, &(k as u32).to_le_bytes());
        }
        append_from(&mut c, &a, 5, 10);
        truncate(&mut a, 5);
        prepend_from(&mut c, &a, 3, 5);
        truncate(&mut a, 3);
        assert_eq!(
            (0..nr_entries(&c)).map(|i| key(&c, i)).collect::<Vec<_>>(),
            [3, 4, 5, 6, 7, 8, 9]
        );
        drop_front(&mut c, 2);
        assert_eq!(key(&c, 0), 5);
        assert_eq!(value(&c, 0), &5u32.to_le_bytes());
        assert_eq!(nr_entries(&a), 3);
    }

    #[test]
    fn header_check_rejects_bad_shapes() {
        let mut b = vec![0u8; META_BLOCK_SIZE];
        init(&mut b, true, 8);
        NodeHeader::check(&b, MetaBlock(1)).unwrap();
        put_u32(&mut b, OFF_FLAGS, 3);
        assert!(NodeHeader::check(&b, MetaBlock(1)).is_err());
        init(&mut b, true, 8);
        set_nr_entries(&mut b, 253);
        assert!(NodeHeader::check(&b, MetaBlock(1)).is_err());
        init(&mut b, false, 16);
        assert!(NodeHeader::check(&b, MetaBlock(1)).is_err());
    }
}
