//! A device in memory: what unit tests and the power-cut simulation run on.

use super::{out_of_range, Block, BlockDevice};
use crate::limits::META_BLOCK_SIZE;
use std::io;
use std::sync::Mutex;

#[derive(Default)]
pub struct MemDevice {
    blocks: Mutex<Vec<Box<Block>>>,
}

impl MemDevice {
    pub fn new(nr_blocks: u64) -> Self {
        let blocks = (0..nr_blocks).map(|_| Box::new([0u8; META_BLOCK_SIZE])).collect();
        MemDevice { blocks: Mutex::new(blocks) }
    }

    /// A device holding a copy of `image` (length a multiple of 4 KiB).
    pub fn from_image(image: &[u8]) -> Self {
        assert_eq!(image.len() % META_BLOCK_SIZE, 0, "image length must be a multiple of 4 KiB");
        let blocks = image
            .chunks_exact(META_BLOCK_SIZE)
            .map(|c| {
                let mut b = Box::new([0u8; META_BLOCK_SIZE]);
                b.copy_from_slice(c);
                b
            })
            .collect();
        MemDevice { blocks: Mutex::new(blocks) }
    }

    /// The whole device as bytes.
    pub fn image(&self) -> Vec<u8> {
        let blocks = self.lock();
        let mut out = Vec::with_capacity(blocks.len() * META_BLOCK_SIZE);
        for b in blocks.iter() {
            out.extend_from_slice(&b[..]);
        }
        out
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<Box<Block>>> {
        // A panic while holding this lock leaves plain bytes behind: still usable.
        self.blocks.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl BlockDevice for MemDevice {
    fn nr_blocks(&self) -> u64 {
        self.lock().len() as u64
    }

    fn read_block(&self, block: u64, buf: &mut Block) -> io::Result<()> {
        let blocks = self.lock();
        let b =
            blocks.get(block as usize).ok_or_else(|| out_of_range(block, blocks.len() as u64))?;
        buf.copy_from_slice(&b[..]);
        Ok(())
    }

    fn write_block(&self, block: u64, buf: &Block) -> io::Result<()> {
        let mut blocks = self.lock();
        let n = blocks.len() as u64;
        let b = blocks.get_mut(block as usize).ok_or_else(|| out_of_range(block, n))?;
        b.copy_from_slice(buf);
        Ok(())
    }

    fn flush(&self) -> io::Result<()> {
        Ok(())
    }

    fn resize(&self, nr_blocks: u64) -> io::Result<()> {
        self.lock().resize_with(nr_blocks as usize, || Box::new([0u8; META_BLOCK_SIZE]));
        Ok(())
    }
}
