//! Commits, data-block allocation (out-of-space policies, the low water mark), failure, and
//! the commit timer.

use super::stats::{Clock, CommitCause, PoolCounter};
use super::{Inner, Meta, Mode, OutOfSpacePolicy, PoolError, PoolEvent, Result};
use crate::units::{DataBlock, DevId, VirtBlock};
use std::sync::atomic::Ordering;
use std::sync::{Arc, MutexGuard};
use std::time::{Duration, Instant};

type Guard<'a> = MutexGuard<'a, Meta>;

impl Inner {
    /// Commits whatever changed since the last commit. One commit runs at a time; callers
    /// that arrive during one wait for it and then commit only what it did not cover (group
    /// commit). Steps:
    /// 1. stop new allocations and wait for in-flight provisioning, so every allocated
    ///    block has its mapping (a crash never leaks one);
    /// 2. sync the data file with the metadata lock released. Reads, writes and new
    ///    provisioning go on; a mapping provisioned now is parked, not inserted, because
    ///    its data may miss this sync;
    /// 3. wait for provisioning again (it parks), then commit the metadata with the parked
    ///    blocks counted free, hole-punch what the transaction freed, and insert the parked
    ///    mappings into the next transaction.
    pub(super) fn commit_locked_by<'a>(
        &'a self,
        mut meta: Guard<'a>,
        cause: CommitCause,
    ) -> (Guard<'a>, Result<()>) {
        let clock = Clock::start();
        while meta.committing {
            meta = self.provisioned.wait(meta).unwrap_or_else(|e| e.into_inner());
        }
        meta.committing = true;
        meta.commit_gen += 1;
        meta = self.drain_provisioning(meta);
        let writes = self.data_writes.load(Ordering::SeqCst);
        let needed = meta.md.has_changes() || writes != meta.committed_writes;
        let mut r = match (&meta.mode, needed) {
            (_, false) => Ok(()),
            (Mode::ReadOnly(reason), true) => Err(PoolError::ReadOnly(reason.clone())),
            _ => {
                meta.commit_waiting = false;
                meta.syncing = true;
                self.provisioned.notify_all();
                drop(meta);
                let synced = self.data.sync();
                meta = self.meta();
                meta.syncing = false;
                meta = self.drain_provisioning(meta);
                synced.map_err(PoolError::from)
            }
        };
        if needed && r.is_ok() {
            let written = meta.md.nr_metadata_blocks_written();
            r = self.commit_metadata(&mut meta, writes);
            if r.is_ok() {
                let blocks = meta.md.nr_metadata_blocks_written() - written;
                self.stats.committed(cause, blocks, clock);
            }
        }
        meta.committing = false;
        meta.commit_waiting = false;
        self.provisioned.notify_all();
        match &r {
            Ok(()) => {
                self.check_low_water_mark(&mut meta);
                self.check_metadata_low_water_mark(&mut meta);
                self.space.notify_all();
            }
            Err(e) => self.fail(&mut meta, &format!("commit failed: {e}")),
        }
        (meta, r)
    }

    /// `commit_locked_by` for a management operation.
    pub(super) fn commit_locked<'a>(&'a self, meta: Guard<'a>) -> (Guard<'a>, Result<()>) {
        self.commit_locked_by(meta, CommitCause::Management)
    }

    /// Stops new allocations and waits until no provisioning is in flight.
    fn drain_provisioning<'a>(&'a self, mut meta: Guard<'a>) -> Guard<'a> {
        meta.commit_waiting = true;
        while meta.provisioning > 0 {
            meta = self.provisioned.wait(meta).unwrap_or_else(|e| e.into_inner());
        }
        meta
    }

    fn commit_metadata(&self, meta: &mut Meta, writes: u64) -> Result<()> {
        if let Mode::ReadOnly(reason) = &meta.mode {
            // The pool failed while the data was syncing.
            return Err(PoolError::ReadOnly(reason.clone()));
        }
        // Parked blocks are free in this commit: their data may have missed its sync. (A
        // crash leaves them free but written: not known holes after a reopen.)
        let mut parked = std::mem::take(&mut meta.parked);
        // Inserted below in key order: neighbouring inserts share their b-tree path.
        parked.sort_unstable_by_key(|p| (p.dev, p.vblock));
        let mut r = parked.iter().try_for_each(|p| meta.md.release_data_block(p.block));
        if r.is_ok() {
            r = meta.md.commit().map(|mut freed| {
                meta.committed_writes = writes;
                let mut kept: Vec<DataBlock> = parked.iter().map(|p| p.block).collect();
                kept.sort_unstable();
                freed.retain(|b| kept.binary_search(b).is_err());
                self.stats.add(PoolCounter::BlocksFreed, freed.len() as u64);
                if !freed.is_empty() {
                    self.space_appeared(meta);
                }
                self.punch_freed(meta, freed);
            });
        }
        let mut cells = Vec::with_capacity(parked.len());
        for p in parked {
            if r.is_ok() {
                r = meta.md.take_data_block(p.block).and_then(|()| {
                    meta.md.insert_mapping(DevId(p.dev), VirtBlock(p.vblock), p.block).map(drop)
                });
            }
            cells.push(p.cell);
        }
        for cell in cells {
            self.prison.release(cell);
        }
        r.map_err(PoolError::from)
    }

    /// Waits until `dev` has no parked mapping (`dev` None: no device has): for paths that
    /// read mappings without taking cells (block status, discard's scan, snapshots, status).
    pub(super) fn settled<'a>(&'a self, mut meta: Guard<'a>, dev: Option<u64>) -> Guard<'a> {
        while meta.parked.iter().any(|p| dev.is_none_or(|d| p.dev == d)) {
            meta = self.provisioned.wait(meta).unwrap_or_else(|e| e.into_inner());
        }
        meta
    }

    /// Deallocates freed data blocks in the data file, a run at a time. Nothing can reuse
    /// them before we return: the metadata lock is held.
    fn punch_freed(&self, meta: &mut Meta, mut freed: Vec<DataBlock>) {
        freed.sort_unstable();
        let mut i = 0;
        while i < freed.len() {
            let mut j = i;
            while j + 1 < freed.len() && freed[j + 1].0 == freed[j].0 + 1 {
                j += 1;
            }
            self.punch_run(meta, freed[i].0, (j - i + 1) as u64);
            i = j + 1;
        }
    }

    /// Punches `n` blocks from `start` that the commit just made has freed, and records
    /// them as holes where the punch zeroes (a file; a device's discard does not); a
    /// failure only leaves them unknown (prepared when reused).
    fn punch_run(&self, meta: &mut Meta, start: u64, n: u64) {
        let bs = self.block_size;
        match self.data.punch_hole(start * bs, n * bs) {
            Ok(()) => {
                self.stats.add(PoolCounter::HolePunches, 1);
                self.stats.add(PoolCounter::HolePunchBytes, n * bs);
                // A device's discard promises no zeros: only a file's punch makes a hole.
                if self.data.discard_zeroes() {
                    meta.holes.insert(start, n)
                }
            }
            Err(e) => {
                tracing::warn!(pool = %self.label, start, n, "hole-punching freed blocks failed: {e}")
            }
        }
    }

    /// Stops writes: the open transaction is dropped (as the kernel aborts it), metadata
    /// failures set needs_check, and subscribers hear of it.
    pub(super) fn fail(&self, meta: &mut Meta, reason: &str) {
        if matches!(meta.mode, Mode::ReadOnly(_)) {
            return;
        }
        tracing::error!(pool = %self.label, "pool turns read-only: {reason}");
        meta.mode = Mode::ReadOnly(reason.to_string());
        meta.provisioning = 0;
        // Parked mappings die with the open transaction, like every uncommitted change.
        for p in std::mem::take(&mut meta.parked) {
            self.prison.release(p.cell);
        }
        if meta.md.abort().is_ok() {
            if let Err(e) = meta.md.set_needs_check() {
                tracing::error!(pool = %self.label, "could not set needs_check: {e}");
            }
        }
        self.provisioned.notify_all();
        self.space.notify_all();
        self.emit(PoolEvent::ReadOnly { reason: reason.to_string() });
    }

    /// A metadata operation failed: the transaction may be half-done, so the pool fails.
    pub(super) fn metadata_failed(&self, meta: &mut Meta, e: crate::Error) -> PoolError {
        let out_of_space = matches!(e, crate::Error::MetadataNoSpace { .. });
        let what = if out_of_space { "out of metadata space" } else { "metadata operation failed" };
        self.fail(meta, &format!("{what}: {e}"));
        if out_of_space {
            PoolError::NoSpace("out of metadata space".into())
        } else {
            PoolError::Metadata(e)
        }
    }

    pub(super) fn check_writable(&self, meta: &Meta) -> Result<()> {
        match &meta.mode {
            Mode::ReadOnly(reason) => Err(PoolError::ReadOnly(reason.clone())),
            _ => Ok(()),
        }
    }

    /// Allocates a data block for a write, following the out-of-space policy. The caller
    /// must end the provisioning with `end_provision`.
    pub(super) fn alloc_block<'a>(&'a self, mut meta: Guard<'a>) -> (Guard<'a>, Result<DataBlock>) {
        let deadline = match meta.config.settings.out_of_space {
            OutOfSpacePolicy::Queue { timeout_ms } => {
                Some(Instant::now() + Duration::from_millis(timeout_ms))
            }
            OutOfSpacePolicy::Error => None,
        };
        loop {
            if let Err(e) = self.check_writable(&meta) {
                return (meta, Err(e));
            }
            while meta.commit_waiting {
                meta = self.provisioned.wait(meta).unwrap_or_else(|e| e.into_inner());
            }
            if meta.md.nr_allocatable_data_blocks() > 0 {
                let r = match meta.md.alloc_data_block() {
                    Ok(b) => {
                        meta.provisioning += 1;
                        if meta.mode == Mode::OutOfDataSpace {
                            meta.mode = Mode::Write;
                        }
                        self.check_low_water_mark(&mut meta);
                        Ok(b)
                    }
                    Err(e) => Err(self.metadata_failed(&mut meta, e)),
                };
                return (meta, r);
            }
            if meta.md.nr_free_data_blocks() > 0 {
                // Blocks freed in this transaction become usable once it commits.
                let (m, r) = self.commit_locked_by(meta, CommitCause::Other);
                meta = m;
                if let Err(e) = r {
                    return (meta, Err(e));
                }
                continue;
            }
            if self.auto_extend(&mut meta) {
                continue;
            }
            if meta.mode == Mode::Write {
                meta.mode = Mode::OutOfDataSpace;
                self.emit(PoolEvent::OutOfDataSpace);
            }
            let now = Instant::now();
            match deadline {
                Some(d) if now < d => {
                    meta =
                        self.space.wait_timeout(meta, d - now).unwrap_or_else(|e| e.into_inner()).0;
                }
                _ => return (meta, Err(PoolError::NoSpace("no free data block".into()))),
            }
        }
    }

    /// Runs a data write `f`, treating ENOSPC from the filesystem under the data file as
    /// out of data space (never as a pool failure): the mode and the event say so, and the
    /// out-of-space policy decides — `error` fails the write at once, `queue` waits for
    /// space (a commit that frees blocks punches them, an extend) until its timeout and
    /// retries. `f` must leave nothing behind when it fails (write_piece gives back the
    /// block it allocated).
    pub(super) fn retry_when_full<T>(&self, mut f: impl FnMut() -> Result<T>) -> Result<T> {
        let mut deadline = None;
        loop {
            match f() {
                Err(PoolError::Io(e)) if e.raw_os_error() == Some(nix::libc::ENOSPC) => {}
                r => return r,
            }
            let mut meta = self.meta();
            if meta.mode == Mode::Write {
                tracing::warn!(pool = %self.label, "the data file's filesystem is full");
                meta.mode = Mode::OutOfDataSpace;
                self.emit(PoolEvent::OutOfDataSpace);
            }
            let full = || PoolError::NoSpace("the data file's filesystem is full".into());
            let until = match meta.config.settings.out_of_space {
                OutOfSpacePolicy::Queue { timeout_ms } => *deadline
                    .get_or_insert_with(|| Instant::now() + Duration::from_millis(timeout_ms)),
                OutOfSpacePolicy::Error => return Err(full()),
            };
            let now = Instant::now();
            if now >= until {
                return Err(full());
            }
            drop(self.space.wait_timeout(meta, until - now));
        }
    }

    /// Space appeared (a commit freed blocks, an extend): out of data space is over.
    fn space_appeared(&self, meta: &mut Meta) {
        if meta.mode == Mode::OutOfDataSpace {
            meta.mode = Mode::Write;
        }
        self.space.notify_all();
    }

    /// Ends a provisioning started by `alloc_block`; `unused` gives the block back.
    pub(super) fn end_provision(&self, meta: &mut Meta, unused: Option<DataBlock>) {
        meta.provisioning = meta.provisioning.saturating_sub(1);
        if let (Some(b), Mode::Write | Mode::OutOfDataSpace) = (unused, &meta.mode) {
            if let Err(e) = meta.md.release_data_block(b) {
                let _ = self.metadata_failed(meta, e);
            }
        }
        if meta.commit_waiting && meta.provisioning == 0 {
            self.provisioned.notify_all();
        }
    }

    /// Raises the low-water-mark event once per crossing; re-arms above the mark.
    pub(super) fn check_low_water_mark(&self, meta: &mut Meta) {
        let free = meta.md.nr_free_data_blocks();
        let mark = meta.config.settings.low_water_mark_blocks;
        if free > mark {
            meta.lwm_armed = true;
        } else if meta.lwm_armed {
            meta.lwm_armed = false;
            self.emit(PoolEvent::LowWaterMark {
                free_blocks: free,
                total_blocks: meta.md.nr_data_blocks(),
                block_size_bytes: self.block_size,
            });
            self.auto_extend(meta);
        }
    }

    /// Grows the data device by the configured percentage (up to the maximum), if any.
    fn auto_extend(&self, meta: &mut Meta) -> bool {
        let Some(ae) = meta.config.settings.auto_extend else { return false };
        let total = meta.md.nr_data_blocks();
        let max_blocks = ae.max_bytes / self.block_size;
        let grow = (total * ae.percent as u64 / 100).max(1);
        let target = (total + grow).min(max_blocks);
        if target <= total {
            return false;
        }
        match self.extend_locked(meta, target) {
            Ok(()) => true,
            Err(e) => {
                tracing::warn!(pool = %self.label, "auto-extend failed: {e}");
                false
            }
        }
    }

    /// Grows the data device and the data space map to `nr_blocks` (uncommitted).
    pub(super) fn extend_locked(&self, meta: &mut Meta, nr_blocks: u64) -> Result<()> {
        self.check_writable(meta)?;
        let old = meta.md.nr_data_blocks();
        check_extend(meta, old, nr_blocks)?;
        let old_len = self.data.len_bytes();
        self.data.set_len(nr_blocks * self.block_size)?;
        if let Err(e) = meta.md.resize_data(nr_blocks) {
            // Refused before it changed the metadata: the data file goes back as it was.
            if let Err(e) = self.data.set_len(old_len) {
                tracing::warn!(pool = %self.label, "shrinking the data file back failed: {e}");
            }
            return Err(match e {
                crate::Error::Invalid(m) => PoolError::Invalid(m),
                e => self.metadata_failed(meta, e),
            });
        }
        // A file grows by a hole; a grown device holds whatever it held.
        if self.data.discard_zeroes() {
            meta.holes.insert(old, nr_blocks - old);
        }
        self.emit(PoolEvent::Extended { total_blocks: nr_blocks });
        let free = meta.md.nr_free_data_blocks();
        if free > meta.config.settings.low_water_mark_blocks {
            meta.lwm_armed = true;
        }
        self.space_appeared(meta);
        Ok(())
    }
}

/// Refuses an extend that would shrink the data device, pass the format's or memory's
/// limits, or need more metadata blocks for its space-map bitmaps than are free (the
/// commit would run out of metadata space and turn the pool read-only).
fn check_extend(meta: &Meta, old: u64, nr_blocks: u64) -> Result<()> {
    use crate::limits::{ENTRIES_PER_BITMAP, MAX_DATA_BLOCKS, MAX_DATA_BLOCKS_IN_MEMORY};
    if nr_blocks < old {
        return Err(PoolError::Invalid("the data device cannot shrink".into()));
    }
    let max = MAX_DATA_BLOCKS.min(MAX_DATA_BLOCKS_IN_MEMORY);
    if nr_blocks > max {
        return Err(PoolError::Invalid(format!(
            "{nr_blocks} data blocks: at most {max} (use larger data blocks)"
        )));
    }
    let s = meta.md.status();
    let free = s.total_metadata_blocks.saturating_sub(s.used_metadata_blocks);
    let reserve = crate::limits::metadata_reserve_blocks(s.total_metadata_blocks);
    // One bitmap per ENTRIES_PER_BITMAP blocks, plus index nodes (generously one per 64).
    let bitmaps = nr_blocks.div_ceil(ENTRIES_PER_BITMAP) - old.div_ceil(ENTRIES_PER_BITMAP);
    if bitmaps + bitmaps.div_ceil(64) + reserve > free {
        return Err(PoolError::NoSpace(format!(
            "extending to {nr_blocks} data blocks needs {bitmaps} more metadata blocks than \
             the {free} free: extend the metadata first"
        )));
    }
    Ok(())
}

/// Commits every `interval` while the pool lives.
pub(super) fn spawn_timer(
    inner: &Arc<Inner>,
    interval: Duration,
) -> std::io::Result<std::thread::JoinHandle<()>> {
    let weak = Arc::downgrade(inner);
    std::thread::Builder::new().name("thinly-commit".into()).spawn(move || loop {
        std::thread::park_timeout(interval);
        let Some(inner) = weak.upgrade() else { return };
        if inner.stopping.load(Ordering::SeqCst) {
            return;
        }
        let meta = inner.meta();
        let (_meta, r) = inner.commit_locked_by(meta, CommitCause::Timer);
        if let Err(e) = r {
            tracing::debug!(pool = %inner.label, "timed commit: {e}");
        }
    })
}
