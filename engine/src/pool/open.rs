//! Pool lifecycle: create, format, open (with pool.json reconciliation and the exclusive
//! lock), start (the commit timer), close.
//!
//! Open never writes the data file. It checks the metadata first (the internal checker:
//! every tree, and the space maps against the references): a pool whose space map
//! disagrees with its mappings, or with any other fatal problem, opens read-only and says
//! which commands to run (thin_check, thin_repair) — it never repairs by destroying data.

use super::commit::spawn_timer;
use super::config::{
    ConfigStore, DirConfigStore, PoolConfig, PoolSettings, VolumeConfig, CONFIG_COPY_FILE,
    CONFIG_FILE, CONFIG_FORMAT, JOURNAL_FILE,
};
use super::holes::Holes;
use super::manage::volume_state;
use super::{Inner, Meta, Mode, Pool, PoolError, Result};
use crate::io::{BlockDevice, DataDevice, FileData, FileDevice, IoMode};
use crate::thin::{check, CheckOptions, OpenOptions, ThinMetadata};
use crate::units::DevId;
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
        let made_dir = !dir.exists();
        std::fs::create_dir_all(dir)?;
        if dir.join(METADATA_FILE).exists() {
            return Err(PoolError::Invalid(format!("{} already holds a pool", dir.display())));
        }
        // A failed create leaves nothing behind: the files it made go (never one it found).
        let names = [METADATA_FILE, DATA_FILE, CONFIG_FILE, CONFIG_COPY_FILE, JOURNAL_FILE];
        let tmps = names.map(|n| format!(".{n}.tmp"));
        let new: Vec<_> = names
            .iter()
            .copied()
            .chain(tmps.iter().map(String::as_str))
            .map(|n| dir.join(n))
            .filter(|p| !p.exists())
            .collect();
        let r = Self::create_files(dir, opts);
        if r.is_err() {
            for path in new {
                let _ = std::fs::remove_file(path);
            }
            if made_dir {
                let _ = std::fs::remove_dir(dir);
            }
        }
        r
    }

    fn create_files(dir: &Path, opts: &PoolOptions) -> Result<Pool> {
        let bs = opts.settings.data_block_size_bytes;
        let meta_path = dir.join(METADATA_FILE);
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
    /// `data` must read as zeros, as a new sparse file does: its blocks are known holes.
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
            journal_seq: 0,
        };
        store.store(&config)?;
        let mut holes = Holes::default();
        holes.insert(0, nr_blocks);
        let state = Opened { md, config, mode: Mode::Write, holes };
        Self::start(state, dev, data, store, lock, label)
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
        let meta_file = FileDevice::open(&meta_path, false)?;
        // Pools made before metadata was preallocated: allocate it now if there is room.
        let len = meta_file.file().metadata()?.len();
        if let Err(e) = crate::io::preallocate(meta_file.file(), 0, len) {
            tracing::warn!("{}: preallocating the metadata file: {e}", dir.display());
        }
        let dev: Arc<dyn BlockDevice> = Arc::new(meta_file);
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
        let suspect = check_at_open(&dev, label)?;
        let read_only = suspect.is_some();
        let mut md =
            ThinMetadata::open(dev.clone(), OpenOptions { read_only, ..Default::default() })?;
        let bs = md.data_block_size_sectors() as u64 * 512;
        let stored = store.load()?;
        let config = reconcile(&mut md, stored, bs, !read_only)?;
        if data.len_bytes() < md.nr_data_blocks() * bs {
            return Err(PoolError::Invalid(format!(
                "the data file holds {} bytes but the metadata maps {} blocks of {bs}",
                data.len_bytes(),
                md.nr_data_blocks()
            )));
        }
        if !read_only {
            match store.store(&config) {
                // pool.json and its journal on disk still hold what was loaded.
                Err(e) if e.raw_os_error() == Some(nix::libc::ENOSPC) => {
                    tracing::warn!("{label}: no space to checkpoint pool.json: {e}")
                }
                r => r?,
            }
        }
        let mode = suspect.map_or(Mode::Write, Mode::ReadOnly);
        // Nothing is known about free blocks here: any may hold old bytes.
        let state = Opened { md, config, mode, holes: Holes::default() };
        Self::start(state, dev, data, store, lock, label)
    }

    fn start(
        state: Opened,
        dev: Arc<dyn BlockDevice>,
        data: Arc<dyn DataDevice>,
        store: Box<dyn ConfigStore>,
        lock: Option<PoolLock>,
        label: &str,
    ) -> Result<Pool> {
        let Opened { md, config, mode, holes } = state;
        let block_size = md.data_block_size_sectors() as u64 * 512;
        let interval = config.settings.commit_interval();
        let volumes = config
            .volumes
            .iter()
            .map(|(name, v)| (name.clone(), Arc::new(volume_state(name, v))))
            .collect();
        let free = md.nr_free_data_blocks();
        let lwm_armed = free > config.settings.low_water_mark_blocks;
        let inner = Arc::new(Inner {
            label: label.to_string(),
            meta: Mutex::new(Meta {
                md,
                config,
                mode,
                lwm_armed,
                provisioning: 0,
                commit_waiting: false,
                committing: false,
                syncing: false,
                commit_gen: 0,
                parked: Vec::new(),
                committed_writes: 0,
                holes,
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
            open_handles: Default::default(),
            subscribers: Mutex::new(Vec::new()),
            stopping: AtomicBool::new(false),
            timer: Mutex::new(None),
            _lock: lock,
        });
        if !interval.is_zero() {
            let handle = spawn_timer(&inner, interval)?;
            *super::lock(&inner.timer) = Some(handle.thread().clone());
        }
        Ok(Pool { inner })
    }

    /// Commits and stops the timer. Further I/O on volumes still works until the last
    /// handle goes; this is the clean shutdown. It also folds the config journal
    /// (`pool.log`) into a new checkpoint (`pool.json`), so that after a clean shutdown
    /// `pool.json` alone says what the pool holds; a read-only (failed) pool writes nothing.
    pub fn close(&self) -> Result<()> {
        self.inner.stopping.store(true, Ordering::SeqCst);
        if let Some(t) = super::lock(&self.inner.timer).take() {
            t.unpark();
        }
        self.inner.flush()?;
        let meta = self.inner.meta();
        if matches!(meta.mode, Mode::ReadOnly(_)) {
            return Ok(());
        }
        // Committed above: the config matches the metadata's transaction.
        self.inner.config_store.fold(&meta.config)?;
        Ok(())
    }

    /// Commits everything written so far.
    pub fn commit(&self) -> Result<()> {
        self.inner.flush()
    }
}

/// What `start` begins from: the metadata, the reconciled config, the mode (read-only when
/// the check at open failed) and the blocks known to be holes.
struct Opened {
    md: ThinMetadata,
    config: PoolConfig,
    mode: Mode,
    holes: Holes,
}

/// Runs the internal checker on the committed metadata. `Some(reason)` when it found a
/// fatal problem (a space map that disagrees with the mappings is one): the pool must not
/// take writes, which would trust that space map.
fn check_at_open(dev: &Arc<dyn BlockDevice>, label: &str) -> Result<Option<String>> {
    let report = check(dev.clone(), CheckOptions::default())?;
    let fatal: Vec<_> = report.problems.iter().filter(|p| p.fatal).collect();
    let Some(first) = fatal.first() else {
        for p in &report.problems {
            tracing::warn!(pool = %label, "metadata check: {p} (not fatal)");
        }
        return Ok(None);
    };
    for p in &fatal {
        tracing::error!(pool = %label, "metadata check: {p}");
    }
    let reason = format!(
        "the metadata fails its check ({} problems, the first: {first}); the pool is \
         read-only: run `thin_check` on {label}/{METADATA_FILE}, then `thin_repair` into a \
         new metadata file",
        fatal.len()
    );
    tracing::error!(pool = %label, "{reason}");
    Ok(Some(reason))
}

/// The exclusive lock on the metadata file that a pool holds while open.
pub type PoolLock = nix::fcntl::Flock<std::fs::File>;

/// Takes the exclusive lock on the metadata file (one process per pool).
fn lock_file(meta_path: &Path, dir: &Path) -> Result<PoolLock> {
    let f = std::fs::OpenOptions::new().read(true).open(meta_path)?;
    nix::fcntl::Flock::lock(f, nix::fcntl::FlockArg::LockExclusiveNonblock)
        .map_err(|_| PoolError::Busy(dir.display().to_string()))
}

/// Makes pool.json agree with the metadata after open. The metadata's device ids are the
/// truth; `persist` journals a name before its device is committed and forgets it only after
/// the device's removal is committed, so a crash between the two leaves a volume whose
/// device does not exist (an uncommitted create, or a committed delete): it is dropped.
/// Devices no volume names (made by another tool) get one, `thin<ID>`. The metadata
/// transaction id is the user's and plays no part — except in a pool.json of format 1,
/// whose operations moved it: one transaction ahead there meant an uncommitted delete (not
/// acted on when `writable` is false: then nothing is changed and such a device is named).
fn reconcile(
    md: &mut ThinMetadata,
    stored: Option<PoolConfig>,
    bs: u64,
    writable: bool,
) -> Result<PoolConfig> {
    let t = md.transaction_id();
    let legacy_ahead = stored
        .as_ref()
        .is_some_and(|c| c.format < CONFIG_FORMAT && c.transaction_id == t.wrapping_add(1))
        && writable;
    let mut config = stored.unwrap_or_else(|| PoolConfig {
        format: CONFIG_FORMAT,
        transaction_id: t,
        settings: PoolSettings { data_block_size_bytes: bs, ..PoolSettings::default() },
        volumes: BTreeMap::new(),
        journal_seq: 0,
    });
    if config.settings.data_block_size_bytes != bs {
        tracing::warn!(
            "pool.json says {} byte blocks, the metadata {bs}: using the metadata's",
            config.settings.data_block_size_bytes
        );
        config.settings.data_block_size_bytes = bs;
    }
    config.format = CONFIG_FORMAT;
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
        if legacy_ahead {
            tracing::warn!("device {id}: no volume names it (an uncommitted delete); deleting it");
            md.delete(id)?;
            changed = true;
        } else {
            let blocks = md.highest_mapped(id)?.map_or(0, |b| b.0 + 1).max(md.nr_data_blocks());
            let name = format!("thin{}", id.0);
            tracing::warn!(
                "device {id}: no volume names it; naming it {name}, GUESSING its size ({} \
                 bytes: the data device or its highest mapping, if larger) and that it is \
                 writable; fix them with `thinly resize` if pool.json was lost",
                blocks * bs
            );
            config.volumes.insert(
                name,
                VolumeConfig {
                    dev_id: id.0,
                    size_bytes: blocks * bs,
                    read_only: false,
                    snapshot_of: None,
                    origin_deleted: false,
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
