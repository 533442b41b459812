//! The data device: byte ranges of a (sparse) file. Data block N lives at byte
//! N × data_block_size. Holes read as zeros, which is what makes a freshly allocated or a
//! hole-punched block read as zeros without a zeroing write.
//!
//! A block device as data device has no holes: its size is the device's (`set_len` only
//! checks that the device is large enough), discards are `BLKDISCARD` and zeroing is
//! `BLKZEROOUT` (`blockdev`).
//!
//! `FileData` does its I/O with pread/pwrite, or with io_uring when the kernel offers it:
//! one submission carries every block of a multi-block request (the blocks of a 1 MiB
//! request are usually scattered over the data file), and each thread has its own ring so
//! no lock is shared. `MemData` and `FaultyData` are for tests (`FaultyData` exists only with
//! the `testing` feature or in the engine's unit tests).

use nix::fcntl::{fallocate, FallocateFlags};
use std::cell::RefCell;
use std::collections::HashMap;
use std::fs::{File, OpenOptions};
use std::io;
use std::os::fd::{AsFd, AsRawFd};
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::sync::Mutex;

/// Byte-addressed storage for data blocks.
pub trait DataDevice: Send + Sync {
    fn len_bytes(&self) -> u64;

    fn set_len(&self, len: u64) -> io::Result<()>;

    fn read_at(&self, offset: u64, buf: &mut [u8]) -> io::Result<()>;

    fn write_at(&self, offset: u64, data: &[u8]) -> io::Result<()>;

    /// Reads several ranges; implementations may issue them together.
    fn read_many(&self, ops: &mut [(u64, &mut [u8])]) -> io::Result<()> {
        for (off, buf) in ops.iter_mut() {
            self.read_at(*off, buf)?;
        }
        Ok(())
    }

    /// Writes several ranges; implementations may issue them together.
    fn write_many(&self, ops: &[(u64, &[u8])]) -> io::Result<()> {
        for (off, data) in ops {
            self.write_at(*off, data)?;
        }
        Ok(())
    }

    /// Copies `len` bytes from `src` to `dst` (the copy-on-write of a whole data block).
    fn copy(&self, src: u64, dst: u64, len: u64) -> io::Result<()> {
        let mut buf = vec![0u8; len as usize];
        self.read_at(src, &mut buf)?;
        self.write_at(dst, &buf)
    }

    /// A hint that a range will not be read soon: its clean cached pages may go, and the
    /// memory they held serves the next writes. Contents never change.
    fn drop_cached(&self, _offset: u64, _len: u64) {}

    /// Deallocates a range (a hole punch in a file, `BLKDISCARD` on a device). It reads as
    /// zeros afterwards only where [`DataDevice::discard_zeroes`] says so: a device may
    /// keep the old bytes.
    fn punch_hole(&self, offset: u64, len: u64) -> io::Result<()>;

    /// Makes a range read as zeros: a hole punch where that zeroes, else `BLKZEROOUT` or
    /// written zeros.
    fn zero_range(&self, offset: u64, len: u64) -> io::Result<()> {
        self.punch_hole(offset, len)
    }

    /// True when a punched range and a grown tail read as zeros (a sparse file); false for
    /// a block device, whose discards and growth promise nothing about the bytes.
    fn discard_zeroes(&self) -> bool {
        true
    }

    /// Makes every completed write durable.
    fn sync(&self) -> io::Result<()>;

    /// "io_uring" or "pread/pwrite": which path this device uses.
    fn io_path(&self) -> &'static str {
        "memory"
    }
}

/// How `FileData` does its reads and writes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum IoMode {
    /// io_uring if the kernel offers it, else pread/pwrite.
    #[default]
    Auto,
    Uring,
    Posix,
}

/// Entries of each thread's ring: enough for a 32 MiB request in 64 KiB blocks.
const RING_ENTRIES: u32 = 512;

thread_local! {
    static RING: RefCell<Option<io_uring::IoUring>> = const { RefCell::new(None) };
}

pub struct FileData {
    file: File,
    uring: bool,
    /// A block device node (discards use BLKDISCARD) rather than a regular file.
    block_device: bool,
}

// BLKDISCARD = _IO(0x12, 119): discard the byte range [start, start + len) of a block device.
nix::ioctl_write_ptr_bad!(blkdiscard, 0x1277, [u64; 2]);

impl FileData {
    /// Opens a data file, or a block device (exclusively: `blockdev::open_exclusive`).
    pub fn open(path: &Path, mode: IoMode) -> io::Result<Self> {
        let file = super::blockdev::open_exclusive(path, false)?;
        Self::from_file(file, mode)
    }

    pub fn create(path: &Path, len: u64, mode: IoMode) -> io::Result<Self> {
        let file = OpenOptions::new().read(true).write(true).create_new(true).open(path)?;
        file.set_len(len)?;
        Self::from_file(file, mode)
    }

    pub fn from_file(file: File, mode: IoMode) -> io::Result<Self> {
        let uring = match mode {
            IoMode::Posix => false,
            IoMode::Uring => {
                io_uring::IoUring::new(RING_ENTRIES)?;
                true
            }
            IoMode::Auto => io_uring::IoUring::new(RING_ENTRIES).is_ok(),
        };
        use std::os::unix::fs::FileTypeExt;
        let block_device = file.metadata()?.file_type().is_block_device();
        Ok(FileData { file, uring, block_device })
    }

    /// Runs `ops` through this thread's ring: all submitted at once, all awaited.
    /// Short transfers are finished with pread/pwrite.
    ///
    /// Every exit path, errors included, first waits for every operation it pushed (see
    /// [`uring::wait_all`]), so the ring is empty whenever this returns: no operation can
    /// outlive the caller's buffers, and the next call never reaps a stale completion.
    fn uring_batch(&self, ops: &mut [(u64, *mut u8, usize)], write: bool) -> io::Result<()> {
        let fd = io_uring::types::Fd(self.file.as_raw_fd());
        RING.with(|cell| -> io::Result<()> {
            let mut slot = cell.borrow_mut();
            if slot.is_none() {
                *slot = Some(io_uring::IoUring::new(RING_ENTRIES)?);
            }
            let ring = slot.as_mut().expect("ring just created");
            for chunk in ops.chunks_mut(RING_ENTRIES as usize) {
                let results = uring::run_chunk(ring, fd, chunk, write)?;
                for ((off, ptr, len), res) in chunk.iter().zip(results) {
                    if res < 0 {
                        return Err(io::Error::from_raw_os_error(-res));
                    }
                    let n = res as usize;
                    if n < *len {
                        // SAFETY: `ptr..ptr+len` is the caller's buffer, borrowed for this
                        // whole call; the ring no longer references it (run_chunk waited
                        // for every completion).
                        let rest = unsafe { std::slice::from_raw_parts_mut(ptr.add(n), len - n) };
                        if write {
                            self.file.write_all_at(rest, off + n as u64)?;
                        } else {
                            self.file.read_exact_at(rest, off + n as u64)?;
                        }
                    }
                }
            }
            Ok(())
        })
    }
}

/// The ring protocol of [`FileData::uring_batch`], apart so its error paths can be tested
/// with injected failures.
mod uring {
    use io_uring::{opcode, types, IoUring};
    use std::io;

    /// Pushes one chunk (at most the ring's size), submits it and waits for every pushed
    /// operation. Returns each operation's result (bytes or -errno), in `chunk` order.
    ///
    /// If a push fails half-way, the pushed operations are still submitted and awaited
    /// before the error is returned; a failed submit is retried until every pushed
    /// operation has completed. The ring is empty on return, whatever the outcome.
    pub(super) fn run_chunk(
        ring: &mut IoUring,
        fd: types::Fd,
        chunk: &[(u64, *mut u8, usize)],
        write: bool,
    ) -> io::Result<Vec<i32>> {
        let mut pushed = 0;
        let mut push_error = None;
        for (i, (off, ptr, len)) in chunk.iter().enumerate() {
            let e = if write {
                opcode::Write::new(fd, *ptr as *const u8, *len as u32).offset(*off).build()
            } else {
                opcode::Read::new(fd, *ptr, *len as u32).offset(*off).build()
            }
            .user_data(i as u64);
            // SAFETY: each buffer is borrowed by the caller for this whole call, and every
            // path out of this function (the push error below included) first passes
            // through `wait_all`, which returns only once every pushed operation has
            // completed (or aborts the process if that cannot be established). So the
            // kernel never touches a buffer after it is freed or reused.
            if let Err(e) = push(ring, &e) {
                push_error = Some(e);
                break;
            }
            pushed += 1;
        }
        let (results, submit_error) = wait_all(ring, pushed);
        if let Some(e) = push_error.or(submit_error) {
            return Err(e);
        }
        Ok(results)
    }

    fn push(ring: &mut IoUring, e: &io_uring::squeue::Entry) -> io::Result<()> {
        #[cfg(test)]
        if inject::take_push_failure() {
            return Err(io::Error::other("io_uring submission queue full (injected)"));
        }
        // SAFETY: the caller (`run_chunk`) upholds the buffer lifetime; see its comment.
        unsafe { ring.submission().push(e) }
            .map_err(|_| io::Error::other("io_uring submission queue full"))
    }

    /// Submits what was pushed and reaps until all `pushed` operations have completed.
    /// Transient failures of the submit (EINTR, EAGAIN, EBUSY) are retried; another
    /// failure is remembered and returned, after the wait goes on a bounded number of
    /// times. If the ring still cannot confirm every completion, the kernel may yet write
    /// into buffers we are about to hand back, so the process aborts rather than return.
    fn wait_all(ring: &mut IoUring, pushed: usize) -> (Vec<i32>, Option<io::Error>) {
        let mut results: Vec<Option<i32>> = vec![None; pushed];
        let mut seen = 0;
        let mut error = None;
        let mut hard_failures = 0;
        loop {
            for cqe in ring.completion() {
                match results.get_mut(cqe.user_data() as usize) {
                    Some(slot @ None) => {
                        *slot = Some(cqe.result());
                        seen += 1;
                    }
                    // Cannot happen while every call drains its own operations; counted
                    // as nothing so a stray completion can never complete ours.
                    _ => tracing::error!("io_uring: stray completion {}", cqe.user_data()),
                }
            }
            if seen == pushed {
                break;
            }
            match submit_and_wait(ring, pushed - seen) {
                Ok(_) => {}
                Err(e) if is_transient(&e) => {}
                Err(e) => {
                    hard_failures += 1;
                    if hard_failures > MAX_HARD_SUBMIT_FAILURES {
                        tracing::error!("io_uring: cannot reap {} operations: {e}", pushed - seen);
                        std::process::abort();
                    }
                    error.get_or_insert(e);
                }
            }
        }
        (results.into_iter().map(|r| r.unwrap_or(0)).collect(), error)
    }

    /// How many non-transient submit failures the drain tolerates before it aborts.
    const MAX_HARD_SUBMIT_FAILURES: u32 = 16;

    fn is_transient(e: &io::Error) -> bool {
        matches!(e.raw_os_error(), Some(libc_errno::EINTR | libc_errno::EAGAIN | libc_errno::EBUSY))
    }

    mod libc_errno {
        pub const EINTR: i32 = nix::errno::Errno::EINTR as i32;
        pub const EAGAIN: i32 = nix::errno::Errno::EAGAIN as i32;
        pub const EBUSY: i32 = nix::errno::Errno::EBUSY as i32;
    }

    fn submit_and_wait(ring: &mut IoUring, want: usize) -> io::Result<usize> {
        #[cfg(test)]
        if let Some(e) = inject::take_submit_error() {
            return Err(e);
        }
        ring.submit_and_wait(want)
    }

    /// Test-only failure injection for this thread's next pushes and submits.
    #[cfg(test)]
    pub(super) mod inject {
        use std::cell::{Cell, RefCell};
        use std::io;

        thread_local! {
            static PUSH_FAIL_AT: Cell<Option<usize>> = const { Cell::new(None) };
            static SUBMIT_ERRORS: RefCell<Vec<i32>> = const { RefCell::new(Vec::new()) };
        }

        /// The `n`th push from now (0 = the next) fails as if the queue were full.
        pub fn fail_push_at(n: usize) {
            PUSH_FAIL_AT.with(|c| c.set(Some(n)));
        }

        /// The next submits fail with these errnos, in order, without entering the kernel.
        pub fn fail_submits(errnos: &[i32]) {
            SUBMIT_ERRORS.with(|c| *c.borrow_mut() = errnos.iter().rev().copied().collect());
        }

        pub(super) fn take_push_failure() -> bool {
            PUSH_FAIL_AT.with(|c| match c.get() {
                Some(0) => {
                    c.set(None);
                    true
                }
                Some(n) => {
                    c.set(Some(n - 1));
                    false
                }
                None => false,
            })
        }

        pub(super) fn take_submit_error() -> Option<io::Error> {
            SUBMIT_ERRORS.with(|c| c.borrow_mut().pop()).map(io::Error::from_raw_os_error)
        }
    }
}

impl DataDevice for FileData {
    fn len_bytes(&self) -> u64 {
        let len = if self.block_device {
            super::blockdev::device_size_bytes(&self.file)
        } else {
            self.file.metadata().map(|m| m.len())
        };
        len.unwrap_or_else(|e| {
            tracing::warn!("the size of the data device: {e}");
            0
        })
    }

    fn set_len(&self, len: u64) -> io::Result<()> {
        if !self.block_device {
            return self.file.set_len(len);
        }
        let have = super::blockdev::device_size_bytes(&self.file)?;
        if len > have {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("the data device holds {have} bytes, fewer than {len}: grow it first"),
            ));
        }
        Ok(())
    }

    fn read_at(&self, offset: u64, buf: &mut [u8]) -> io::Result<()> {
        self.file.read_exact_at(buf, offset)
    }

    fn write_at(&self, offset: u64, data: &[u8]) -> io::Result<()> {
        self.file.write_all_at(data, offset)
    }

    fn read_many(&self, ops: &mut [(u64, &mut [u8])]) -> io::Result<()> {
        if !self.uring || ops.len() < 2 {
            for (off, buf) in ops.iter_mut() {
                self.file.read_exact_at(buf, *off)?;
            }
            return Ok(());
        }
        let mut raw: Vec<(u64, *mut u8, usize)> =
            ops.iter_mut().map(|(o, b)| (*o, b.as_mut_ptr(), b.len())).collect();
        self.uring_batch(&mut raw, false)
    }

    fn write_many(&self, ops: &[(u64, &[u8])]) -> io::Result<()> {
        if !self.uring || ops.len() < 2 {
            for (off, data) in ops {
                self.file.write_all_at(data, *off)?;
            }
            return Ok(());
        }
        // The ring only reads these buffers; the cast to *mut is for the shared helper.
        let mut raw: Vec<(u64, *mut u8, usize)> =
            ops.iter().map(|(o, d)| (*o, d.as_ptr() as *mut u8, d.len())).collect();
        self.uring_batch(&mut raw, true)
    }

    fn copy(&self, src: u64, dst: u64, len: u64) -> io::Result<()> {
        let (mut s, mut d, mut left) = (src as i64, dst as i64, len as usize);
        while left > 0 {
            let fd = self.file.as_fd();
            match nix::fcntl::copy_file_range(fd, Some(&mut s), fd, Some(&mut d), left) {
                Ok(0) => break,
                Ok(n) => left -= n,
                Err(nix::errno::Errno::EINTR) => continue,
                Err(_) => break,
            }
        }
        if left > 0 {
            // copy_file_range refused (or hit EOF): finish with an ordinary copy.
            let done = len - left as u64;
            let mut buf = vec![0u8; left];
            self.file.read_exact_at(&mut buf, src + done)?;
            self.file.write_all_at(&buf, dst + done)?;
        }
        Ok(())
    }

    fn drop_cached(&self, offset: u64, len: u64) {
        use nix::fcntl::{posix_fadvise, PosixFadviseAdvice};
        let (offset, len) = (offset as i64, len as i64);
        // A hint: if the kernel declines, the pages just stay cached.
        if let Err(e) = posix_fadvise(
            self.file.as_raw_fd(),
            offset,
            len,
            PosixFadviseAdvice::POSIX_FADV_DONTNEED,
        ) {
            tracing::debug!("fadvise(DONTNEED) of {len} bytes at {offset}: {e}");
        }
    }

    fn punch_hole(&self, offset: u64, len: u64) -> io::Result<()> {
        if self.block_device {
            let range = [offset, len];
            // SAFETY: BLKDISCARD reads exactly one [u64; 2] through the pointer, which points
            // at `range`, alive and initialised for the whole call; the fd is ours and open.
            unsafe { blkdiscard(self.file.as_raw_fd(), &range) }.map_err(io::Error::from)?;
            return Ok(());
        }
        let flags = FallocateFlags::FALLOC_FL_PUNCH_HOLE | FallocateFlags::FALLOC_FL_KEEP_SIZE;
        match fallocate(self.file.as_raw_fd(), flags, offset as i64, len as i64) {
            Ok(()) => Ok(()),
            Err(nix::errno::Errno::EOPNOTSUPP) => {
                // A file system without holes: write the zeros instead.
                let zeros = vec![0u8; len.min(1 << 20) as usize];
                let mut done = 0;
                while done < len {
                    let n = (len - done).min(zeros.len() as u64) as usize;
                    self.file.write_all_at(&zeros[..n], offset + done)?;
                    done += n as u64;
                }
                Ok(())
            }
            Err(e) => Err(e.into()),
        }
    }

    fn zero_range(&self, offset: u64, len: u64) -> io::Result<()> {
        if self.block_device {
            return super::blockdev::zero_out(&self.file, offset, len);
        }
        self.punch_hole(offset, len)
    }

    fn discard_zeroes(&self) -> bool {
        !self.block_device
    }

    fn sync(&self) -> io::Result<()> {
        self.file.sync_data()
    }

    fn io_path(&self) -> &'static str {
        if self.uring {
            "io_uring"
        } else {
            "pread/pwrite"
        }
    }
}

const PAGE: u64 = 4096;

/// Sparse pages in memory.
#[derive(Default, Clone)]
struct Pages {
    pages: HashMap<u64, Box<[u8; PAGE as usize]>>,
    len: u64,
}

impl Pages {
    fn read(&self, offset: u64, buf: &mut [u8]) -> io::Result<()> {
        if offset + buf.len() as u64 > self.len {
            return Err(io::Error::new(io::ErrorKind::UnexpectedEof, "read past the end"));
        }
        let mut done = 0usize;
        while done < buf.len() {
            let pos = offset + done as u64;
            let (p, o) = (pos / PAGE, (pos % PAGE) as usize);
            let n = (PAGE as usize - o).min(buf.len() - done);
            match self.pages.get(&p) {
                Some(page) => buf[done..done + n].copy_from_slice(&page[o..o + n]),
                None => buf[done..done + n].fill(0),
            }
            done += n;
        }
        Ok(())
    }

    fn write(&mut self, offset: u64, data: &[u8]) {
        let mut done = 0usize;
        while done < data.len() {
            let pos = offset + done as u64;
            let (p, o) = (pos / PAGE, (pos % PAGE) as usize);
            let n = (PAGE as usize - o).min(data.len() - done);
            let page = self.pages.entry(p).or_insert_with(|| Box::new([0; PAGE as usize]));
            page[o..o + n].copy_from_slice(&data[done..done + n]);
            done += n;
        }
        self.len = self.len.max(offset + data.len() as u64);
    }

    fn punch(&mut self, offset: u64, len: u64) {
        let end = offset + len;
        let mut pos = offset;
        while pos < end {
            let (p, o) = (pos / PAGE, pos % PAGE);
            let n = (PAGE - o).min(end - pos);
            if o == 0 && n == PAGE {
                self.pages.remove(&p);
            } else if let Some(page) = self.pages.get_mut(&p) {
                page[o as usize..(o + n) as usize].fill(0);
            }
            pos += n;
        }
    }

    fn set_len(&mut self, len: u64) {
        if len < self.len {
            self.punch(len, self.len - len);
            self.pages.retain(|p, _| p * PAGE < len);
        }
        self.len = len;
    }
}

/// A data device in memory. It has no cache to drop; it records the `drop_cached` hints.
#[derive(Default)]
pub struct MemData {
    pages: Mutex<Pages>,
    cache_drops: Mutex<Vec<(u64, u64)>>,
}

impl MemData {
    pub fn new(len: u64) -> Self {
        let pages = Mutex::new(Pages { pages: HashMap::new(), len });
        MemData { pages, cache_drops: Mutex::default() }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Pages> {
        self.pages.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Bytes actually stored (not holes), to check that freed blocks were punched.
    pub fn allocated_bytes(&self) -> u64 {
        self.lock().pages.len() as u64 * PAGE
    }

    /// The (offset, len) of every `drop_cached` hint since the last call.
    pub fn take_cache_drops(&self) -> Vec<(u64, u64)> {
        std::mem::take(&mut *self.cache_drops.lock().unwrap_or_else(|e| e.into_inner()))
    }
}

impl DataDevice for MemData {
    fn len_bytes(&self) -> u64 {
        self.lock().len
    }
    fn set_len(&self, len: u64) -> io::Result<()> {
        self.lock().set_len(len);
        Ok(())
    }
    fn read_at(&self, offset: u64, buf: &mut [u8]) -> io::Result<()> {
        self.lock().read(offset, buf)
    }
    fn write_at(&self, offset: u64, data: &[u8]) -> io::Result<()> {
        self.lock().write(offset, data);
        Ok(())
    }
    fn drop_cached(&self, offset: u64, len: u64) {
        self.cache_drops.lock().unwrap_or_else(|e| e.into_inner()).push((offset, len));
    }
    fn punch_hole(&self, offset: u64, len: u64) -> io::Result<()> {
        self.lock().punch(offset, len);
        Ok(())
    }
    fn sync(&self) -> io::Result<()> {
        Ok(())
    }
}

#[cfg(any(test, feature = "testing"))]
mod faulty;
#[cfg(any(test, feature = "testing"))]
pub use faulty::FaultyData;

#[cfg(test)]
mod uring_tests {
    //! The ring's error paths: an interrupted wait, a push that fails half-way and a submit
    //! that fails hard must each leave the ring empty, so the next call on the thread
    //! neither reaps stale completions nor lets the kernel write into freed buffers.
    use super::uring::inject;
    use super::*;

    const BLOCK: usize = 4096;

    fn device() -> Option<(tempfile::TempDir, FileData)> {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("data");
        match FileData::create(&path, 64 * BLOCK as u64, IoMode::Uring) {
            Ok(dev) => Some((dir, dev)),
            Err(e) => {
                eprintln!("SKIP: io_uring unavailable here: {e}");
                assert!(std::env::var_os("CI").is_none(), "io_uring unavailable under CI: {e}");
                None
            }
        }
    }

    fn pattern(i: usize) -> Vec<u8> {
        (0..BLOCK).map(|b| (i * 31 + b % 251) as u8).collect()
    }

    fn write_blocks(dev: &FileData, ids: &[usize]) -> io::Result<()> {
        let bufs: Vec<Vec<u8>> = ids.iter().map(|&i| pattern(i)).collect();
        let ops: Vec<(u64, &[u8])> =
            ids.iter().zip(&bufs).map(|(&i, b)| ((i * BLOCK) as u64, b.as_slice())).collect();
        dev.write_many(&ops)
    }

    fn read_blocks(dev: &FileData, ids: &[usize]) -> io::Result<Vec<Vec<u8>>> {
        let mut bufs = vec![vec![0u8; BLOCK]; ids.len()];
        let mut ops: Vec<(u64, &mut [u8])> = ids
            .iter()
            .zip(bufs.iter_mut())
            .map(|(&i, b)| ((i * BLOCK) as u64, b.as_mut_slice()))
            .collect();
        dev.read_many(&mut ops)?;
        Ok(bufs)
    }

    fn ring_is_empty() -> bool {
        RING.with(|cell| {
            let mut slot = cell.borrow_mut();
            let ring = slot.as_mut().expect("a ring was used");
            ring.submission().is_empty() && ring.completion().is_empty()
        })
    }

    fn assert_reads_back(dev: &FileData, ids: &[usize]) {
        let got = read_blocks(dev, ids).expect("read");
        for (&i, buf) in ids.iter().zip(got) {
            assert!(buf == pattern(i), "block {i} reads back wrong");
        }
    }

    #[test]
    fn interrupted_waits_are_retried_and_the_batch_completes() {
        let Some((_dir, dev)) = device() else { return };
        let eintr = nix::errno::Errno::EINTR as i32;
        inject::fail_submits(&[eintr, eintr, eintr]);
        write_blocks(&dev, &[0, 1, 2, 3, 4, 5, 6, 7]).expect("EINTR is retried");
        assert!(ring_is_empty());
        inject::fail_submits(&[eintr]);
        assert_reads_back(&dev, &[0, 1, 2, 3, 4, 5, 6, 7]);
        assert!(ring_is_empty());
    }

    #[test]
    fn a_push_failing_half_way_still_drains_what_was_pushed() {
        let Some((_dir, dev)) = device() else { return };
        write_blocks(&dev, &[10, 11, 12, 13, 14, 15]).expect("write");
        inject::fail_push_at(3);
        let err = read_blocks(&dev, &[10, 11, 12, 13, 14, 15]).expect_err("the push failure");
        assert!(err.to_string().contains("injected"), "{err}");
        assert!(ring_is_empty(), "the three pushed reads were reaped before returning");
        // The next call on this thread sees only its own completions.
        assert_reads_back(&dev, &[13, 14, 15, 10]);
        assert!(ring_is_empty());
    }

    #[test]
    fn a_hard_submit_failure_is_returned_only_after_the_drain() {
        let Some((_dir, dev)) = device() else { return };
        write_blocks(&dev, &[20, 21, 22, 23]).expect("write");
        inject::fail_submits(&[nix::errno::Errno::EIO as i32]);
        let err = write_blocks(&dev, &[30, 31, 32, 33]).expect_err("the submit failure");
        assert_eq!(err.raw_os_error(), Some(nix::errno::Errno::EIO as i32));
        assert!(ring_is_empty(), "the pushed writes completed before the error returned");
        // The writes did reach the file (they were in the ring), and later batches work.
        assert_reads_back(&dev, &[30, 31, 32, 33, 20, 21, 22, 23]);
        assert!(ring_is_empty());
    }
}
