//! Pool lifecycle and management: create, open, close; volumes (create, snapshot, delete,
//! resize, list); extending the data device; status; the kernel's message vocabulary.

use super::commit::spawn_timer;
use super::config::{
    validate_volume_name, ConfigStore, DirConfigStore, PoolConfig, PoolSettings, VolumeConfig,
    CONFIG_FORMAT,
};
use super::{lock, Inner, Meta, Mode, Pool, PoolError, Result, Volume, VolumeState};
use crate::io::{BlockDevice, DataDevice, FileData, FileDevice, IoMode};
use crate::thin::{OpenOptions, ThinMetadata};
use crate::units::{DevId, VirtBlock};
use std::collections::BTreeMap;
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, RwLock};

pub const METADATA_FILE: &str = "metadata";
pub const DATA_FILE: &str = "data";

/// Thin devices the default metadata size makes room for (thin_metadata_size's -m).
const DEFAULT_MAX_THINS: u64 = 1000;
/// Never make metadata smaller than the kernel's suggested minimum.
const MIN_METADATA_BYTES: u64 = 2 << 20;

/// How to create a pool.
#[derive(Debug, Clone)]
pub struct PoolOptions {
    pub data_size_bytes: u64,
    /// Default: what the thin_metadata_size formula gives for the data size.
    pub metadata_size_bytes: Option<u64>,
    pub settings: PoolSettings,
    pub io_mode: IoMode,
    pub cache_bytes: usize,
}

impl Default for PoolOptions {
    fn default() -> Self {
        PoolOptions {
            data_size_bytes: 16 << 30,
            metadata_size_bytes: None,
            settings: PoolSettings::default(),
            io_mode: IoMode::Auto,
            cache_bytes: crate::limits::DEFAULT_CACHE_BYTES,
        }
    }
}

impl PoolOptions {
    fn metadata_bytes(&self) -> u64 {
        self.metadata_size_bytes.unwrap_or_else(|| {
            let nr = self.data_size_bytes / self.settings.data_block_size_bytes;
            crate::fsck::metadata_size::estimate_bytes_v1(nr, DEFAULT_MAX_THINS)
                .max(MIN_METADATA_BYTES)
        })
    }
}

/// The kernel's thin-pool status fields.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct PoolStatus {
    pub transaction_id: u64,
    pub used_metadata_blocks: u64,
    pub total_metadata_blocks: u64,
    pub used_data_blocks: u64,
    pub total_data_blocks: u64,
    pub held_metadata_root: Option<u64>,
    /// "rw", "out_of_data_space" or "ro".
    pub mode: String,
    pub read_only_reason: Option<String>,
    pub discard_passdown: bool,
    pub out_of_space_policy: String,
    pub needs_check: bool,
    pub metadata_low_watermark: u64,
    pub data_block_size_bytes: u64,
    pub low_water_mark_blocks: u64,
    pub data_io: String,
}

impl std::fmt::Display for PoolStatus {
    /// `dmsetup status` of a thin-pool target, less the leading start/length/type.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} {}/{} {}/{} {} {} {} {} {} {}",
            self.transaction_id,
            self.used_metadata_blocks,
            self.total_metadata_blocks,
            self.used_data_blocks,
            self.total_data_blocks,
            self.held_metadata_root.map_or("-".to_string(), |b| b.to_string()),
            self.mode,
            if self.discard_passdown { "discard_passdown" } else { "no_discard_passdown" },
            self.out_of_space_policy,
            if self.needs_check { "needs_check" } else { "-" },
            self.metadata_low_watermark,
        )
    }
}

/// A volume's status: the kernel's thin target fields, in sectors.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct VolumeStatus {
    pub name: String,
    pub dev_id: u64,
    pub size_bytes: u64,
    pub read_only: bool,
    pub mapped_sectors: u64,
    /// Highest mapped sector, if any block is mapped.
    pub highest_mapped_sector: Option<u64>,
    pub snapshot_of: Option<String>,
}

impl std::fmt::Display for VolumeStatus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.highest_mapped_sector {
            Some(h) => write!(f, "{} {h}", self.mapped_sectors),
            None => write!(f, "{} -", self.mapped_sectors),
        }
    }
}

/// A volume as `list` shows it.
pub type VolumeInfo = (String, VolumeConfig);

impl Pool {
    /// Creates a pool directory: metadata (formatted), a sparse data file, pool.json.
    pub fn create(dir: &Path, opts: &PoolOptions) -> Result<Pool> {
        let bs = opts.settings.data_block_size_bytes;
        if !bs.is_multiple_of(512)
            || !(64 << 10..=1 << 30).contains(&bs)
            || !(bs / 512).is_multiple_of(128)
        {
            return Err(PoolError::Invalid(format!(
                "data block size {bs} bytes: must be a multiple of 64 KiB from 64 KiB to 1 GiB"
            )));
        }
        if opts.data_size_bytes < bs {
            return Err(PoolError::Invalid("the data device must hold at least one block".into()));
        }
        std::fs::create_dir_all(dir)?;
        let meta_path = dir.join(METADATA_FILE);
        if meta_path.exists() {
            return Err(PoolError::Invalid(format!("{} already holds a pool", dir.display())));
        }
        let nr_meta_blocks = opts.metadata_bytes().div_ceil(4096);
        let dev: Arc<dyn BlockDevice> = Arc::new(FileDevice::create(&meta_path, nr_meta_blocks)?);
        let lock = lock_file(&meta_path, dir)?;
        let nr_blocks = opts.data_size_bytes / bs;
        let data: Arc<dyn DataDevice> =
            Arc::new(FileData::create(&dir.join(DATA_FILE), nr_blocks * bs, opts.io_mode)?);
        Self::format_on(
            dev,
            data,
            Box::new(DirConfigStore::new(dir)),
            opts,
            Some(lock),
            &dir.display().to_string(),
        )
    }

    /// Formats a pool on the given devices (tests use memory and fault-injecting ones).
    pub fn format_on(
        dev: Arc<dyn BlockDevice>,
        data: Arc<dyn DataDevice>,
        store: Box<dyn ConfigStore>,
        opts: &PoolOptions,
        lock: Option<PoolLock>,
        label: &str,
    ) -> Result<Pool> {
        let bs = opts.settings.data_block_size_bytes;
        let nr_blocks = data.len_bytes() / bs;
        let md = ThinMetadata::format(dev.clone(), (bs / 512) as u32, nr_blocks, opts.cache_bytes)?;
        let config = PoolConfig {
            format: CONFIG_FORMAT,
            transaction_id: md.transaction_id(),
            settings: opts.settings.clone(),
            volumes: BTreeMap::new(),
        };
        store.store(&config)?;
        Self::start(md, config, dev, data, store, lock, label)
    }

    /// Opens the pool in `dir` (exclusively).
    pub fn open(dir: &Path, io_mode: IoMode) -> Result<Pool> {
        let meta_path = dir.join(METADATA_FILE);
        if !meta_path.exists() {
            return Err(PoolError::Invalid(format!(
                "{} holds no pool (no {METADATA_FILE} file)",
                dir.display()
            )));
        }
        let lock = lock_file(&meta_path, dir)?;
        let dev: Arc<dyn BlockDevice> = Arc::new(FileDevice::open(&meta_path, false)?);
        let data: Arc<dyn DataDevice> = Arc::new(FileData::open(&dir.join(DATA_FILE), io_mode)?);
        Self::open_on(
            dev,
            data,
            Box::new(DirConfigStore::new(dir)),
            Some(lock),
            &dir.display().to_string(),
        )
    }

    /// Opens a pool on the given devices, reconciling pool.json with the metadata.
    pub fn open_on(
        dev: Arc<dyn BlockDevice>,
        data: Arc<dyn DataDevice>,
        store: Box<dyn ConfigStore>,
        lock: Option<PoolLock>,
        label: &str,
    ) -> Result<Pool> {
        let mut md = ThinMetadata::open(dev.clone(), OpenOptions::default())?;
        let bs = md.data_block_size_sectors() as u64 * 512;
        let stored = store.load()?;
        let config = reconcile(&mut md, stored, bs)?;
        if data.len_bytes() < md.nr_data_blocks() * bs {
            return Err(PoolError::Invalid(format!(
                "the data file holds {} bytes but the metadata maps {} blocks of {bs}",
                data.len_bytes(),
                md.nr_data_blocks()
            )));
        }
        store.store(&config)?;
        Self::start(md, config, dev, data, store, lock, label)
    }

    fn start(
        md: ThinMetadata,
        config: PoolConfig,
        dev: Arc<dyn BlockDevice>,
        data: Arc<dyn DataDevice>,
        store: Box<dyn ConfigStore>,
        lock: Option<PoolLock>,
        label: &str,
    ) -> Result<Pool> {
        let block_size = md.data_block_size_sectors() as u64 * 512;
        let interval = config.settings.commit_interval();
        let volumes = config
            .volumes
            .iter()
            .map(|(name, v)| (name.clone(), Arc::new(volume_state(name, v))))
            .collect();
        let free = md.nr_free_data_blocks();
        let lwm_armed = free > config.settings.low_water_mark_blocks;
        let zero_free = config.settings.zeroing;
        let inner = Arc::new(Inner {
            label: label.to_string(),
            meta: Mutex::new(Meta {
                md,
                config,
                mode: Mode::Write,
                lwm_armed,
                provisioning: 0,
                commit_waiting: false,
                committing: false,
                committed_writes: 0,
                unzeroed: Default::default(),
            }),
            provisioned: Condvar::new(),
            space: Condvar::new(),
            data,
            metadata_dev: dev,
            config_store: store,
            block_size,
            prison: Default::default(),
            volumes: RwLock::new(volumes),
            data_writes: AtomicU64::new(0),
            subscribers: Mutex::new(Vec::new()),
            stopping: AtomicBool::new(false),
            timer: Mutex::new(None),
            _lock: lock,
        });
        if zero_free {
            // Free blocks may hold old data (a crash lost the transaction that wrote them,
            // or another tool wrote the pool): make every one a hole.
            let mut meta = inner.meta();
            for (start, n) in meta.md.free_data_runs() {
                inner.punch_run(&mut meta, start.0, n);
            }
        }
        if !interval.is_zero() {
            let handle = spawn_timer(&inner, interval)?;
            *lock_mutex(&inner.timer) = Some(handle.thread().clone());
        }
        Ok(Pool { inner })
    }

    /// Commits and stops the timer. Further I/O on volumes still works until the last
    /// handle goes; this is the clean shutdown.
    pub fn close(&self) -> Result<()> {
        self.inner.stopping.store(true, Ordering::SeqCst);
        if let Some(t) = lock_mutex(&self.inner.timer).take() {
            t.unpark();
        }
        self.inner.flush()
    }

    /// Commits everything written so far.
    pub fn commit(&self) -> Result<()> {
        self.inner.flush()
    }

    pub fn volume(&self, name: &str) -> Result<Volume> {
        let vols = self.inner.volumes.read().unwrap_or_else(|e| e.into_inner());
        let state = vols.get(name).cloned().ok_or_else(|| PoolError::NoVolume(name.to_string()))?;
        Ok(Volume { inner: self.inner.clone(), state })
    }

    pub fn list(&self) -> Vec<VolumeInfo> {
        let meta = self.inner.meta();
        meta.config.volumes.iter().map(|(n, v)| (n.clone(), v.clone())).collect()
    }

    /// Creates an empty volume of `size_bytes` (a multiple of 512).
    pub fn create_volume(&self, name: &str, size_bytes: u64) -> Result<Volume> {
        validate_volume_name(name).map_err(PoolError::Invalid)?;
        check_size(size_bytes)?;
        let mut meta = self.inner.meta();
        self.inner.check_writable(&meta)?;
        if meta.config.volumes.contains_key(name) {
            return Err(PoolError::VolumeExists(name.to_string()));
        }
        let id = next_dev_id(&meta);
        meta.md.create_thin(id).map_err(|e| self.inner.metadata_failed(&mut meta, e))?;
        let v = VolumeConfig { dev_id: id.0, size_bytes, read_only: false, snapshot_of: None };
        meta.config.volumes.insert(name.to_string(), v.clone());
        self.persist(meta)?;
        Ok(self.register(name, &v))
    }

    /// Snapshots `origin` as `name`: a consistent point (in-flight writes to the origin
    /// finish first, new ones wait), O(1) whatever the origin's size or chain depth.
    pub fn snapshot(&self, origin: &str, name: &str, read_only: bool) -> Result<Volume> {
        validate_volume_name(name).map_err(PoolError::Invalid)?;
        let origin_state = self.volume(origin)?.state;
        let _quiesced = origin_state.gate.write().unwrap_or_else(|e| e.into_inner());
        let mut meta = self.inner.meta();
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
        };
        meta.config.volumes.insert(name.to_string(), v.clone());
        self.persist(meta)?;
        Ok(self.register(name, &v))
    }

    /// Deletes a volume, freeing what no other volume shares. Waits for its in-flight I/O.
    pub fn delete_volume(&self, name: &str) -> Result<()> {
        let state = self.volume(name)?.state;
        let _quiesced = state.gate.write().unwrap_or_else(|e| e.into_inner());
        let mut meta = self.inner.meta();
        self.inner.check_writable(&meta)?;
        meta.md.delete(DevId(state.dev)).map_err(|e| self.inner.metadata_failed(&mut meta, e))?;
        meta.config.volumes.remove(name);
        state.deleted.store(true, Ordering::SeqCst);
        self.inner.volumes.write().unwrap_or_else(|e| e.into_inner()).remove(name);
        self.persist(meta)
    }

    /// Grows or shrinks a volume; shrinking discards everything past the new end.
    pub fn resize_volume(&self, name: &str, size_bytes: u64) -> Result<()> {
        check_size(size_bytes)?;
        let state = self.volume(name)?.state;
        let _quiesced = state.gate.write().unwrap_or_else(|e| e.into_inner());
        let mut meta = self.inner.meta();
        self.inner.check_writable(&meta)?;
        let bs = self.inner.block_size;
        let keep = size_bytes.div_ceil(bs);
        let r = meta.md.remove_range(DevId(state.dev), VirtBlock(keep), VirtBlock(u64::MAX));
        r.map_err(|e| self.inner.metadata_failed(&mut meta, e))?;
        if !size_bytes.is_multiple_of(bs) {
            // The last block is partly outside the volume: zero that tail so that growing
            // the volume again reads zeros there.
            drop(meta);
            let vol = Volume { inner: self.inner.clone(), state: state.clone() };
            vol.zero_block_tail(size_bytes / bs, size_bytes % bs)?;
            meta = self.inner.meta();
        }
        if let Some(v) = meta.config.volumes.get_mut(name) {
            v.size_bytes = size_bytes;
        }
        state.size_bytes.store(size_bytes, Ordering::SeqCst);
        self.persist(meta)
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
        meta.config.settings = settings;
        let free = meta.md.nr_free_data_blocks();
        meta.lwm_armed = free > meta.config.settings.low_water_mark_blocks;
        self.inner.config_store.store(&meta.config)?;
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

    pub fn status(&self) -> PoolStatus {
        let meta = self.inner.meta();
        let s = meta.md.status();
        let (mode, reason) = match &meta.mode {
            Mode::Write => ("rw", None),
            Mode::OutOfDataSpace => ("out_of_data_space", None),
            Mode::ReadOnly(r) => ("ro", Some(r.clone())),
        };
        PoolStatus {
            transaction_id: s.transaction_id,
            used_metadata_blocks: s.used_metadata_blocks,
            total_metadata_blocks: s.total_metadata_blocks,
            used_data_blocks: s.used_data_blocks,
            total_data_blocks: s.total_data_blocks,
            held_metadata_root: s.held_root,
            mode: mode.to_string(),
            read_only_reason: reason,
            discard_passdown: true,
            out_of_space_policy: meta.config.settings.out_of_space.kernel_name().to_string(),
            needs_check: s.needs_check,
            metadata_low_watermark: crate::limits::metadata_reserve_blocks(s.total_metadata_blocks),
            data_block_size_bytes: self.inner.block_size,
            low_water_mark_blocks: meta.config.settings.low_water_mark_blocks,
            data_io: self.inner.data.io_path().to_string(),
        }
    }

    pub fn volume_status(&self, name: &str) -> Result<VolumeStatus> {
        let state = self.volume(name)?.state;
        let mut meta = self.inner.meta();
        let dev = DevId(state.dev);
        let details = meta.md.device_details(dev)?;
        let highest = meta.md.highest_mapped(dev)?;
        let spb = self.inner.block_size / 512;
        let snapshot_of = meta.config.volumes.get(name).and_then(|v| v.snapshot_of.clone());
        Ok(VolumeStatus {
            name: name.to_string(),
            dev_id: state.dev,
            size_bytes: state.size_bytes.load(Ordering::SeqCst),
            read_only: state.read_only,
            mapped_sectors: details.mapped_blocks * spb,
            highest_mapped_sector: highest.map(|b| (b.0 + 1) * spb - 1),
            snapshot_of,
        })
    }

    /// Runs a kernel thin-pool message: create_thin, create_snap, delete,
    /// set_transaction_id, reserve_metadata_snap, release_metadata_snap. A device created
    /// this way gets a volume named `thin<ID>` as large as the data device.
    pub fn message(&self, text: &str) -> Result<String> {
        let words: Vec<&str> = text.split_whitespace().collect();
        let num = |i: usize| -> Result<u64> {
            words.get(i).and_then(|w| w.parse().ok()).ok_or_else(|| {
                PoolError::Invalid(format!("message {text:?}: argument {i} must be a number"))
            })
        };
        let argc = |n: usize| -> Result<()> {
            if words.len() != n + 1 {
                return Err(PoolError::Invalid(format!("message {text:?} takes {n} arguments")));
            }
            Ok(())
        };
        match words.first().copied() {
            Some("create_thin") => {
                argc(1)?;
                let id = DevId(num(1)?);
                let size = self.status().total_data_blocks * self.inner.block_size;
                self.device_message(
                    |meta| meta.md.create_thin(id),
                    |_| (format!("thin{}", id.0), size, None),
                )
            }
            Some("create_snap") => {
                argc(2)?;
                let (id, origin) = (DevId(num(1)?), DevId(num(2)?));
                let origin_vol = self.volume_of(origin);
                if let Some((_, st)) = &origin_vol {
                    let _q = st.gate.write().unwrap_or_else(|e| e.into_inner());
                    return self.device_message(
                        |meta| meta.md.create_snap(id, origin),
                        |_| {
                            (
                                format!("thin{}", id.0),
                                st.size_bytes.load(Ordering::SeqCst),
                                origin_vol.as_ref().map(|o| o.0.clone()),
                            )
                        },
                    );
                }
                let size = self.status().total_data_blocks * self.inner.block_size;
                self.device_message(
                    |meta| meta.md.create_snap(id, origin),
                    |_| (format!("thin{}", id.0), size, None),
                )
            }
            Some("delete") => {
                argc(1)?;
                let id = DevId(num(1)?);
                match self.volume_of(id) {
                    Some((name, _)) => self.delete_volume(&name).map(|()| String::new()),
                    None => Err(PoolError::Metadata(crate::Error::UnknownDevice(id))),
                }
            }
            Some("set_transaction_id") => {
                argc(2)?;
                let (old, new) = (num(1)?, num(2)?);
                let mut meta = self.inner.meta();
                self.inner.check_writable(&meta)?;
                meta.md.set_transaction_id(old, new)?;
                meta.config.transaction_id = new;
                self.inner.config_store.store(&meta.config)?;
                let (_m, r) = self.inner.commit_locked(meta);
                r.map(|()| String::new())
            }
            Some("reserve_metadata_snap") => {
                argc(0)?;
                let mut meta = self.inner.meta();
                self.inner.check_writable(&meta)?;
                let r = meta.md.reserve_metadata_snap();
                r.map(|b| b.0.to_string()).map_err(|e| self.inner.metadata_failed(&mut meta, e))
            }
            Some("release_metadata_snap") => {
                argc(0)?;
                let mut meta = self.inner.meta();
                self.inner.check_writable(&meta)?;
                meta.md.release_metadata_snap().map(|()| String::new()).map_err(PoolError::from)
            }
            _ => Err(PoolError::Invalid(format!("unknown message {text:?}"))),
        }
    }

    fn volume_of(&self, id: DevId) -> Option<(String, Arc<VolumeState>)> {
        let vols = self.inner.volumes.read().unwrap_or_else(|e| e.into_inner());
        vols.iter().find(|(_, s)| s.dev == id.0).map(|(n, s)| (n.clone(), s.clone()))
    }

    fn device_message(
        &self,
        op: impl FnOnce(&mut Meta) -> crate::Result<()>,
        volume: impl FnOnce(&Meta) -> (String, u64, Option<String>),
    ) -> Result<String> {
        let mut meta = self.inner.meta();
        self.inner.check_writable(&meta)?;
        op(&mut meta).map_err(|e| match e {
            e @ (crate::Error::DeviceExists(_)
            | crate::Error::UnknownDevice(_)
            | crate::Error::Invalid(_)) => PoolError::Metadata(e),
            e => self.inner.metadata_failed(&mut meta, e),
        })?;
        let (mut name, size, snapshot_of) = volume(&meta);
        while meta.config.volumes.contains_key(&name) {
            name.push('_');
        }
        let ids = meta.md.device_ids();
        let id =
            ids.iter().copied().find(|d| !meta.config.volumes.values().any(|v| v.dev_id == d.0));
        let id = id.ok_or_else(|| PoolError::Invalid("the new device has no id".into()))?;
        let v = VolumeConfig { dev_id: id.0, size_bytes: size, read_only: false, snapshot_of };
        meta.config.volumes.insert(name.clone(), v.clone());
        self.persist(meta)?;
        self.register(&name, &v);
        Ok(name)
    }

    /// Stores pool.json with the next transaction id, then commits the metadata with it
    /// (so after a crash, reconcile can tell an uncommitted change from a committed one).
    fn persist(&self, mut meta: std::sync::MutexGuard<'_, Meta>) -> Result<()> {
        let t = meta.md.transaction_id();
        if let Err(e) = meta.md.set_transaction_id(t, t + 1) {
            return Err(self.inner.metadata_failed(&mut meta, e));
        }
        meta.config.transaction_id = t + 1;
        if let Err(e) = self.inner.config_store.store(&meta.config) {
            self.inner.fail(&mut meta, &format!("writing pool.json failed: {e}"));
            return Err(e.into());
        }
        let (_m, r) = self.inner.commit_locked(meta);
        r
    }

    fn register(&self, name: &str, v: &VolumeConfig) -> Volume {
        let state = Arc::new(volume_state(name, v));
        self.inner
            .volumes
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .insert(name.to_string(), state.clone());
        Volume { inner: self.inner.clone(), state }
    }

    /// The metadata device (for the tools and tests).
    pub fn metadata_device(&self) -> Arc<dyn BlockDevice> {
        self.inner.metadata_dev.clone()
    }
}

fn volume_state(name: &str, v: &VolumeConfig) -> VolumeState {
    VolumeState {
        name: name.to_string(),
        dev: v.dev_id,
        size_bytes: AtomicU64::new(v.size_bytes),
        read_only: v.read_only,
        gate: RwLock::new(()),
        deleted: AtomicBool::new(false),
    }
}

fn lock_mutex<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    lock(m)
}

fn check_size(size_bytes: u64) -> Result<()> {
    if !size_bytes.is_multiple_of(512) || size_bytes == 0 {
        return Err(PoolError::Invalid(format!(
            "volume size {size_bytes} must be a positive multiple of 512"
        )));
    }
    if size_bytes / 512 > (1u64 << 40) * (crate::limits::MAX_DATA_BLOCK_SECTORS as u64) {
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

/// The exclusive lock on the metadata file that a pool holds while open.
pub type PoolLock = nix::fcntl::Flock<std::fs::File>;

/// Takes the exclusive lock on the metadata file (one process per pool).
fn lock_file(meta_path: &Path, dir: &Path) -> Result<PoolLock> {
    let f = std::fs::OpenOptions::new().read(true).open(meta_path)?;
    nix::fcntl::Flock::lock(f, nix::fcntl::FlockArg::LockExclusiveNonblock)
        .map_err(|_| PoolError::Busy(dir.display().to_string()))
}

/// Makes pool.json agree with the metadata after open (see `persist` for the order of
/// writes): volumes whose device does not exist are dropped (an uncommitted create),
/// devices no volume names get one (`thin<ID>`, or — when pool.json is one transaction
/// ahead — are deleted: an uncommitted delete).
fn reconcile(md: &mut ThinMetadata, stored: Option<PoolConfig>, bs: u64) -> Result<PoolConfig> {
    let t = md.transaction_id();
    let mut config = stored.unwrap_or_else(|| PoolConfig {
        format: CONFIG_FORMAT,
        transaction_id: t,
        settings: PoolSettings { data_block_size_bytes: bs, ..PoolSettings::default() },
        volumes: BTreeMap::new(),
    });
    if config.settings.data_block_size_bytes != bs {
        tracing::warn!(
            "pool.json says {} byte blocks, the metadata {bs}: using the metadata's",
            config.settings.data_block_size_bytes
        );
        config.settings.data_block_size_bytes = bs;
    }
    let ahead = config.transaction_id == t + 1;
    if config.transaction_id != t && !ahead {
        tracing::warn!(
            "pool.json matches transaction {}, the metadata is at {t}: reconciling",
            config.transaction_id
        );
    }
    let ids = md.device_ids();
    config.volumes.retain(|name, v| {
        let keep = ids.contains(&DevId(v.dev_id));
        if !keep {
            tracing::warn!(
                "volume {name}: device {} does not exist (an uncommitted create); dropped",
                v.dev_id
            );
        }
        keep
    });
    let named: Vec<u64> = config.volumes.values().map(|v| v.dev_id).collect();
    let mut changed = false;
    for id in ids.into_iter().filter(|d| !named.contains(&d.0)) {
        if ahead {
            tracing::warn!("device {id}: no volume names it (an uncommitted delete); deleting it");
            md.delete(id)?;
            changed = true;
        } else {
            let blocks = md.highest_mapped(id)?.map_or(0, |b| b.0 + 1).max(md.nr_data_blocks());
            let name = format!("thin{}", id.0);
            tracing::info!("device {id}: no volume names it; naming it {name}");
            config.volumes.insert(
                name,
                VolumeConfig {
                    dev_id: id.0,
                    size_bytes: blocks * bs,
                    read_only: false,
                    snapshot_of: None,
                },
            );
        }
    }
    if changed {
        md.commit()?;
    }
    config.transaction_id = md.transaction_id();
    Ok(config)
}
