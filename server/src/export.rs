//! The pool's volumes as NBD exports: `VolumeExport` adapts a `Volume` to the NBD server's
//! `Export` trait, `PoolRegistry` finds volumes by name (live: a volume created or deleted
//! while serving appears or disappears at once).
//!
//! Incremental backup: every export V offers a meta context `qemu:dirty-bitmap:S` for each
//! volume S sharing ancestry with V (`Pool::related_volumes`: same line of snapshots), whose
//! status marks dirty (bit 0) the data blocks of V that differ from S's. A connection's
//! context is bound to the volume S is at its first block-status: if S is deleted (or
//! deleted and created anew) after that, or is gone or unrelated by then, that client's
//! block-status requests fail with an error reply and the connection goes on.

use crate::errno::io_error;
use std::collections::HashMap;
use std::io;
use std::sync::{Arc, Mutex};
use thinly_engine::pool::{Pool, RunDetail, Volume};
use thinly_nbd::export::{STATE_DIRTY, STATE_HOLE, STATE_ZERO};
use thinly_nbd::limits::MAX_EXTENTS_PER_CHUNK;
use thinly_nbd::{Export, ExportRegistry, Extent, ZeroFlags};

/// The namespace and leaf prefix of the dirty-bitmap contexts (qemu's convention).
pub const DIRTY_BITMAP_PREFIX: &str = "qemu:dirty-bitmap:";

/// Changed ranges asked of the pool per block-status request at most: each makes at most
/// two extents (the clean gap before it and itself), so the answer fits one chunk.
const MAX_CHANGED_RANGES: usize = MAX_EXTENTS_PER_CHUNK / 2;

/// The export a client gets when it asks for the default name ("").
pub const DEFAULT_EXPORT: &str = "vol0";

pub struct VolumeExport {
    vol: Volume,
    pool: Pool,
    /// The dirty-bitmap contexts in use: snapshot name → its device id when first used.
    offered: Mutex<HashMap<String, u64>>,
}

impl VolumeExport {
    pub fn new(pool: Pool, vol: Volume) -> Self {
        VolumeExport { vol, pool, offered: Mutex::new(HashMap::new()) }
    }

    /// Fails with ENOENT unless `base` is the volume this connection's context named. The
    /// handshake asks another instance for the list, so the binding is made at the first
    /// block-status: `base` must still share ancestry then, and keep its device id after.
    fn check_still_offered(&self, base: &str) -> io::Result<()> {
        let gone = || io::Error::from_raw_os_error(nix::libc::ENOENT);
        let now = self.pool.volume_dev_id(base).map_err(|_| gone())?.0;
        let mut offered = self.offered.lock().unwrap_or_else(|e| e.into_inner());
        match offered.get(base) {
            Some(&dev) if dev == now => Ok(()),
            Some(_) => Err(gone()),
            None => {
                let related = self.pool.related_volumes(self.vol.name()).map_err(|_| gone())?;
                if !related.iter().any(|r| r == base) {
                    return Err(gone());
                }
                offered.insert(base.to_string(), now);
                Ok(())
            }
        }
    }

    /// The status of `qemu:dirty-bitmap:<base>`: runs of (length, dirty or clean) from
    /// `offset`, covering a prefix of the range.
    fn dirty_runs(
        &self,
        base: &str,
        offset: u64,
        len: u64,
        max_ranges: usize,
    ) -> io::Result<Vec<(u64, u32)>> {
        self.check_still_offered(base)?;
        let changes = self
            .pool
            .changed_ranges(self.vol.name(), base, offset, len, max_ranges)
            .map_err(io_error)?;
        let mut runs = Vec::with_capacity(2 * changes.ranges.len() + 1);
        let mut at = offset;
        for (start, n) in changes.ranges {
            if start > at {
                runs.push((start - at, 0));
            }
            runs.push((n, STATE_DIRTY));
            at = start + n;
        }
        if changes.complete_to_bytes > at {
            runs.push((changes.complete_to_bytes - at, 0));
        }
        Ok(runs)
    }

    fn aligned(&self, offset: u64, len: u64) -> bool {
        let bs = self.vol.block_size_bytes();
        offset.is_multiple_of(bs) && len.is_multiple_of(bs)
    }
}

impl Export for VolumeExport {
    fn size_bytes(&self) -> u64 {
        self.vol.size_bytes()
    }

    fn read_only(&self) -> bool {
        self.vol.is_read_only()
    }

    /// A flush commits the whole pool, so it covers writes from every connection.
    fn can_multi_conn(&self) -> bool {
        true
    }

    fn preferred_block_size(&self) -> u32 {
        self.vol.block_size_bytes().min(1 << 20) as u32
    }

    /// Byte-granular, as qemu-nbd: the pool reads, writes, zeroes and discards any byte
    /// range (partial blocks are read-modify-written or zeroed), so strict clients may
    /// address any byte.
    fn min_block_size(&self) -> u32 {
        1
    }

    fn read(&self, offset: u64, buf: &mut [u8]) -> io::Result<()> {
        self.vol.read(offset, buf).map_err(io_error)
    }

    /// One pass: the layout comes from the same lookups that found the data.
    fn read_sparse(&self, offset: u64, len: u64, out: &mut Vec<u8>) -> io::Result<Vec<Extent>> {
        let runs = self.vol.read_sparse(offset, len, out).map_err(io_error)?;
        Ok(runs.into_iter().map(allocation).collect())
    }

    fn write(&self, offset: u64, data: &[u8], fua: bool) -> io::Result<()> {
        self.vol.write(offset, data, fua).map_err(io_error)
    }

    fn write_zeroes(&self, offset: u64, len: u64, flags: ZeroFlags) -> io::Result<()> {
        // Zeroing whole data blocks is a metadata change or a hole punch: fast. Partial
        // blocks would need zeros written, which FAST_ZERO forbids.
        if flags.fast_only && !self.aligned(offset, len) {
            return Err(io::Error::from_raw_os_error(nix::libc::ENOTSUP));
        }
        self.vol.write_zeroes(offset, len, flags.may_trim, flags.fua).map_err(io_error)
    }

    fn trim(&self, offset: u64, len: u64, fua: bool) -> io::Result<()> {
        self.vol.discard(offset, len, fua).map_err(io_error)
    }

    fn flush(&self) -> io::Result<()> {
        self.vol.flush().map_err(io_error)
    }

    fn block_status(&self, offset: u64, len: u64) -> io::Result<Vec<Extent>> {
        let runs = self.vol.block_status(offset, len, RunDetail::Mapped).map_err(io_error)?;
        Ok(runs.into_iter().map(allocation).collect())
    }

    fn allocation_depth(&self, offset: u64, len: u64) -> io::Result<Vec<(u64, u32)>> {
        let runs = self.vol.block_status(offset, len, RunDetail::Sharing).map_err(io_error)?;
        Ok(runs
            .into_iter()
            .map(|r| {
                (
                    r.len_bytes,
                    if !r.mapped {
                        0
                    } else if r.shared {
                        2
                    } else {
                        1
                    },
                )
            })
            .collect())
    }

    fn extra_meta_contexts(&self) -> Vec<String> {
        let related = self.pool.related_volumes(self.vol.name()).unwrap_or_default();
        related.into_iter().map(|s| format!("{DIRTY_BITMAP_PREFIX}{s}")).collect()
    }

    /// Each changed range makes at most two runs (the clean gap before it and itself).
    fn extra_meta_status(
        &self,
        name: &str,
        offset: u64,
        len: u64,
        max_runs: usize,
    ) -> io::Result<Vec<(u64, u32)>> {
        let max_ranges = max_runs.div_ceil(2).clamp(1, MAX_CHANGED_RANGES);
        match name.strip_prefix(DIRTY_BITMAP_PREFIX) {
            Some(base) => self.dirty_runs(base, offset, len, max_ranges),
            None => Err(io::Error::from_raw_os_error(nix::libc::ENOENT)),
        }
    }
}

/// A volume run as a `base:allocation` run: unmapped bytes are `HOLE | ZERO`.
fn allocation(r: thinly_engine::pool::Extent) -> Extent {
    Extent { length: r.len_bytes, flags: if r.mapped { 0 } else { STATE_HOLE | STATE_ZERO } }
}

/// Every volume of a pool, by name (or only the named ones: `thinly serve --export`).
pub struct PoolRegistry {
    pool: Pool,
    only: Option<Vec<String>>,
}

impl PoolRegistry {
    pub fn new(pool: Pool) -> Self {
        PoolRegistry { pool, only: None }
    }

    /// Serves only the volumes named in `names` (if not empty); others are neither
    /// listed nor opened. The default export ("") is the first of them that exists.
    pub fn with_only(mut self, names: &[String]) -> Self {
        self.only = (!names.is_empty()).then(|| names.to_vec());
        self
    }

    fn allowed(&self, name: &str) -> bool {
        self.only.as_ref().is_none_or(|o| o.iter().any(|n| n == name))
    }

    fn open_default(&self) -> Option<Volume> {
        if let Some(only) = &self.only {
            return only.iter().find_map(|n| self.pool.volume(n).ok());
        }
        self.pool.volume(DEFAULT_EXPORT).ok().or_else(|| {
            let first = self.pool.list().into_iter().next()?;
            self.pool.volume(&first.0).ok()
        })
    }
}

impl ExportRegistry for PoolRegistry {
    fn list(&self) -> Vec<(String, String)> {
        self.pool
            .list()
            .into_iter()
            .filter(|(name, _)| self.allowed(name))
            .map(|(name, v)| {
                let kind = match &v.snapshot_of {
                    Some(_) if v.origin_deleted => "snapshot of a deleted volume".to_string(),
                    Some(o) => format!("snapshot of {o}"),
                    None => "thin volume".to_string(),
                };
                let ro = if v.read_only { ", read-only" } else { "" };
                (name, format!("{kind} (device {}, {} bytes{ro})", v.dev_id, v.size_bytes))
            })
            .collect()
    }

    fn open(&self, name: &str) -> Option<Arc<dyn Export>> {
        let vol = if name.is_empty() {
            self.open_default()?
        } else if self.allowed(name) {
            self.pool.volume(name).ok()?
        } else {
            return None;
        };
        Some(Arc::new(VolumeExport::new(self.pool.clone(), vol)))
    }

    /// The volume `open("")` picks, by name (for the access policy).
    fn default_name(&self) -> Option<String> {
        if let Some(only) = &self.only {
            return only.iter().find(|n| self.pool.volume(n).is_ok()).cloned();
        }
        if self.pool.volume(DEFAULT_EXPORT).is_ok() {
            return Some(DEFAULT_EXPORT.to_owned());
        }
        self.pool.list().into_iter().next().map(|(name, _)| name)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use thinly_engine::pool::PoolOptions;

    const BS: u64 = 64 << 10;

    #[test]
    fn dirty_bitmaps_are_offered_for_the_line_and_a_deleted_snapshot_fails_cleanly() {
        let dir = tempfile::tempdir().unwrap();
        let opts = PoolOptions { data_size_bytes: 64 << 20, ..PoolOptions::default() };
        let pool = Pool::create(&dir.path().join("p"), &opts).unwrap();
        let vm = pool.create_volume("vm", 16 * BS).unwrap();
        pool.create_volume("other", 16 * BS).unwrap();
        vm.write(0, &[1u8; 4096], false).unwrap();
        pool.snapshot("vm", "s1", true).unwrap();
        vm.write(3 * BS + 100, &[2u8; 10], false).unwrap();
        pool.snapshot("s1", "s1b", false).unwrap();
        let e = VolumeExport::new(pool.clone(), pool.volume("vm").unwrap());
        let mut offered = e.extra_meta_contexts();
        offered.sort();
        assert_eq!(offered, ["qemu:dirty-bitmap:s1", "qemu:dirty-bitmap:s1b"]);
        let runs = e.extra_meta_status("qemu:dirty-bitmap:s1", BS, 8 * BS, 64).unwrap();
        assert_eq!(runs, [(2 * BS, 0), (BS, STATE_DIRTY), (5 * BS, 0)]);
        // REQ_ONE: the diff stops at the first changed range; the first run is the same.
        let runs = e.extra_meta_status("qemu:dirty-bitmap:s1", BS, 8 * BS, 1).unwrap();
        assert_eq!(runs[0], (2 * BS, 0));
        assert!(e.extra_meta_status("qemu:dirty-bitmap:other", 0, BS, 64).is_err(), "unrelated");
        pool.delete_volume("s1").unwrap();
        let err = e.extra_meta_status("qemu:dirty-bitmap:s1", 0, BS, 64).unwrap_err();
        assert_eq!(err.raw_os_error(), Some(nix::libc::ENOENT));
        // Created anew under the same name (and even in the same line), it is another
        // volume: the connection that used the old one keeps failing.
        pool.snapshot("vm", "s1", true).unwrap();
        assert!(e.extra_meta_status("qemu:dirty-bitmap:s1", 0, BS, 64).is_err());
        // The snapshot of the deleted snapshot still shares the line (its root is vm).
        assert!(e.extra_meta_status("qemu:dirty-bitmap:s1b", 0, 16 * BS, 64).is_ok());
        assert!(e.block_status(0, BS).is_ok(), "the export itself goes on");
    }
}
