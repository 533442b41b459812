//! Editing metadata images in tests: find blocks of each kind, corrupt them, reseal.
#![allow(dead_code)]

use std::path::Path;

use thinly_engine::format::checksum::{seal, BlockKind};
use thinly_engine::format::node;
use thinly_engine::format::space_map::{
    decode_bitmap, decode_index_block, encode_bitmap, get_entry, set_entry, BITMAP_WORDS,
};
use thinly_engine::format::superblock::Superblock;
use thinly_engine::units::MetaBlock;

pub const BS: usize = 4096;

/// A metadata image in memory.
pub struct Image {
    pub bytes: Vec<u8>,
}

impl Image {
    pub fn load(path: &Path) -> Image {
        Image { bytes: std::fs::read(path).expect("read image") }
    }

    pub fn save(&self, path: &Path) {
        std::fs::write(path, &self.bytes).expect("write image");
    }

    pub fn block(&self, b: u64) -> &[u8] {
        &self.bytes[b as usize * BS..(b as usize + 1) * BS]
    }

    pub fn block_mut(&mut self, b: u64) -> &mut [u8] {
        &mut self.bytes[b as usize * BS..(b as usize + 1) * BS]
    }

    pub fn sb(&self) -> Superblock {
        Superblock::decode(self.block(0))
    }

    pub fn reseal(&mut self, b: u64, kind: BlockKind) {
        seal(self.block_mut(b), MetaBlock(b), kind);
    }

    pub fn flip(&mut self, b: u64, offset: usize) {
        self.block_mut(b)[offset] ^= 0x10;
    }

    pub fn zero(&mut self, b: u64) {
        self.block_mut(b).fill(0);
    }

    /// First leaf below `root` (following child 0), and the path's internal nodes.
    pub fn first_leaf(&self, root: u64) -> (u64, Vec<u64>) {
        let mut b = root;
        let mut path = Vec::new();
        while !node::is_leaf(self.block(b)) {
            path.push(b);
            b = node::value_u64(self.block(b), 0);
        }
        (b, path)
    }

    /// (dev_id, bottom root) of every device in the top-level tree's first leaf.
    pub fn devices(&self) -> Vec<(u64, u64)> {
        let (leaf, _) = self.first_leaf(self.sb().data_mapping_root.0);
        let l = self.block(leaf);
        (0..node::nr_entries(l)).map(|i| (node::key(l, i), node::value_u64(l, i))).collect()
    }

    /// The device whose bottom tree has an internal root (two levels or more).
    pub fn deep_device(&self) -> (u64, u64) {
        self.devices()
            .into_iter()
            .find(|(_, r)| !node::is_leaf(self.block(*r)))
            .expect("a device with an internal root")
    }

    pub fn metadata_bitmap(&self) -> u64 {
        let m = self.sb().metadata_sm_root;
        decode_index_block(self.block(m.bitmap_root.0), 1)[0].blocknr
    }

    pub fn data_bitmap(&self) -> u64 {
        let d = self.sb().data_sm_root;
        let leaf = self.block(d.bitmap_root.0);
        u64::from_le_bytes(node::value(leaf, 0)[..8].try_into().expect("8 bytes"))
    }

    /// Reads and rewrites entry `j` of bitmap block `b`.
    pub fn bitmap_entry(&self, b: u64, j: usize) -> u8 {
        let mut w = Box::new([0u64; BITMAP_WORDS]);
        decode_bitmap(self.block(b), &mut w);
        get_entry(&w, j)
    }

    pub fn set_bitmap_entry(&mut self, b: u64, j: usize, v: u8) {
        let mut w = Box::new([0u64; BITMAP_WORDS]);
        decode_bitmap(self.block(b), &mut w);
        set_entry(&mut w, j, v);
        encode_bitmap(&w, self.block_mut(b));
        self.reseal(b, BlockKind::Bitmap);
    }

    /// Rewrites a node's entry count (keeping its slots) and reseals it.
    pub fn set_nr_entries(&mut self, b: u64, n: usize) {
        node::set_nr_entries(self.block_mut(b), n);
        self.reseal(b, BlockKind::Node);
    }
}
