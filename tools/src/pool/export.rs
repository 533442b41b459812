//! The pool's volumes as NBD exports: `VolumeExport` adapts a `Volume` to the NBD server's
//! `Export` trait, `PoolRegistry` finds volumes by name (live: a volume created or deleted
//! while serving appears or disappears at once).

use std::io;
use std::sync::Arc;
use thinly_engine::pool::{Pool, RunDetail, Volume};
use thinly_nbd::export::{STATE_HOLE, STATE_ZERO};
use thinly_nbd::{Export, ExportRegistry, Extent, ZeroFlags};

/// The export a client gets when it asks for the default name ("").
pub const DEFAULT_EXPORT: &str = "vol0";

pub struct VolumeExport {
    vol: Volume,
}

impl VolumeExport {
    pub fn new(vol: Volume) -> Self {
        VolumeExport { vol }
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
        Ok(self.vol.read(offset, buf)?)
    }

    /// One pass: the layout comes from the same lookups that found the data.
    fn read_sparse(&self, offset: u64, len: u64, out: &mut Vec<u8>) -> io::Result<Vec<Extent>> {
        Ok(self.vol.read_sparse(offset, len, out)?.into_iter().map(allocation).collect())
    }

    fn write(&self, offset: u64, data: &[u8], fua: bool) -> io::Result<()> {
        Ok(self.vol.write(offset, data, fua)?)
    }

    fn write_zeroes(&self, offset: u64, len: u64, flags: ZeroFlags) -> io::Result<()> {
        // Zeroing whole data blocks is a metadata change or a hole punch: fast. Partial
        // blocks would need zeros written, which FAST_ZERO forbids.
        if flags.fast_only && !self.aligned(offset, len) {
            return Err(io::Error::from_raw_os_error(nix_enotsup()));
        }
        Ok(self.vol.write_zeroes(offset, len, flags.may_trim, flags.fua)?)
    }

    fn trim(&self, offset: u64, len: u64, fua: bool) -> io::Result<()> {
        Ok(self.vol.discard(offset, len, fua)?)
    }

    fn flush(&self) -> io::Result<()> {
        Ok(self.vol.flush()?)
    }

    fn block_status(&self, offset: u64, len: u64) -> io::Result<Vec<Extent>> {
        let runs = self.vol.block_status(offset, len, RunDetail::Mapped)?;
        Ok(runs.into_iter().map(allocation).collect())
    }

    fn allocation_depth(&self, offset: u64, len: u64) -> io::Result<Vec<(u64, u32)>> {
        let runs = self.vol.block_status(offset, len, RunDetail::Sharing)?;
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
}

/// A volume run as a `base:allocation` run: unmapped bytes are `HOLE | ZERO`.
fn allocation(r: thinly_engine::pool::Extent) -> Extent {
    Extent { length: r.len_bytes, flags: if r.mapped { 0 } else { STATE_HOLE | STATE_ZERO } }
}

fn nix_enotsup() -> i32 {
    95 // ENOTSUP on Linux
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
        Some(Arc::new(VolumeExport::new(vol)))
    }
}
