//! The data path of one volume: read, write (+FUA), write_zeroes, discard, flush and
//! block_status over byte ranges of any alignment.

use super::stats::{Clock, CommitCause, OpKind, PoolCounter, VolumeCounter as C};
use super::{Inner, Parked, PoolError, Result, SnapshotCache, VolumeState};
use crate::thin::RunDetail;
use crate::units::{DataBlock, DevId, VirtBlock};
use std::sync::atomic::Ordering;
use std::sync::Arc;

/// A run of bytes of a volume in one state (block_status, read_sparse).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Extent {
    pub len_bytes: u64,
    /// Backed by a data block (else it reads as zeros).
    pub mapped: bool,
    /// Mapped and shared with another device (a snapshot or origin). Worked out only for
    /// `block_status` with `RunDetail::Sharing`; false otherwise.
    pub shared: bool,
}

/// Appends `len_bytes` in one state to `runs`, merging with the last run if it is alike.
fn push_extent(runs: &mut Vec<Extent>, len_bytes: u64, mapped: bool, shared: bool) {
    match runs.last_mut() {
        Some(e) if e.mapped == mapped && e.shared == shared => e.len_bytes += len_bytes,
        _ if len_bytes == 0 => {}
        _ => runs.push(Extent { len_bytes, mapped, shared }),
    }
}

/// A handle on one volume; cheap to clone, usable from many threads. The pool counts open
/// handles (see `SnapshotCache`).
pub struct Volume {
    pub(super) inner: Arc<Inner>,
    pub(super) state: Arc<VolumeState>,
}

impl Volume {
    pub(super) fn new(inner: Arc<Inner>, state: Arc<VolumeState>) -> Volume {
        state.handles.fetch_add(1, Ordering::Relaxed);
        inner.open_handles.fetch_add(1, Ordering::Relaxed);
        Volume { inner, state }
    }

    /// No other volume of the pool has an open handle (a hint: it may change at once).
    fn only_one_open(&self) -> bool {
        let total = self.inner.open_handles.load(Ordering::Relaxed);
        total == self.state.handles.load(Ordering::Relaxed)
    }
}

impl Clone for Volume {
    fn clone(&self) -> Volume {
        Volume::new(self.inner.clone(), self.state.clone())
    }
}

impl Drop for Volume {
    fn drop(&mut self) {
        self.state.handles.fetch_sub(1, Ordering::Relaxed);
        self.inner.open_handles.fetch_sub(1, Ordering::Relaxed);
    }
}

/// One block's share of a request.
struct Piece {
    vblock: u64,
    /// Offset within the block, and length.
    offset: u64,
    len: u64,
}

/// Where a read puts its bytes.
enum ReadInto<'a> {
    /// All of them, unmapped ones as zeros.
    Whole(&'a mut [u8]),
    /// Appended, mapped ones only.
    Mapped(&'a mut Vec<u8>),
}

/// What a write puts into a block.
#[derive(Clone, Copy)]
enum Payload<'a> {
    Bytes(&'a [u8]),
    Zeros,
}

fn pieces(block_size: u64, offset: u64, len: u64) -> impl Iterator<Item = Piece> {
    let end = offset + len;
    let mut pos = offset;
    std::iter::from_fn(move || {
        if pos >= end {
            return None;
        }
        let (vblock, off) = (pos / block_size, pos % block_size);
        let n = (block_size - off).min(end - pos);
        pos += n;
        Some(Piece { vblock, offset: off, len: n })
    })
}

impl Volume {
    pub fn name(&self) -> &str {
        &self.state.name
    }

    pub fn dev_id(&self) -> DevId {
        DevId(self.state.dev)
    }

    pub fn size_bytes(&self) -> u64 {
        self.state.size_bytes.load(Ordering::SeqCst)
    }

    pub fn is_read_only(&self) -> bool {
        self.state.read_only
    }

    pub fn block_size_bytes(&self) -> u64 {
        self.inner.block_size
    }

    fn check_range(&self, offset: u64, len: u64) -> Result<()> {
        if self.state.deleted.load(Ordering::SeqCst) {
            return Err(PoolError::NoVolume(self.state.name.clone()));
        }
        let size = self.size_bytes();
        if offset.checked_add(len).is_none_or(|end| end > size) {
            return Err(PoolError::Invalid(format!(
                "{len} bytes at {offset} run past the end of volume {} ({size} bytes)",
                self.state.name
            )));
        }
        Ok(())
    }

    fn check_write(&self, offset: u64, len: u64) -> Result<()> {
        self.check_range(offset, len)?;
        if self.state.read_only {
            return Err(PoolError::ReadOnly(format!("volume {} is read-only", self.state.name)));
        }
        Ok(())
    }

    /// Reads `buf.len()` bytes at `offset`. Unmapped blocks read as zeros without touching
    /// the data file; mapped ones are read together (one io_uring submission).
    pub fn read(&self, offset: u64, buf: &mut [u8]) -> Result<()> {
        let (t, len) = (Clock::start(), buf.len() as u64);
        self.read_blocks(offset, len, ReadInto::Whole(buf))?;
        self.done(OpKind::Read, len, false, t);
        Ok(())
    }

    /// Counts a completed request in the statistics.
    fn done(&self, kind: OpKind, bytes: u64, fua: bool, t: Clock) {
        self.inner.stats.op_done(&self.state.counters, kind, bytes, fua, t);
    }

    /// Reads `len` bytes at `offset` like `read`, but appends to `out` only the mapped
    /// bytes, in order: unmapped ones are neither read nor zero-filled. Returns the layout,
    /// as `block_status` with `RunDetail::Mapped` would give it (so `shared` is false),
    /// found by the same lookups that found the data. On error `out` may have grown.
    pub fn read_sparse(&self, offset: u64, len: u64, out: &mut Vec<u8>) -> Result<Vec<Extent>> {
        let t = Clock::start();
        let layout = self.read_blocks(offset, len, ReadInto::Mapped(out))?;
        self.done(OpKind::Read, len, false, t);
        Ok(layout)
    }

    /// The read path: the blocks' cells are held across the data I/O (so no data block can
    /// be freed and reused under it) and one section under the metadata lock looks every
    /// block up. Returns the layout of what it read.
    fn read_blocks(&self, offset: u64, len: u64, into: ReadInto) -> Result<Vec<Extent>> {
        let _gate = self.state.gate.read().unwrap_or_else(|e| e.into_inner());
        self.check_range(offset, len)?;
        let inner = &self.inner;
        let bs = inner.block_size;
        let parts: Vec<Piece> = pieces(bs, offset, len).collect();
        let _cells: Vec<_> =
            parts.iter().map(|p| inner.prison.lock(self.state.dev, p.vblock, false)).collect();
        let mut targets = Vec::with_capacity(parts.len());
        {
            let mut meta = inner.meta();
            for p in &parts {
                let m = meta.md.lookup(DevId(self.state.dev), VirtBlock(p.vblock));
                targets.push(m.map_err(|e| inner.metadata_failed(&mut meta, e))?);
            }
        }
        let (mut rest, zero_fill) = match into {
            ReadInto::Whole(buf) => (buf, true),
            ReadInto::Mapped(out) => {
                let mapped: u64 = parts
                    .iter()
                    .zip(&targets)
                    .filter(|(_, t)| t.is_some())
                    .map(|(p, _)| p.len)
                    .sum();
                let start = out.len();
                out.resize(start + mapped as usize, 0);
                (&mut out[start..], false)
            }
        };
        let mut layout: Vec<Extent> = Vec::new();
        let mut ops: Vec<(u64, &mut [u8])> = Vec::new();
        for (p, target) in parts.iter().zip(targets) {
            push_extent(&mut layout, p.len, target.is_some(), false);
            if target.is_none() && !zero_fill {
                continue;
            }
            let (chunk, tail) = std::mem::take(&mut rest).split_at_mut(p.len as usize);
            rest = tail;
            match target {
                Some(m) => ops.push((m.data_block.0 * bs + p.offset, chunk)),
                None => chunk.fill(0),
            }
        }
        inner.data.read_many(&mut ops)?;
        Ok(layout)
    }

    /// Writes `data` at `offset`; with `fua`, the write is durable when this returns.
    pub fn write(&self, offset: u64, data: &[u8], fua: bool) -> Result<()> {
        let t = Clock::start();
        let _gate = self.state.gate.read().unwrap_or_else(|e| e.into_inner());
        self.check_write(offset, data.len() as u64)?;
        let mut done = 0usize;
        for p in pieces(self.inner.block_size, offset, data.len() as u64) {
            let bytes = &data[done..done + p.len as usize];
            done += p.len as usize;
            self.inner.retry_when_full(|| self.write_piece(&p, Payload::Bytes(bytes)))?;
        }
        self.finish_write(fua)?;
        self.done(OpKind::Write, data.len() as u64, fua, t);
        Ok(())
    }

    /// Writes zeros: whole blocks are unmapped when `may_trim` (they read as zeros), else
    /// provisioned as zeros; partial blocks are zero-filled where mapped.
    pub fn write_zeroes(&self, offset: u64, len: u64, may_trim: bool, fua: bool) -> Result<()> {
        let t = Clock::start();
        let _gate = self.state.gate.read().unwrap_or_else(|e| e.into_inner());
        self.check_write(offset, len)?;
        let bs = self.inner.block_size;
        for p in pieces(bs, offset, len) {
            if p.len == bs && may_trim {
                self.unmap_block(p.vblock)?;
            } else if p.len == bs || self.is_mapped(p.vblock)? {
                self.inner.retry_when_full(|| self.write_piece(&p, Payload::Zeros))?;
            }
        }
        self.finish_write(fua)?;
        self.done(OpKind::WriteZeroes, len, fua, t);
        Ok(())
    }

    /// Discards (unmaps) every whole block in the range; partial blocks are left as they are
    /// (a discard is advisory). Freed data blocks are hole-punched after the next commit.
    pub fn discard(&self, offset: u64, len: u64, fua: bool) -> Result<()> {
        let t = Clock::start();
        let _gate = self.state.gate.read().unwrap_or_else(|e| e.into_inner());
        self.check_write(offset, len)?;
        let bs = self.inner.block_size;
        let first = offset.div_ceil(bs);
        let end = (offset + len) / bs;
        if first < end {
            for vblock in self.mapped_blocks(first, end)? {
                self.unmap_block(vblock)?;
            }
        }
        self.finish_write(fua)?;
        self.done(OpKind::Trim, len, fua, t);
        Ok(())
    }

    /// Makes every completed write durable (a commit).
    pub fn flush(&self) -> Result<()> {
        let t = Clock::start();
        self.inner.flush(CommitCause::Flush)?;
        self.done(OpKind::Flush, 0, false, t);
        Ok(())
    }

    /// The range as runs of mapped and unmapped bytes; with `RunDetail::Sharing` mapped
    /// runs are also split into exclusive and shared, which costs reference-count reads
    /// for every mapping (NBD `qemu:allocation-depth` needs it, `base:allocation` not).
    pub fn block_status(&self, offset: u64, len: u64, detail: RunDetail) -> Result<Vec<Extent>> {
        let _gate = self.state.gate.read().unwrap_or_else(|e| e.into_inner());
        self.check_range(offset, len)?;
        if len == 0 {
            return Ok(Vec::new());
        }
        let bs = self.inner.block_size;
        let (first, end) = (offset / bs, (offset + len).div_ceil(bs));
        let runs = {
            let mut meta = self.inner.settled(self.inner.meta(), Some(self.state.dev));
            let r = meta.md.runs(DevId(self.state.dev), VirtBlock(first), VirtBlock(end), detail);
            r.map_err(|e| self.inner.metadata_failed(&mut meta, e))?
        };
        let mut out: Vec<Extent> = Vec::with_capacity(runs.len());
        for r in runs {
            let start = (r.begin * bs).max(offset);
            let stop = ((r.begin + r.len) * bs).min(offset + len);
            if stop > start {
                push_extent(&mut out, stop - start, r.mapped, r.shared);
            }
        }
        Ok(out)
    }

    fn finish_write(&self, fua: bool) -> Result<()> {
        if fua {
            self.inner.flush(CommitCause::Fua)?;
        }
        Ok(())
    }

    fn is_mapped(&self, vblock: u64) -> Result<bool> {
        let mut meta = self.inner.settled(self.inner.meta(), Some(self.state.dev));
        let r = meta.md.lookup(DevId(self.state.dev), VirtBlock(vblock));
        Ok(r.map_err(|e| self.inner.metadata_failed(&mut meta, e))?.is_some())
    }

    fn mapped_blocks(&self, first: u64, end: u64) -> Result<Vec<u64>> {
        let mut meta = self.inner.settled(self.inner.meta(), Some(self.state.dev));
        let mut out = Vec::new();
        let r = meta.md.for_each_mapping(
            DevId(self.state.dev),
            VirtBlock(first),
            VirtBlock(end),
            &mut |v, _| {
                out.push(v.0);
                Ok(std::ops::ControlFlow::Continue(()))
            },
        );
        r.map_err(|e| self.inner.metadata_failed(&mut meta, e))?;
        Ok(out)
    }

    fn unmap_block(&self, vblock: u64) -> Result<()> {
        let inner = &self.inner;
        let _cell = inner.prison.lock(self.state.dev, vblock, true);
        let mut meta = inner.meta();
        inner.check_writable(&meta)?;
        let r = meta.md.remove_mapping(DevId(self.state.dev), VirtBlock(vblock));
        if r.map_err(|e| inner.metadata_failed(&mut meta, e))? {
            self.state.counters.add(C::BlocksUnmapped, 1);
        }
        Ok(())
    }

    /// One block of a write: in place, copy-on-write or provisioning (ARCHITECTURE.md).
    fn write_piece(&self, p: &Piece, payload: Payload) -> Result<()> {
        let inner = &self.inner;
        let bs = inner.block_size;
        let dev = DevId(self.state.dev);
        let cell = inner.prison.lock(self.state.dev, p.vblock, true);
        let (target, copy_from, prepare, overlapped, snapshot_cache) = {
            let mut meta = inner.meta();
            inner.check_writable(&meta)?;
            let existing = meta
                .md
                .lookup(dev, VirtBlock(p.vblock))
                .map_err(|e| inner.metadata_failed(&mut meta, e))?;
            match existing {
                Some(m) if !m.maybe_shared => {
                    drop(meta);
                    self.write_bytes(m.data_block.0 * bs + p.offset, p.len, payload)?;
                    inner.data_writes.fetch_add(1, Ordering::SeqCst);
                    self.count_block_write(p.len, 0, 0);
                    return Ok(());
                }
                _ => {
                    let (mut m, b) = inner.alloc_block(meta);
                    let b = b?;
                    // Not known to read as zeros: prepared below for a partial write.
                    let prepare = !m.holes.take(b.0) && m.config.settings.zeroing;
                    // Provisioned while a commit syncs the data file: see `Meta::parked`.
                    let overlapped = m.syncing.then_some(m.commit_gen);
                    let snapshot_cache = m.config.settings.snapshot_cache;
                    drop(m);
                    (b, existing.map(|m| m.data_block), prepare, overlapped, snapshot_cache)
                }
            }
        };
        let whole = p.len == bs;
        // The old copy is the snapshots' now: with no other volume open, nobody reads it
        // soon, and the memory of its cached pages can take the new copy (`SnapshotCache`).
        let drop_old = copy_from
            .filter(|_| snapshot_cache == SnapshotCache::Auto && self.only_one_open())
            .map(|src| src.0 * bs);
        let io = (|| -> Result<()> {
            // A partial write over a shared block: the new block, whole.
            let mut merged = None;
            match copy_from {
                // The bytes the write leaves alone come from the shared block: the new
                // block is written whole, in one write, as a whole-block write is, so it
                // takes one folio of the page cache like the old copy whose memory it may
                // reuse (a copy in pieces makes small folios, and freed small folios do
                // not make a large one).
                Some(src) if !whole && bs <= WHOLE_BLOCK_COPY_MAX => {
                    let mut block = vec![0u8; bs as usize];
                    inner.data.read_at(src.0 * bs, &mut block)?;
                    let piece = &mut block[p.offset as usize..(p.offset + p.len) as usize];
                    match payload {
                        Payload::Bytes(b) => piece.copy_from_slice(b),
                        Payload::Zeros => piece.fill(0),
                    }
                    merged = Some(block);
                }
                // Larger blocks: copy_file_range around the written bytes.
                Some(src) if !whole => {
                    let (src, dst) = (src.0 * bs, target.0 * bs);
                    let end = p.offset + p.len;
                    if p.offset > 0 {
                        inner.data.copy(src, dst, p.offset)?;
                    }
                    if end < bs {
                        inner.data.copy(src + end, dst + end, bs - end)?;
                    }
                }
                // A new block not known to be a hole (see the pool's Zeroing paragraph):
                // the metadata has just allocated it to this write, so zeroing it can
                // destroy nothing the write would not overwrite anyway.
                None if !whole && prepare => {
                    inner.data.zero_range(target.0 * bs, bs)?;
                    if inner.data.discard_zeroes() {
                        inner.stats.add(PoolCounter::HolePunches, 1);
                        inner.stats.add(PoolCounter::HolePunchBytes, bs);
                    }
                }
                _ => {}
            }
            // Before the write, whose new pages may then reuse that memory.
            if let Some(old) = drop_old {
                inner.data.drop_cached(old, bs);
            }
            match merged {
                Some(block) => Ok(inner.data.write_at(target.0 * bs, &block)?),
                None => self.write_bytes(target.0 * bs + p.offset, p.len, payload),
            }
        })();
        let mut meta = inner.meta();
        if let Err(e) = io {
            inner.end_provision(&mut meta, Some(target));
            return Err(e);
        }
        if let Err(e) = inner.check_writable(&meta) {
            inner.end_provision(&mut meta, None);
            return Err(e);
        }
        if overlapped.is_some_and(|gen| meta.committing && meta.commit_gen == gen) {
            let (vblock, block, cell) = (p.vblock, target, cell.into_held());
            meta.parked.push(Parked { dev: dev.0, vblock, block, cell });
            inner.end_provision(&mut meta, None);
        } else {
            let r = meta.md.insert_mapping(dev, VirtBlock(p.vblock), target).map(drop);
            inner.end_provision(&mut meta, None);
            r.map_err(|e| inner.metadata_failed(&mut meta, e))?;
        }
        inner.data_writes.fetch_add(1, Ordering::SeqCst);
        // The data file's bytes by cause: the write's own, what the copy-on-write copied,
        // what the preparation of a new block zeroed (see `stats`).
        let rest = bs - p.len;
        match copy_from {
            Some(_) => self.count_block_write(p.len, rest, 0),
            None if !whole && prepare => self.count_block_write(p.len, 0, rest),
            None => self.count_block_write(p.len, 0, 0),
        }
        self.state.counters.add(C::BlocksProvisioned, 1);
        if copy_from.is_some() {
            self.state.counters.add(C::CowBreaks, 1);
        }
        Ok(())
    }

    /// Counts one block written, with the data-file bytes it cost by cause.
    fn count_block_write(&self, client: u64, cow: u64, zeroing: u64) {
        let c = &self.state.counters;
        c.add(C::BlockWrites, 1);
        c.add(C::DataClientBytes, client);
        c.add(C::DataCowBytes, cow);
        c.add(C::DataZeroingBytes, zeroing);
    }

    /// Zeros block `vblock` from `from` to its end if it is mapped (the caller holds the
    /// volume's gate exclusively; the range may lie past the volume's end).
    pub(super) fn zero_block_tail(&self, vblock: u64, from: u64) -> Result<()> {
        if self.is_mapped(vblock)? {
            let len = self.inner.block_size - from;
            self.write_piece(&Piece { vblock, offset: from, len }, Payload::Zeros)?;
        }
        Ok(())
    }

    fn write_bytes(&self, at: u64, len: u64, payload: Payload) -> Result<()> {
        match payload {
            Payload::Bytes(b) => self.inner.data.write_at(at, b)?,
            Payload::Zeros if len == self.inner.block_size => {
                self.inner.data.zero_range(at, len)?;
                if self.inner.data.discard_zeroes() {
                    self.inner.stats.add(PoolCounter::HolePunches, 1);
                    self.inner.stats.add(PoolCounter::HolePunchBytes, len);
                }
            }
            Payload::Zeros => self.inner.data.write_at(at, &vec![0u8; len as usize])?,
        }
        Ok(())
    }
}

/// Copy-on-write of a partial write reads the old block into memory and writes the new one
/// whole up to this block size; beyond it, it copies around the written bytes in the kernel.
const WHOLE_BLOCK_COPY_MAX: u64 = 1 << 20;

/// The data block size must make whole-block arithmetic safe for a request of any size.
const _: () = assert!(crate::limits::MAX_DATA_BLOCK_SECTORS as u64 * 512 <= 1 << 30);

impl Inner {
    pub(super) fn flush(&self, cause: CommitCause) -> Result<()> {
        let meta = self.meta();
        let (_meta, r) = self.commit_locked_by(meta, cause);
        r
    }
}

#[allow(dead_code)]
fn _assert_send_sync() {
    fn is<T: Send + Sync>() {}
    is::<Volume>();
    let _ = DataBlock(0);
}
