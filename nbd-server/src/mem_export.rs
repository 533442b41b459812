//! `MemExport`: a sparse in-memory `Export` for tests and the example server.
//!
//! Data lives in 4 KiB pages allocated on first write; absent pages read as zeroes and
//! report `HOLE|ZERO`. `mark_shared` pretends a snapshot was taken (every allocated
//! page becomes "shared", allocation depth 2) until the page is written again.
//! An optional capacity limit makes page allocation fail with `ENOSPC`.
//! Everything is behind one `RwLock`: simple, and flushes are trivially global, so it
//! can promise multi-connection consistency.

use std::collections::{BTreeMap, BTreeSet};
use std::io;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::RwLock;

use nix::errno::Errno;

use crate::export::{Export, Extent, ZeroFlags, STATE_HOLE, STATE_ZERO};

/// Allocation granularity of `MemExport`.
pub const MEM_PAGE_BYTES: u64 = 4096;

#[derive(Default)]
struct Pages {
    data: BTreeMap<u64, Box<[u8]>>,
    shared: BTreeSet<u64>,
}

/// A sparse in-memory block device.
pub struct MemExport {
    size_bytes: u64,
    read_only: bool,
    capacity_pages: Option<u64>,
    pages: RwLock<Pages>,
    nr_flushes: AtomicU64,
}

fn errno(e: Errno) -> io::Error {
    io::Error::from_raw_os_error(e as i32)
}

impl MemExport {
    /// An all-zero, writable export of `size_bytes`.
    pub fn new(size_bytes: u64) -> Self {
        Self {
            size_bytes,
            read_only: false,
            capacity_pages: None,
            pages: RwLock::new(Pages::default()),
            nr_flushes: AtomicU64::new(0),
        }
    }

    /// Makes the export read-only (builder style).
    pub fn with_read_only(mut self, read_only: bool) -> Self {
        self.read_only = read_only;
        self
    }

    /// Limits allocated bytes; writes needing more pages fail with `ENOSPC`.
    pub fn with_capacity_bytes(mut self, bytes: u64) -> Self {
        self.capacity_pages = Some(bytes / MEM_PAGE_BYTES);
        self
    }

    /// Marks every allocated page as shared with another device, as a snapshot would.
    pub fn mark_shared(&self) {
        let mut p = self.pages.write().unwrap_or_else(|e| e.into_inner());
        let keys: Vec<u64> = p.data.keys().copied().collect();
        p.shared.extend(keys);
    }

    /// Bytes held in allocated pages.
    pub fn allocated_bytes(&self) -> u64 {
        let p = self.pages.read().unwrap_or_else(|e| e.into_inner());
        p.data.len() as u64 * MEM_PAGE_BYTES
    }

    /// FLUSH calls served so far.
    pub fn nr_flushes(&self) -> u64 {
        self.nr_flushes.load(Ordering::Relaxed)
    }

    fn check_range(&self, offset: u64, len: u64) -> io::Result<()> {
        match offset.checked_add(len) {
            Some(end) if end <= self.size_bytes => Ok(()),
            _ => Err(errno(Errno::EINVAL)),
        }
    }

    fn check_writable(&self, offset: u64, len: u64) -> io::Result<()> {
        if self.read_only {
            return Err(errno(Errno::EPERM));
        }
        self.check_range(offset, len)
    }

    /// Calls `f(page, start_in_page, byte_len, offset_in_request)` for each page piece.
    fn for_each_piece(offset: u64, len: u64, mut f: impl FnMut(u64, usize, usize, usize)) {
        let mut pos = offset;
        let end = offset + len;
        while pos < end {
            let page = pos / MEM_PAGE_BYTES;
            let start = pos % MEM_PAGE_BYTES;
            let n = (MEM_PAGE_BYTES - start).min(end - pos);
            f(page, start as usize, n as usize, (pos - offset) as usize);
            pos += n;
        }
    }

    /// Pages that `[offset, offset+len)` covers completely.
    fn whole_pages(offset: u64, len: u64) -> std::ops::Range<u64> {
        let first = offset.div_ceil(MEM_PAGE_BYTES);
        let last = (offset + len) / MEM_PAGE_BYTES;
        first..last.max(first)
    }

    /// Pages `[offset, offset+len)` touches that are not allocated yet.
    fn nr_new_pages(p: &Pages, offset: u64, len: u64) -> u64 {
        let mut n = 0;
        Self::for_each_piece(offset, len, |page, _, _, _| {
            n += u64::from(!p.data.contains_key(&page))
        });
        n
    }

    fn reserve(&self, p: &Pages, new_pages: u64) -> io::Result<()> {
        match self.capacity_pages {
            Some(cap) if p.data.len() as u64 + new_pages > cap => Err(errno(Errno::ENOSPC)),
            _ => Ok(()),
        }
    }

    fn page_mut(p: &mut Pages, page: u64) -> &mut [u8] {
        p.shared.remove(&page);
        p.data.entry(page).or_insert_with(|| vec![0u8; MEM_PAGE_BYTES as usize].into_boxed_slice())
    }

    /// Runs of `classify(page)` over the range, merged when equal.
    fn runs(
        &self,
        offset: u64,
        len: u64,
        classify: impl Fn(&Pages, u64) -> u32,
    ) -> Vec<(u64, u32)> {
        let p = self.pages.read().unwrap_or_else(|e| e.into_inner());
        let mut runs: Vec<(u64, u32)> = Vec::new();
        Self::for_each_piece(offset, len, |page, _, n, _| {
            let state = classify(&p, page);
            match runs.last_mut() {
                Some((l, s)) if *s == state => *l += n as u64,
                _ => runs.push((n as u64, state)),
            }
        });
        runs
    }
}

impl Export for MemExport {
    fn size_bytes(&self) -> u64 {
        self.size_bytes
    }

    fn read_only(&self) -> bool {
        self.read_only
    }

    fn can_multi_conn(&self) -> bool {
        true
    }

    fn preferred_block_size(&self) -> u32 {
        MEM_PAGE_BYTES as u32
    }

    fn read(&self, offset: u64, buf: &mut [u8]) -> io::Result<()> {
        self.check_range(offset, buf.len() as u64)?;
        let p = self.pages.read().unwrap_or_else(|e| e.into_inner());
        Self::for_each_piece(offset, buf.len() as u64, |page, start, n, at| {
            let dst = &mut buf[at..at + n];
            match p.data.get(&page) {
                Some(data) => dst.copy_from_slice(&data[start..start + n]),
                None => dst.fill(0),
            }
        });
        Ok(())
    }

    fn write(&self, offset: u64, data: &[u8], _fua: bool) -> io::Result<()> {
        self.check_writable(offset, data.len() as u64)?;
        let mut p = self.pages.write().unwrap_or_else(|e| e.into_inner());
        self.reserve(&p, Self::nr_new_pages(&p, offset, data.len() as u64))?;
        Self::for_each_piece(offset, data.len() as u64, |page, start, n, at| {
            Self::page_mut(&mut p, page)[start..start + n].copy_from_slice(&data[at..at + n]);
        });
        Ok(())
    }

    fn write_zeroes(&self, offset: u64, len: u64, flags: ZeroFlags) -> io::Result<()> {
        self.check_writable(offset, len)?;
        // Only unmapping is cheaper than writing zeroes (§7.4 thinly mapping).
        if flags.fast_only && !flags.may_trim {
            return Err(errno(Errno::ENOTSUP));
        }
        let mut p = self.pages.write().unwrap_or_else(|e| e.into_inner());
        if !flags.may_trim {
            self.reserve(&p, Self::nr_new_pages(&p, offset, len))?;
        }
        Self::for_each_piece(offset, len, |page, start, n, _| {
            let whole = n as u64 == MEM_PAGE_BYTES;
            if flags.may_trim && whole {
                p.data.remove(&page);
                p.shared.remove(&page);
            } else if !flags.may_trim || p.data.contains_key(&page) {
                Self::page_mut(&mut p, page)[start..start + n].fill(0);
            }
        });
        Ok(())
    }

    fn trim(&self, offset: u64, len: u64, _fua: bool) -> io::Result<()> {
        self.check_writable(offset, len)?;
        let mut p = self.pages.write().unwrap_or_else(|e| e.into_inner());
        for page in Self::whole_pages(offset, len) {
            p.data.remove(&page);
            p.shared.remove(&page);
        }
        Ok(())
    }

    fn flush(&self) -> io::Result<()> {
        self.nr_flushes.fetch_add(1, Ordering::Relaxed);
        Ok(())
    }

    fn block_status(&self, offset: u64, len: u64) -> io::Result<Vec<Extent>> {
        self.check_range(offset, len)?;
        let runs = self.runs(offset, len, |p, page| {
            if p.data.contains_key(&page) {
                0
            } else {
                STATE_HOLE | STATE_ZERO
            }
        });
        Ok(runs.into_iter().map(|(length, flags)| Extent { length, flags }).collect())
    }

    fn allocation_depth(&self, offset: u64, len: u64) -> io::Result<Vec<(u64, u32)>> {
        self.check_range(offset, len)?;
        Ok(self.runs(offset, len, |p, page| {
            match (p.data.contains_key(&page), p.shared.contains(&page)) {
                (false, _) => 0,
                (true, false) => 1,
                (true, true) => 2,
            }
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unwritten_memory_reads_as_zeroes_and_reports_holes() {
        let m = MemExport::new(64 << 10);
        let mut buf = vec![0xffu8; 8192];
        m.read(4096, &mut buf).unwrap();
        assert!(buf.iter().all(|&b| b == 0));
        let ext = m.block_status(0, 64 << 10).unwrap();
        assert_eq!(ext, vec![Extent { length: 64 << 10, flags: STATE_HOLE | STATE_ZERO }]);
    }

    #[test]
    fn unaligned_writes_round_trip_and_allocate_whole_pages() {
        let m = MemExport::new(64 << 10);
        let data: Vec<u8> = (0..5000u32).map(|i| i as u8).collect();
        m.write(4000, &data, false).unwrap();
        let mut back = vec![0u8; 5000];
        m.read(4000, &mut back).unwrap();
        assert_eq!(back, data);
        assert_eq!(m.allocated_bytes(), 3 * MEM_PAGE_BYTES);
        let ext = m.block_status(0, 16384).unwrap();
        assert_eq!(
            ext,
            vec![Extent { length: 12288, flags: 0 }, Extent { length: 4096, flags: 3 }]
        );
    }

    #[test]
    fn write_zeroes_may_unmap_whole_pages_and_no_hole_provisions() {
        let m = MemExport::new(64 << 10);
        m.write(0, &[1u8; 16384], false).unwrap();
        let trim = ZeroFlags { may_trim: true, ..ZeroFlags::default() };
        m.write_zeroes(2048, 8192, trim).unwrap();
        assert_eq!(m.allocated_bytes(), 3 * MEM_PAGE_BYTES);
        let mut buf = vec![9u8; 16384];
        m.read(0, &mut buf).unwrap();
        assert!(buf[..2048].iter().all(|&b| b == 1));
        assert!(buf[2048..10240].iter().all(|&b| b == 0));
        assert!(buf[10240..].iter().all(|&b| b == 1));
        m.write_zeroes(32768, 8192, ZeroFlags::default()).unwrap();
        assert_eq!(m.allocated_bytes(), 5 * MEM_PAGE_BYTES);
    }

    #[test]
    fn fast_zero_without_permission_to_unmap_is_enotsup() {
        let m = MemExport::new(64 << 10);
        let flags = ZeroFlags { may_trim: false, fast_only: true, fua: false };
        let err = m.write_zeroes(0, 4096, flags).unwrap_err();
        assert_eq!(err.raw_os_error(), Some(Errno::ENOTSUP as i32));
    }

    #[test]
    fn capacity_limit_yields_enospc() {
        let m = MemExport::new(64 << 10).with_capacity_bytes(8192);
        m.write(0, &[1u8; 8192], false).unwrap();
        let err = m.write(8192, &[1u8; 1], false).unwrap_err();
        assert_eq!(err.raw_os_error(), Some(Errno::ENOSPC as i32));
    }

    #[test]
    fn shared_pages_report_depth_two_until_rewritten() {
        let m = MemExport::new(64 << 10);
        m.write(0, &[1u8; 8192], false).unwrap();
        m.mark_shared();
        m.write(0, &[2u8; 10], false).unwrap();
        let depth = m.allocation_depth(0, 16384).unwrap();
        assert_eq!(depth, vec![(4096, 1), (4096, 2), (8192, 0)]);
    }

    #[test]
    fn read_only_memory_refuses_writes_with_eperm() {
        let m = MemExport::new(4096).with_read_only(true);
        let err = m.write(0, &[0u8; 1], false).unwrap_err();
        assert_eq!(err.raw_os_error(), Some(Errno::EPERM as i32));
    }
}
