//! Block device nodes as pool devices: their size (`BLKGETSIZE64`), zeroing
//! (`BLKZEROOUT`), and the exclusive open (`O_EXCL`) that keeps a second pool, a mount or
//! the kernel's dm-thin off a device a pool uses.
//!
//! A device has no holes: its size is fixed by whoever made it (an LV, a loop device), and
//! `BLKDISCARD` may leave old bytes behind, so only `BLKZEROOUT` (or written zeros) makes a
//! range read as zeros. Every ioctl here passes a pointer to a local that lives for the
//! whole call; the fds are the caller's, open for the call.

use std::fs::{File, OpenOptions};
use std::io;
use std::os::fd::AsRawFd;
use std::os::unix::fs::{FileTypeExt, OpenOptionsExt};
use std::path::Path;

// BLKGETSIZE64 = _IOR(0x12, 114, size_t): the device's size in bytes.
nix::ioctl_read!(blkgetsize64, 0x12, 114, u64);
// BLKZEROOUT = _IO(0x12, 127): zero [start, start + len) (the device may unmap it, but it
// reads zeros afterwards).
nix::ioctl_write_ptr_bad!(blkzeroout, 0x127f, [u64; 2]);

/// True when `file` is a block device node.
pub fn is_block_device(file: &File) -> io::Result<bool> {
    Ok(file.metadata()?.file_type().is_block_device())
}

/// The size in bytes of the block device open as `file`.
pub fn device_size_bytes(file: &File) -> io::Result<u64> {
    let mut size: u64 = 0;
    // SAFETY: BLKGETSIZE64 writes one u64 through the pointer, which points at `size`, a
    // live local for the whole call; on error nothing is written and `size` is not used.
    unsafe { blkgetsize64(file.as_raw_fd(), &mut size) }.map_err(io::Error::from)?;
    Ok(size)
}

/// Makes `[offset, offset + len)` of a block device read as zeros.
pub fn zero_out(file: &File, offset: u64, len: u64) -> io::Result<()> {
    let range = [offset, len];
    // SAFETY: BLKZEROOUT reads exactly one [u64; 2] through the pointer, which points at
    // `range`, alive and initialised for the whole call, on success and on error alike.
    unsafe { blkzeroout(file.as_raw_fd(), &range) }.map_err(io::Error::from)?;
    Ok(())
}

/// The size of `path` if it is a block device, `None` for anything else (or nothing).
pub fn block_device_size(path: &Path) -> io::Result<Option<u64>> {
    match std::fs::metadata(path) {
        Ok(m) if m.file_type().is_block_device() => {
            let f = File::open(path)?;
            device_size_bytes(&f).map(Some)
        }
        Ok(_) => Ok(None),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e),
    }
}

/// Opens `path` for reading (and writing unless `read_only`). A block device opened for
/// writing gets `O_EXCL`, which the kernel grants one opener at a time (a second pool, a
/// mounted file system or a dm target gets `EBUSY`: see [`is_busy`]); read-only opens (the
/// checkers) are not exclusive.
pub fn open_exclusive(path: &Path, read_only: bool) -> io::Result<File> {
    let is_dev = std::fs::metadata(path)?.file_type().is_block_device();
    let mut o = OpenOptions::new();
    o.read(true).write(!read_only);
    if is_dev && !read_only {
        o.custom_flags(nix::libc::O_EXCL);
    }
    o.open(path)
}

/// True when an open failed because another opener holds the device exclusively.
pub fn is_busy(e: &io::Error) -> bool {
    e.raw_os_error() == Some(nix::libc::EBUSY)
}
