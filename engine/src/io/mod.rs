//! Block I/O: the one seam between the engine and storage.
//!
//! `BlockDevice` reads and writes whole 4 KiB metadata blocks. Implementations: a plain
//! file or a block device node (`FileDevice`; `blockdev` holds what is particular to
//! device nodes), memory (`MemDevice`) and a fault-injecting device (`FaultyDevice`)
//! that tests use to simulate power cuts and I/O errors (`FaultyDevice` and `FaultyData`
//! exist only with the `testing` cargo feature or in the engine's own unit tests). Devices
//! are shared between threads (`&self` everywhere); ordering between concurrent writers is
//! the caller's business.

pub mod blockdev;
mod data;
#[cfg(any(test, feature = "testing"))]
mod fault;
mod file;
mod mem;

#[cfg(any(test, feature = "testing"))]
pub use data::FaultyData;
pub use data::{DataDevice, FileData, IoMode, MemData};
#[cfg(any(test, feature = "testing"))]
pub use fault::{CrashPlan, FaultyDevice};
pub use file::{preallocate, FileDevice};
pub use mem::MemDevice;

use crate::limits::META_BLOCK_SIZE;
use std::io;

/// One metadata block's bytes.
pub type Block = [u8; META_BLOCK_SIZE];

/// A device of 4 KiB blocks.
pub trait BlockDevice: Send + Sync {
    /// Size in 4 KiB blocks.
    fn nr_blocks(&self) -> u64;

    fn read_block(&self, block: u64, buf: &mut Block) -> io::Result<()>;

    fn write_block(&self, block: u64, buf: &Block) -> io::Result<()>;

    /// Reads several blocks; implementations may batch. `bufs[i]` receives `blocks[i]`.
    fn read_many(&self, blocks: &[u64], bufs: &mut [Block]) -> io::Result<()> {
        for (b, buf) in blocks.iter().zip(bufs.iter_mut()) {
            self.read_block(*b, buf)?;
        }
        Ok(())
    }

    /// Writes several blocks; implementations may batch and reorder (nothing is durable
    /// before `flush` anyway).
    fn write_many(&self, writes: &[(u64, &Block)]) -> io::Result<()> {
        for (b, buf) in writes {
            self.write_block(*b, buf)?;
        }
        Ok(())
    }

    /// Makes every completed write durable.
    fn flush(&self) -> io::Result<()>;

    /// Changes the size; new blocks read as zeros.
    fn resize(&self, nr_blocks: u64) -> io::Result<()>;

    /// Blocks the storage underneath could hold now: more than `nr_blocks` once a block
    /// device has grown (an LV extend, `losetup -c`) and before `resize` takes it in.
    fn capacity_blocks(&self) -> u64 {
        self.nr_blocks()
    }
}

pub(crate) fn out_of_range(block: u64, nr_blocks: u64) -> io::Error {
    io::Error::new(
        io::ErrorKind::InvalidInput,
        format!("block {block} is beyond the end of the device ({nr_blocks} blocks)"),
    )
}
