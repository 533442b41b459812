//! A metadata device backed by a regular file (or a block device node).
//!
//! A regular file is preallocated (fallocate) whenever it is created or grown, so that
//! writing metadata never needs new space from the filesystem: a commit must not fail
//! because the data file filled the filesystem they share. A block device is opened
//! exclusively for writing (`blockdev::open_exclusive`); its size is the device's, and
//! "growing" it only takes in what the device already holds (the LV was extended first).

use super::blockdev::{device_size_bytes, is_block_device};
use super::{out_of_range, Block, BlockDevice};
use crate::limits::META_BLOCK_SIZE;
use std::fs::{File, OpenOptions};
use std::io;
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};

pub struct FileDevice {
    file: File,
    nr_blocks: AtomicU64,
    read_only: bool,
}

impl FileDevice {
    /// Opens an existing file; its length rounded down to 4 KiB is the device size.
    pub fn open(path: &Path, read_only: bool) -> io::Result<Self> {
        let file = super::blockdev::open_exclusive(path, read_only)?;
        Self::from_file(file, read_only)
    }

    /// Creates (or truncates) a file of `nr_blocks` blocks.
    pub fn create(path: &Path, nr_blocks: u64) -> io::Result<Self> {
        let file =
            OpenOptions::new().read(true).write(true).create(true).truncate(true).open(path)?;
        file.set_len(nr_blocks * META_BLOCK_SIZE as u64)?;
        preallocate(&file, 0, nr_blocks * META_BLOCK_SIZE as u64)?;
        Self::from_file(file, false)
    }

    pub fn from_file(file: File, read_only: bool) -> io::Result<Self> {
        let len = if is_block_device(&file)? {
            device_size_bytes(&file)?
        } else {
            file.metadata()?.len()
        };
        Ok(FileDevice { file, nr_blocks: AtomicU64::new(len / META_BLOCK_SIZE as u64), read_only })
    }

    pub fn file(&self) -> &File {
        &self.file
    }

    fn check(&self, block: u64) -> io::Result<u64> {
        let n = self.nr_blocks();
        if block >= n {
            return Err(out_of_range(block, n));
        }
        Ok(block * META_BLOCK_SIZE as u64)
    }
}

/// Allocates `[offset, offset + len)` of a regular file (a no-op for a block device),
/// growing it if needed. A filesystem without fallocate gets the zeros written instead.
pub fn preallocate(file: &File, offset: u64, len: u64) -> io::Result<()> {
    use nix::fcntl::{fallocate, FallocateFlags};
    use std::os::fd::AsRawFd;
    if len == 0 || !file.metadata()?.file_type().is_file() {
        return Ok(());
    }
    match fallocate(file.as_raw_fd(), FallocateFlags::empty(), offset as i64, len as i64) {
        Ok(()) => Ok(()),
        Err(nix::errno::Errno::EOPNOTSUPP) => {
            let zeros = vec![0u8; len.min(1 << 20) as usize];
            let mut done = 0;
            while done < len {
                let n = (len - done).min(zeros.len() as u64) as usize;
                file.write_all_at(&zeros[..n], offset + done)?;
                done += n as u64;
            }
            Ok(())
        }
        Err(e) => Err(e.into()),
    }
}

impl BlockDevice for FileDevice {
    fn nr_blocks(&self) -> u64 {
        self.nr_blocks.load(Ordering::Acquire)
    }

    fn read_block(&self, block: u64, buf: &mut Block) -> io::Result<()> {
        let off = self.check(block)?;
        self.file.read_exact_at(buf, off)
    }

    fn write_block(&self, block: u64, buf: &Block) -> io::Result<()> {
        if self.read_only {
            return Err(io::Error::new(io::ErrorKind::PermissionDenied, "device is read-only"));
        }
        let off = self.check(block)?;
        self.file.write_all_at(buf, off)
    }

    fn write_many(&self, writes: &[(u64, &Block)]) -> io::Result<()> {
        // Coalesce runs of consecutive blocks into one pwrite each.
        let mut sorted: Vec<&(u64, &Block)> = writes.iter().collect();
        sorted.sort_unstable_by_key(|w| w.0);
        let mut run: Vec<u8> = Vec::new();
        let mut i = 0;
        while i < sorted.len() {
            let start = sorted[i].0;
            let mut j = i;
            while j + 1 < sorted.len() && sorted[j + 1].0 == sorted[j].0 + 1 {
                j += 1;
            }
            if j == i {
                self.write_block(start, sorted[i].1)?;
            } else {
                let off = self.check(sorted[j].0).map(|_| start * META_BLOCK_SIZE as u64)?;
                run.clear();
                for w in &sorted[i..=j] {
                    run.extend_from_slice(w.1);
                }
                if self.read_only {
                    return Err(io::Error::new(
                        io::ErrorKind::PermissionDenied,
                        "device is read-only",
                    ));
                }
                self.file.write_all_at(&run, off)?;
            }
            i = j + 1;
        }
        Ok(())
    }

    fn flush(&self) -> io::Result<()> {
        if self.read_only {
            return Ok(());
        }
        self.file.sync_data()
    }

    fn capacity_blocks(&self) -> u64 {
        match is_block_device(&self.file).and_then(|dev| {
            Ok(if dev { device_size_bytes(&self.file)? / META_BLOCK_SIZE as u64 } else { 0 })
        }) {
            Ok(n) => n.max(self.nr_blocks()),
            Err(e) => {
                tracing::warn!("the size of the metadata device: {e}");
                self.nr_blocks()
            }
        }
    }

    fn resize(&self, nr_blocks: u64) -> io::Result<()> {
        let old = self.nr_blocks() * META_BLOCK_SIZE as u64;
        let new = nr_blocks * META_BLOCK_SIZE as u64;
        if is_block_device(&self.file)? {
            let have = device_size_bytes(&self.file)?;
            if new > have {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidInput,
                    format!(
                        "the metadata device holds {have} bytes, fewer than {new}: grow it first"
                    ),
                ));
            }
            self.nr_blocks.store(nr_blocks, Ordering::Release);
            return Ok(());
        }
        if new > old {
            // Space first: a grown file the filesystem cannot back is refused unchanged.
            preallocate(&self.file, old, new - old)?;
        }
        self.file.set_len(new)?;
        self.nr_blocks.store(nr_blocks, Ordering::Release);
        Ok(())
    }
}
