//! Space-map blocks (spec §5): 2-bit bitmaps, index entries and the metadata index block.

use super::{le_u32, le_u64, put_u32, put_u64};
use crate::limits::{ENTRIES_PER_BITMAP, MAX_METADATA_BITMAPS};

/// Header bytes of a bitmap block (csum, not_used, blocknr).
pub const BITMAP_HEADER_SIZE: usize = 16;
/// 64-bit words of 2-bit entries in a bitmap block: 4080 / 8.
pub const BITMAP_WORDS: usize = 510;
const _: () = assert!(BITMAP_WORDS as u64 * 32 == ENTRIES_PER_BITMAP);

/// Size of an index entry, in the index block and in the data index tree's leaves.
pub const INDEX_ENTRY_SIZE: usize = 16;
/// Header bytes of the metadata index block (csum, padding, blocknr).
pub const INDEX_HEADER_SIZE: usize = 16;
const _: () = assert!(INDEX_HEADER_SIZE + INDEX_ENTRY_SIZE * MAX_METADATA_BITMAPS as usize == 4096);

/// The 2-bit count of entry `j` in a bitmap's words (spec §5.1: bit 2j is the high bit).
#[inline]
pub fn get_entry(words: &[u64; BITMAP_WORDS], j: usize) -> u8 {
    let w = words[j / 32];
    let p = 2 * (j % 32);
    ((((w >> p) & 1) << 1) | ((w >> (p + 1)) & 1)) as u8
}

/// Sets the 2-bit count of entry `j` (0..=3).
#[inline]
pub fn set_entry(words: &mut [u64; BITMAP_WORDS], j: usize, v: u8) {
    debug_assert!(v <= 3);
    let p = 2 * (j % 32);
    let w = &mut words[j / 32];
    *w &= !(3u64 << p);
    *w |= (((v as u64) >> 1) & 1) << p | ((v as u64) & 1) << (p + 1);
}

/// Bits at even positions 2j set where entry j of `w` is zero (free).
#[inline]
pub fn free_mask(w: u64) -> u64 {
    !(w | (w >> 1)) & 0x5555_5555_5555_5555
}

/// Decodes the entry words of a bitmap block.
pub fn decode_bitmap(b: &[u8], words: &mut [u64; BITMAP_WORDS]) {
    for (i, w) in words.iter_mut().enumerate() {
        *w = le_u64(b, BITMAP_HEADER_SIZE + 8 * i);
    }
}

/// Encodes a bitmap block (header zero; `checksum::seal` stamps csum and blocknr).
pub fn encode_bitmap(words: &[u64; BITMAP_WORDS], b: &mut [u8]) {
    b[..BITMAP_HEADER_SIZE].fill(0);
    for (i, w) in words.iter().enumerate() {
        put_u64(b, BITMAP_HEADER_SIZE + 8 * i, *w);
    }
}

/// One bitmap's entry in an index (spec §4.5 "index entry").
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct IndexEntry {
    pub blocknr: u64,
    pub nr_free: u32,
    pub none_free_before: u32,
}

impl IndexEntry {
    pub fn decode(b: &[u8]) -> Self {
        IndexEntry { blocknr: le_u64(b, 0), nr_free: le_u32(b, 8), none_free_before: le_u32(b, 12) }
    }

    pub fn encode(&self, b: &mut [u8]) {
        put_u64(b, 0, self.blocknr);
        put_u32(b, 8, self.nr_free);
        put_u32(b, 12, self.none_free_before);
    }

    pub fn to_bytes(self) -> [u8; INDEX_ENTRY_SIZE] {
        let mut b = [0u8; INDEX_ENTRY_SIZE];
        self.encode(&mut b);
        b
    }
}

/// Decodes the used entries (the first `nr_bitmaps`) of a metadata index block.
pub fn decode_index_block(b: &[u8], nr_bitmaps: usize) -> Vec<IndexEntry> {
    (0..nr_bitmaps)
        .map(|i| IndexEntry::decode(&b[INDEX_HEADER_SIZE + INDEX_ENTRY_SIZE * i..]))
        .collect()
}

/// Encodes a metadata index block: the entries, then zeros.
pub fn encode_index_block(entries: &[IndexEntry], b: &mut [u8]) {
    assert!(entries.len() as u64 <= MAX_METADATA_BITMAPS);
    b.fill(0);
    for (i, e) in entries.iter().enumerate() {
        e.encode(&mut b[INDEX_HEADER_SIZE + INDEX_ENTRY_SIZE * i..]);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bitmap_bit_order_matches_the_kernel() {
        // Count 1 runs read as 0xAA, count 2 as 0x55, count ≥3 as 0xFF (spec §5.1).
        let mut w = [0u64; BITMAP_WORDS];
        for j in 0..32 {
            set_entry(&mut w, j, 1);
        }
        for j in 32..64 {
            set_entry(&mut w, j, 2);
        }
        for j in 64..96 {
            set_entry(&mut w, j, 3);
        }
        let mut b = vec![0u8; 4096];
        encode_bitmap(&w, &mut b);
        assert!(b[16..24].iter().all(|&x| x == 0xAA));
        assert!(b[24..32].iter().all(|&x| x == 0x55));
        assert!(b[32..40].iter().all(|&x| x == 0xFF));
        let mut back = [0u64; BITMAP_WORDS];
        decode_bitmap(&b, &mut back);
        assert_eq!(back, w);
        assert_eq!(get_entry(&back, 5), 1);
        assert_eq!(get_entry(&back, 40), 2);
        assert_eq!(free_mask(back[0]), 0);
        assert_eq!(free_mask(back[3]), 0x5555_5555_5555_5555);
    }

    #[test]
    fn index_entry_round_trip() {
        let e = IndexEntry { blocknr: 9, nr_free: 1000, none_free_before: 3 };
        assert_eq!(IndexEntry::decode(&e.to_bytes()), e);
        let mut b = vec![0xFFu8; 4096];
        encode_index_block(&[e, e], &mut b);
        assert_eq!(decode_index_block(&b, 2), vec![e, e]);
        assert!(b[48..].iter().all(|&x| x == 0));
    }
}
