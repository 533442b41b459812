//! Where a pool's two devices live, creating them, and growing them online.
//!
//! A pool's metadata and data are `<pool>/metadata` and `<pool>/data` unless `pool.json`
//! records other paths (`data_path`, `metadata_path`): a block device (a loop device, an
//! LV, an NVMe namespace) or a file elsewhere. A block device is opened with `O_EXCL` for
//! writing, besides the pool's flock on the metadata path, so a second opener (another
//! pool, a mount, the kernel's dm-thin) gets `PoolError::Busy`. Its size is the device's;
//! "extending" a device pool takes in what the device has grown to.
//!
//! Zeroing: a device has no holes and `BLKDISCARD` promises no zeros, so a new pool on a
//! device is zeroed at create (`BLKZEROOUT`, a chunk at a time, reporting progress) unless
//! zeroing is off; after that the pool zeroes a reused block with `BLKZEROOUT` before a
//! partial write, never trusting a discard (see the pool's Zeroing paragraph).
//!
//! Metadata grows online (`Pool::resize_metadata`): the file (preallocated) or the device
//! first, then the metadata space map, in the open transaction, committed at once. A crash
//! before that commit leaves a larger file under the old space map, which opens as before
//! (the kernel treats a metadata device larger than its space map the same way). An
//! optional automatic extend runs after a commit that leaves free metadata at or below the
//! kernel's metadata low water mark (`limits::metadata_low_water_mark_blocks`).

use super::config::{AutoExtend, PoolConfig, CONFIG_FILE};
use super::open::{DATA_FILE, METADATA_FILE};
use super::{Inner, Meta, Pool, PoolError, Result};
use crate::io::blockdev::{block_device_size, is_busy};
use crate::io::{DataDevice, FileData, FileDevice, IoMode};
use crate::limits::{MAX_METADATA_BLOCKS, META_BLOCK_SIZE, ZEROING_CHUNK_BYTES};
use std::io;
use std::path::{Path, PathBuf};

/// The two device paths of a pool.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DevicePaths {
    pub metadata: PathBuf,
    pub data: PathBuf,
}

impl DevicePaths {
    /// The paths `config` records, else the files inside `dir`.
    pub fn of(dir: &Path, config: Option<&PoolConfig>) -> DevicePaths {
        let c = config.cloned().unwrap_or_else(|| PoolConfig {
            format: 0,
            transaction_id: 0,
            settings: Default::default(),
            volumes: Default::default(),
            journal_seq: 0,
            data_path: None,
            metadata_path: None,
        });
        DevicePaths {
            metadata: c.metadata_path.unwrap_or_else(|| dir.join(METADATA_FILE)),
            data: c.data_path.unwrap_or_else(|| dir.join(DATA_FILE)),
        }
    }

    /// The paths of the pool in `dir`, as its pool.json says.
    pub fn of_pool(dir: &Path) -> Result<DevicePaths> {
        use super::config::ConfigStore;
        let stored = super::config::DirConfigStore::new(dir).load()?;
        Ok(DevicePaths::of(dir, stored.as_ref()))
    }
}

impl Pool {
    /// True when `dir` holds a pool: its metadata (in the directory, or where pool.json
    /// says) exists.
    pub fn exists(dir: &Path) -> bool {
        if dir.join(METADATA_FILE).exists() {
            return true;
        }
        dir.join(CONFIG_FILE).exists()
            && DevicePaths::of_pool(dir).is_ok_and(|p| p.metadata.exists())
    }

    /// Bytes the data device holds now (a grown device shows its new size here before
    /// `extend` takes it in).
    pub fn data_device_bytes(&self) -> u64 {
        self.inner.data.len_bytes()
    }

    /// Bytes the metadata device holds now (see `data_device_bytes`).
    pub fn metadata_device_bytes(&self) -> u64 {
        self.inner.metadata_dev.capacity_blocks() * META_BLOCK_SIZE as u64
    }

    /// `thinly pool extend`: grows the metadata to `metadata_bytes`, then the data to
    /// `data_bytes`, each committed. With neither given, takes in what the devices have
    /// grown to (a device pool after an LV extend or `losetup -c`); nothing grown is then
    /// refused. The data size is checked before anything changes.
    pub fn extend_devices(
        &self,
        data_bytes: Option<u64>,
        metadata_bytes: Option<u64>,
    ) -> Result<()> {
        let s = self.status();
        let bs = self.inner.block_size;
        let (data_bytes, metadata_bytes) = match (data_bytes, metadata_bytes) {
            (None, None) => {
                let data = self.data_device_bytes();
                let meta = self.metadata_device_bytes();
                let grown_data = data / bs > s.total_data_blocks;
                let grown_meta = meta / META_BLOCK_SIZE as u64 > s.total_metadata_blocks;
                if !grown_data && !grown_meta {
                    return Err(PoolError::Invalid(
                        "nothing to extend: the devices have not grown (give a data size or a \
                         metadata size)"
                            .into(),
                    ));
                }
                (grown_data.then_some(data), grown_meta.then_some(meta))
            }
            sizes => sizes,
        };
        if let Some(d) = data_bytes {
            if d / bs < s.total_data_blocks {
                return Err(PoolError::Invalid("the data device cannot shrink".into()));
            }
        }
        if let Some(m) = metadata_bytes {
            self.resize_metadata(m)?;
        }
        if let Some(d) = data_bytes {
            self.extend(d)?;
        }
        Ok(())
    }

    /// Grows the metadata to `size_bytes` (rounded down to 4 KiB blocks) while volumes are
    /// in use, and commits. A file grows (preallocated); a device must hold the size
    /// already. Refused unchanged when it would shrink or pass the format's limit.
    pub fn resize_metadata(&self, size_bytes: u64) -> Result<()> {
        let mut meta = self.inner.meta();
        self.inner.resize_metadata_locked(&mut meta, size_bytes / META_BLOCK_SIZE as u64)?;
        let (_m, r) = self.inner.commit_locked(meta);
        r
    }
}

impl Inner {
    /// Grows the metadata device and its space map to `nr_blocks` (uncommitted).
    pub(super) fn resize_metadata_locked(&self, meta: &mut Meta, nr_blocks: u64) -> Result<()> {
        self.check_writable(meta)?;
        let old = meta.md.status().total_metadata_blocks;
        if nr_blocks < old {
            return Err(PoolError::Invalid(format!(
                "the metadata holds {old} blocks: it cannot shrink to {nr_blocks}"
            )));
        }
        if nr_blocks > MAX_METADATA_BLOCKS {
            return Err(PoolError::Invalid(format!(
                "{nr_blocks} metadata blocks: the format allows at most {MAX_METADATA_BLOCKS}"
            )));
        }
        if nr_blocks == old {
            return Ok(());
        }
        let old_dev = self.metadata_dev.nr_blocks();
        if nr_blocks > old_dev {
            self.metadata_dev.resize(nr_blocks)?;
        }
        if let Err(e) = meta.md.resize_metadata() {
            // Refused before it changed the metadata: the file goes back as it was.
            if let Err(e) = self.metadata_dev.resize(old_dev) {
                tracing::warn!(pool = %self.label, "shrinking the metadata back failed: {e}");
            }
            return Err(match e {
                crate::Error::Invalid(m) => PoolError::Invalid(m),
                e => self.metadata_failed(meta, e),
            });
        }
        tracing::info!(pool = %self.label, old, new = nr_blocks, "metadata extended");
        Ok(())
    }

    /// After a commit: grows the metadata by the configured percentage (up to the maximum)
    /// when its free blocks are at or below the metadata low water mark. Returns whether it
    /// grew (the growth joins the next transaction).
    pub(super) fn check_metadata_low_water_mark(&self, meta: &mut Meta) -> bool {
        let Some(ae) = meta.config.settings.metadata_auto_extend else { return false };
        let s = meta.md.status();
        let free = s.total_metadata_blocks.saturating_sub(s.used_metadata_blocks);
        if free > crate::limits::metadata_low_water_mark_blocks(s.total_metadata_blocks) {
            return false;
        }
        let target = metadata_target(&ae, s.total_metadata_blocks);
        if target <= s.total_metadata_blocks {
            tracing::warn!(pool = %self.label, free, "metadata low water mark: at its maximum");
            return false;
        }
        match self.resize_metadata_locked(meta, target) {
            Ok(()) => true,
            Err(e) => {
                tracing::warn!(pool = %self.label, "metadata auto-extend failed: {e}");
                false
            }
        }
    }
}

/// The metadata size an auto-extend grows to, in blocks.
fn metadata_target(ae: &AutoExtend, total: u64) -> u64 {
    let grow = (total * ae.percent as u64 / 100).max(1);
    let max = (ae.max_bytes / META_BLOCK_SIZE as u64).min(MAX_METADATA_BLOCKS);
    (total + grow).min(max)
}

/// Opens or makes the metadata device at `path`: a block device as it is (`want_bytes`,
/// if given, must be its size), else a new (or empty) file of `default_bytes`.
pub(super) fn create_metadata(
    path: &Path,
    want_bytes: Option<u64>,
    default_bytes: u64,
) -> Result<FileDevice> {
    match block_device_size(path)? {
        Some(have) => {
            check_device_size("metadata", path, have, want_bytes)?;
            open_device(FileDevice::open(path, false), path)
        }
        None => {
            refuse_non_empty(path)?;
            let bytes = want_bytes.unwrap_or(default_bytes);
            Ok(FileDevice::create(path, bytes.div_ceil(META_BLOCK_SIZE as u64))?)
        }
    }
}

/// Opens or makes the data device at `path` (a new file holds whole blocks of
/// `block_bytes`). Returns it and whether it is a block device (whose bytes are unknown:
/// the caller zeroes it or turns zeroing off).
pub(super) fn create_data(
    path: &Path,
    size_bytes: u64,
    block_bytes: u64,
    mode: IoMode,
) -> Result<(FileData, bool)> {
    match block_device_size(path)? {
        Some(have) => {
            check_device_size("data", path, have, Some(size_bytes))?;
            Ok((open_device(FileData::open(path, mode), path)?, true))
        }
        None => {
            refuse_non_empty(path)?;
            let file = std::fs::OpenOptions::new()
                .read(true)
                .write(true)
                .create(true)
                .truncate(true)
                .open(path)?;
            file.set_len(size_bytes / block_bytes * block_bytes)?;
            Ok((FileData::from_file(file, mode)?, false))
        }
    }
}

/// Zeroes the whole data device a chunk at a time, calling `progress(done, total)` after
/// each chunk.
pub(super) fn zero_device(
    data: &dyn DataDevice,
    progress: &mut dyn FnMut(u64, u64),
) -> io::Result<()> {
    let total = data.len_bytes();
    let mut done = 0;
    progress(0, total);
    while done < total {
        let n = (total - done).min(ZEROING_CHUNK_BYTES);
        data.zero_range(done, n)?;
        done += n;
        progress(done, total);
    }
    data.sync()
}

/// A device's size must be what the user asked for, if they asked.
fn check_device_size(what: &str, path: &Path, have: u64, want: Option<u64>) -> Result<()> {
    match want {
        Some(want) if want != have => Err(PoolError::Invalid(format!(
            "{} is a block device of {have} bytes: the {what} size comes from the device \
             ({want} bytes were asked for)",
            path.display()
        ))),
        _ => Ok(()),
    }
}

/// A device another opener holds exclusively is `Busy`, like a locked pool.
fn open_device<T>(r: io::Result<T>, path: &Path) -> Result<T> {
    r.map_err(|e| {
        if is_busy(&e) {
            PoolError::Busy(format!(
                "{} (the device is open exclusively elsewhere)",
                path.display()
            ))
        } else {
            PoolError::Io(e)
        }
    })
}

/// A regular file given as a device must be new or empty: a pool never formats over bytes.
fn refuse_non_empty(path: &Path) -> Result<()> {
    match std::fs::metadata(path) {
        Ok(m) if m.len() > 0 => Err(PoolError::Invalid(format!(
            "{} exists and is not empty: give a new path, an empty file or a block device",
            path.display()
        ))),
        Ok(m) if !m.is_file() => {
            Err(PoolError::Invalid(format!("{} is not a file or a block device", path.display())))
        }
        _ => Ok(()),
    }
}

/// Opens an existing pool's device, mapping an exclusive holder to `Busy`.
pub(super) fn open_metadata(path: &Path) -> Result<FileDevice> {
    open_device(FileDevice::open(path, false), path)
}

/// See `open_metadata`.
pub(super) fn open_data(path: &Path, mode: IoMode) -> Result<FileData> {
    open_device(FileData::open(path, mode), path)
}
