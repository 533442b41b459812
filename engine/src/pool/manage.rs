//! Volume management: create, snapshot, delete, resize, list; extending the data device;
//! settings. Every change is persisted with `persist`, in the order that lets open tell
//! what happened from the metadata's device ids alone (the metadata transaction id is the
//! user's, as in dm-thin): a name is journalled before its device is committed
//! (create, snapshot) and forgotten only after its device's removal or shrink is committed
//! (delete, resize). A crash between the two leaves a name whose device does not exist,
//! which open drops; never a device whose name was lost.

use super::config::{validate_volume_name, ConfigChange, PoolSettings, VolumeConfig};
use super::status::VolumeInfo;
use super::{Meta, Pool, PoolError, Result, Volume, VolumeState};
use crate::io::BlockDevice;
use crate::units::{DevId, VirtBlock};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, RwLock};

impl Pool {
    pub fn volume(&self, name: &str) -> Result<Volume> {
        Ok(Volume::new(self.inner.clone(), self.state_of(name)?))
    }

    /// A volume's state, without opening a handle on it.
    pub(super) fn state_of(&self, name: &str) -> Result<Arc<VolumeState>> {
        let vols = self.inner.volumes.read().unwrap_or_else(|e| e.into_inner());
        vols.get(name).cloned().ok_or_else(|| PoolError::NoVolume(name.to_string()))
    }

    pub fn list(&self) -> Vec<VolumeInfo> {
        let meta = self.inner.meta();
        meta.config.volumes.iter().map(|(n, v)| (n.clone(), v.clone())).collect()
    }

    /// Creates an empty volume of `size_bytes` (a multiple of 512).
    pub fn create_volume(&self, name: &str, size_bytes: u64) -> Result<Volume> {
        validate_volume_name(name).map_err(PoolError::Invalid)?;
        check_size(size_bytes, self.inner.block_size)?;
        let mut meta = self.inner.meta();
        self.inner.check_writable(&meta)?;
        if meta.config.volumes.contains_key(name) {
            return Err(PoolError::VolumeExists(name.to_string()));
        }
        let id = next_dev_id(&meta);
        meta.md.create_thin(id).map_err(|e| self.inner.metadata_failed(&mut meta, e))?;
        let v = VolumeConfig {
            dev_id: id.0,
            size_bytes,
            read_only: false,
            snapshot_of: None,
            origin_deleted: false,
        };
        self.add_volume(meta, name, v)
    }

    /// Snapshots `origin` as `name`: a consistent point (in-flight writes to the origin
    /// finish first, new ones wait), O(1) whatever the origin's size or chain depth.
    pub fn snapshot(&self, origin: &str, name: &str, read_only: bool) -> Result<Volume> {
        validate_volume_name(name).map_err(PoolError::Invalid)?;
        let origin_state = self.state_of(origin)?;
        let _quiesced = origin_state.gate.write().unwrap_or_else(|e| e.into_inner());
        let mut meta = self.inner.settled(self.inner.meta(), Some(origin_state.dev));
        self.inner.check_writable(&meta)?;
        if meta.config.volumes.contains_key(name) {
            return Err(PoolError::VolumeExists(name.to_string()));
        }
        let id = next_dev_id(&meta);
        let origin_dev = DevId(origin_state.dev);
        meta.md
            .create_snap(id, origin_dev)
            .map_err(|e| self.inner.metadata_failed(&mut meta, e))?;
        let v = VolumeConfig {
            dev_id: id.0,
            size_bytes: origin_state.size_bytes.load(Ordering::SeqCst),
            read_only,
            snapshot_of: Some(origin.to_string()),
            origin_deleted: false,
        };
        self.add_volume(meta, name, v)
    }

    /// Deletes a volume, freeing what no other volume shares. Waits for its in-flight I/O.
    pub fn delete_volume(&self, name: &str) -> Result<()> {
        let state = self.state_of(name)?;
        let _quiesced = state.gate.write().unwrap_or_else(|e| e.into_inner());
        let mut meta = self.inner.settled(self.inner.meta(), Some(state.dev));
        self.inner.check_writable(&meta)?;
        meta.md.delete(DevId(state.dev)).map_err(|e| self.inner.metadata_failed(&mut meta, e))?;
        meta.config.volumes.remove(name);
        state.deleted.store(true, Ordering::SeqCst);
        self.inner.volumes.write().unwrap_or_else(|e| e.into_inner()).remove(name);
        let mut changes =
            vec![ConfigChange::RemoveVolume { name: name.to_string(), dev_id: Some(state.dev) }];
        // Its snapshots now show their origin as deleted, not a name a later volume may
        // take (`snapshot_of` stays: it is their line of ancestry, see `changes`).
        for (snap, v) in meta.config.volumes.iter_mut() {
            if v.snapshot_of.as_deref() == Some(name) && !v.origin_deleted {
                v.origin_deleted = true;
                changes.push(ConfigChange::PutVolume { name: snap.clone(), volume: v.clone() });
            }
        }
        self.persist(meta, changes, Order::CommitFirst)
    }

    /// Grows or shrinks a volume; shrinking discards everything past the new end.
    pub fn resize_volume(&self, name: &str, size_bytes: u64) -> Result<()> {
        check_size(size_bytes, self.inner.block_size)?;
        let state = self.state_of(name)?;
        let _quiesced = state.gate.write().unwrap_or_else(|e| e.into_inner());
        let mut meta = self.inner.settled(self.inner.meta(), Some(state.dev));
        self.inner.check_writable(&meta)?;
        let bs = self.inner.block_size;
        let keep = size_bytes.div_ceil(bs);
        let r = meta.md.remove_range(DevId(state.dev), VirtBlock(keep), VirtBlock(u64::MAX));
        r.map_err(|e| self.inner.metadata_failed(&mut meta, e))?;
        if !size_bytes.is_multiple_of(bs) {
            // The last block is partly outside the volume: zero that tail so that growing
            // the volume again reads zeros there.
            drop(meta);
            let vol = Volume::new(self.inner.clone(), state.clone());
            vol.zero_block_tail(size_bytes / bs, size_bytes % bs)?;
            meta = self.inner.meta();
        }
        let mut changes = Vec::new();
        if let Some(v) = meta.config.volumes.get_mut(name) {
            v.size_bytes = size_bytes;
            changes.push(ConfigChange::PutVolume { name: name.to_string(), volume: v.clone() });
        }
        state.size_bytes.store(size_bytes, Ordering::SeqCst);
        // Commit first: a crash before the journal line leaves the old (larger) size over
        // mappings already removed, which read as zeros, never old data past a shrink.
        self.persist(meta, changes, Order::CommitFirst)
    }

    /// The pool's settings.
    pub fn settings(&self) -> PoolSettings {
        self.inner.meta().config.settings.clone()
    }

    /// Replaces the pool's settings (stored in pool.json). The data block size is fixed.
    pub fn set_settings(&self, settings: PoolSettings) -> Result<()> {
        let mut meta = self.inner.meta();
        if settings.data_block_size_bytes != meta.config.settings.data_block_size_bytes {
            return Err(PoolError::Invalid("the data block size cannot change".into()));
        }
        meta.config.settings = settings.clone();
        let free = meta.md.nr_free_data_blocks();
        meta.lwm_armed = free > meta.config.settings.low_water_mark_blocks;
        let meta = &mut *meta;
        self.inner.config_store.append(&[ConfigChange::Settings { settings }], &mut meta.config)?;
        Ok(())
    }

    /// Grows the data device to `size_bytes` (re-arms the low water mark).
    pub fn extend(&self, size_bytes: u64) -> Result<()> {
        let mut meta = self.inner.meta();
        let nr = size_bytes / self.inner.block_size;
        self.inner.extend_locked(&mut meta, nr)?;
        let (_m, r) = self.inner.commit_locked(meta);
        r
    }

    /// Records a management operation's config `changes` (already applied to
    /// `meta.config`) as one journal line (O(1) whatever the volume count) and commits the
    /// metadata, in `order` (see the module doc). The metadata transaction id is left alone.
    /// A failure of either write fails the pool: what is on disk is then one of the two
    /// states open reconciles.
    pub(super) fn persist<'a>(
        &'a self,
        mut meta: std::sync::MutexGuard<'a, Meta>,
        changes: Vec<ConfigChange>,
        order: Order,
    ) -> Result<()> {
        if order == Order::CommitFirst {
            let (m, r) = self.inner.commit_locked(meta);
            r?;
            meta = m;
        }
        meta.config.transaction_id = meta.md.transaction_id();
        let m = &mut *meta;
        if let Err(e) = self.inner.config_store.append(&changes, &mut m.config) {
            self.inner.fail(&mut meta, &format!("writing pool.json failed: {e}"));
            return Err(e.into());
        }
        if order == Order::CommitFirst {
            return Ok(());
        }
        let (_m, r) = self.inner.commit_locked(meta);
        r
    }

    /// Names a new device `name` in the config, persists that with the metadata change the
    /// caller made, and registers the volume for I/O.
    pub(super) fn add_volume(
        &self,
        mut meta: std::sync::MutexGuard<'_, Meta>,
        name: &str,
        v: VolumeConfig,
    ) -> Result<Volume> {
        meta.config.volumes.insert(name.to_string(), v.clone());
        let change = ConfigChange::PutVolume { name: name.to_string(), volume: v.clone() };
        self.persist(meta, vec![change], Order::JournalFirst)?;
        Ok(self.register(name, &v))
    }

    pub(super) fn register(&self, name: &str, v: &VolumeConfig) -> Volume {
        let state = Arc::new(volume_state(name, v));
        self.inner
            .volumes
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .insert(name.to_string(), state.clone());
        Volume::new(self.inner.clone(), state)
    }

    /// The metadata device (for the tools and tests).
    pub fn metadata_device(&self) -> Arc<dyn BlockDevice> {
        self.inner.metadata_dev.clone()
    }
}

/// Which of a management operation's two writes goes first (see the module doc).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Order {
    /// The journal line, then the commit: for changes that add a device.
    JournalFirst,
    /// The commit, then the journal line: for changes that remove or shrink one.
    CommitFirst,
}

pub(super) fn volume_state(name: &str, v: &VolumeConfig) -> VolumeState {
    VolumeState {
        name: name.to_string(),
        dev: v.dev_id,
        size_bytes: AtomicU64::new(v.size_bytes),
        read_only: v.read_only,
        gate: RwLock::new(()),
        deleted: AtomicBool::new(false),
        handles: AtomicUsize::new(0),
    }
}

/// A volume size: a positive multiple of 512 of at most 2^40 blocks (the data space's
/// own limit, `MAX_DATA_BLOCKS`).
fn check_size(size_bytes: u64, block_size: u64) -> Result<()> {
    if !size_bytes.is_multiple_of(512) || size_bytes == 0 {
        return Err(PoolError::Invalid(format!(
            "volume size {size_bytes} must be a positive multiple of 512"
        )));
    }
    if size_bytes.div_ceil(block_size) > crate::limits::MAX_DATA_BLOCKS {
        return Err(PoolError::Invalid(format!("volume size {size_bytes} is too large")));
    }
    Ok(())
}

fn next_dev_id(meta: &Meta) -> DevId {
    let used: Vec<DevId> = meta.md.device_ids();
    let next = used.last().map_or(1, |d| d.0 + 1);
    if next <= crate::limits::MAX_DEV_ID {
        return DevId(next);
    }
    // Wrapped: find a hole.
    DevId(
        (1..=crate::limits::MAX_DEV_ID)
            .find(|i| used.binary_search(&DevId(*i)).is_err())
            .unwrap_or(0),
    )
}
