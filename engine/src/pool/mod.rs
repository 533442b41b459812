//! The pool: thin volumes that read and write bytes.
//!
//! A pool is a metadata device (dm-thin format), a data device (data block N at byte
//! N × block size) and `pool.json`. `Pool` owns them; `Volume` handles do I/O from many
//! threads at once. The life of a write (ARCHITECTURE.md): split at block boundaries; per
//! block, take the block's cell exclusively, look the block up, then write in place
//! (mapped, not shared), copy-on-write (mapped, shared: a new block, the old one copied
//! with copy_file_range unless the write covers it), or provision (a new block; the rest of
//! it reads as zeros); the new mapping joins the open transaction.
//!
//! Locks, always taken in this order: a volume's gate (shared by I/O, exclusive for
//! snapshot, delete and resize of that volume) → block cells (ascending) → the metadata
//! mutex (held briefly; during a commit also across the data-file sync).
//!
//! Durability (the contract with clients): a commit syncs the data file, then commits the
//! metadata. Commits happen on flush, on FUA writes, on every management operation and on a
//! timer. A data block allocated for a write is counted in the metadata only together with
//! its mapping: a commit waits for in-flight provisioning, so a crash never leaks it.
//! Provisioning does not stop while a commit syncs the data file (that sync is the slow
//! part of a commit): a mapping made meanwhile is parked, its block counted free in that
//! commit and its cell held, and joins the next transaction when the commit ends — so no
//! commit ever holds a mapping whose data its sync may have missed.
//!
//! Zeroing: a new block that a write covers only in part must read zeros elsewhere. The
//! pool knows which free blocks are holes (`holes::Holes`: the data file of a pool it
//! created, what an extend added, and what it punched after the commit that freed it); a
//! new block not known to be one is hole-punched just before its first write, when the
//! metadata has just given it to that write. Nothing is ever discarded or punched on the
//! space map's word alone: open does not touch the data file, and a pool whose space map
//! disagrees with its mappings (the internal check at open) opens read-only.
//!
//! Caching: data I/O goes through the kernel's page cache. When a write breaks sharing, the
//! old copy is left to the snapshots; while the writing volume is the only one open, its
//! clean cached pages are dropped just before the new copy is written, so the new copy
//! reuses that memory instead of growing the cache (`SnapshotCache`; a page of fresh memory
//! is what a first write costs most on a VM whose host takes free memory back).

mod changes;
mod commit;
pub mod config;
mod guard;
mod holes;
mod manage;
mod open;
mod prison;
mod status;
mod volume;

pub use crate::thin::RunDetail;
pub use changes::ChangedRanges;
pub use config::{
    AutoExtend, OutOfSpacePolicy, Overprovision, PoolConfig, PoolSettings, SnapshotCache,
    VolumeConfig,
};
pub use guard::Provisioning;
pub use open::PoolOptions;
pub use status::{PoolStatus, VolumeInfo, VolumeStatus};
pub use volume::{Extent, Volume};

use crate::io::{BlockDevice, DataDevice};
use crate::thin::ThinMetadata;
use config::ConfigStore;
use prison::Prison;
use std::collections::BTreeMap;
use std::io;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize};
use std::sync::{mpsc, Arc, Condvar, Mutex, MutexGuard, RwLock};

/// Errors of the pool's data path and management.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum PoolError {
    /// No data block free (after the out-of-space policy gave up), or metadata full.
    #[error("no space left in the pool: {0}")]
    NoSpace(String),
    /// The pool or the volume does not take writes.
    #[error("read-only: {0}")]
    ReadOnly(String),
    /// A request outside the volume, a bad name or size.
    #[error("invalid request: {0}")]
    Invalid(String),
    #[error("no volume named {0:?}")]
    NoVolume(String),
    #[error("a volume named {0:?} exists already")]
    VolumeExists(String),
    /// A guardrail refused a management operation (open volume, dependent snapshots,
    /// shrinking, over-provisioning); nothing changed. The message says how to override.
    #[error("refused: {0}")]
    Refused(String),
    /// The pool is opened by another process.
    #[error("pool {0} is in use by another process")]
    Busy(String),
    // The cause is in the message, not a `source`, so that error chains print it once.
    #[error("data device: {0}")]
    Io(io::Error),
    #[error("metadata: {0}")]
    Metadata(crate::Error),
}

impl From<io::Error> for PoolError {
    fn from(e: io::Error) -> Self {
        PoolError::Io(e)
    }
}

impl From<crate::Error> for PoolError {
    fn from(e: crate::Error) -> Self {
        PoolError::Metadata(e)
    }
}

pub type Result<T, E = PoolError> = std::result::Result<T, E>;

/// Something subscribers hear about.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PoolEvent {
    /// Free data blocks fell to the low water mark (raised once per crossing).
    LowWaterMark { free_blocks: u64, total_blocks: u64, block_size_bytes: u64 },
    /// A write found no free data block.
    OutOfDataSpace,
    /// The data file grew (auto-extend or `extend`).
    Extended { total_blocks: u64 },
    /// The pool stopped taking writes.
    ReadOnly { reason: String },
}

/// The kernel's pool modes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Mode {
    Write,
    OutOfDataSpace,
    ReadOnly(String),
}

/// Everything behind the metadata mutex.
struct Meta {
    md: ThinMetadata,
    config: PoolConfig,
    mode: Mode,
    /// The low-water-mark event may fire (re-armed when free space rises above the mark).
    lwm_armed: bool,
    /// Data blocks allocated whose mapping is not inserted yet.
    provisioning: u64,
    /// A commit waits for provisioning to drain; new allocations wait for it.
    commit_waiting: bool,
    /// A commit is running (possibly with the lock released for the data sync).
    committing: bool,
    /// The running commit is syncing the data file: provisioning goes on, but a mapping
    /// whose data was written now may miss the sync, so it is parked, not inserted.
    syncing: bool,
    /// Counts commits started; a provisioning remembers the one whose sync it overlapped.
    commit_gen: u64,
    /// Mappings provisioned during the running commit's data sync, inserted when that
    /// commit ends (into the next transaction). Their cells stay held meanwhile, so reads
    /// and writes of those blocks wait; paths that read mappings without cells wait for
    /// them with `Inner::settled`.
    parked: Vec<Parked>,
    /// `Inner::data_writes` as of the last commit.
    committed_writes: u64,
    /// Free blocks known to read as zeros (see the module's Zeroing paragraph).
    holes: holes::Holes,
}

/// A mapping whose data was written during a commit's data sync (see `Meta::parked`).
struct Parked {
    dev: u64,
    vblock: u64,
    block: crate::units::DataBlock,
    cell: prison::HeldCell,
}

pub(crate) struct VolumeState {
    name: String,
    dev: u64,
    size_bytes: AtomicU64,
    read_only: bool,
    /// Shared by I/O; exclusive for snapshot, delete, resize.
    gate: RwLock<()>,
    deleted: AtomicBool,
    /// Open `Volume` handles on this volume.
    handles: AtomicUsize,
}

struct Inner {
    label: String,
    meta: Mutex<Meta>,
    /// Signalled when provisioning drains and when a commit ends.
    provisioned: Condvar,
    /// Signalled when data space may have appeared (commit freed blocks, extend).
    space: Condvar,
    data: Arc<dyn DataDevice>,
    metadata_dev: Arc<dyn BlockDevice>,
    config_store: Box<dyn ConfigStore>,
    block_size: u64,
    prison: Prison,
    volumes: RwLock<BTreeMap<String, Arc<VolumeState>>>,
    /// Completed data writes (a commit covers those counted before its data sync).
    data_writes: AtomicU64,
    /// Open `Volume` handles, all volumes together.
    open_handles: AtomicUsize,
    subscribers: Mutex<Vec<mpsc::Sender<PoolEvent>>>,
    stopping: AtomicBool,
    /// The commit timer's thread, woken to stop.
    timer: Mutex<Option<std::thread::Thread>>,
    /// Held for the pool's lifetime: the exclusive lock on the metadata file.
    _lock: Option<open::PoolLock>,
}

/// A thin pool. Cheap to clone; the last clone closes it (committing).
#[derive(Clone)]
pub struct Pool {
    inner: Arc<Inner>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // A panic in another thread leaves the metadata as it was at a commit boundary or
    // mid-transaction; the transaction manager rejects use after a failed commit.
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl Inner {
    fn meta(&self) -> MutexGuard<'_, Meta> {
        lock(&self.meta)
    }

    fn emit(&self, event: PoolEvent) {
        tracing::info!(pool = %self.label, ?event, "pool event");
        lock(&self.subscribers).retain(|s| s.send(event.clone()).is_ok());
    }
}

impl Drop for Inner {
    /// The last handle is gone: commit what is left (a clean close already did).
    fn drop(&mut self) {
        let meta = self.meta();
        let (_meta, r) = self.commit_locked(meta);
        if let Err(e) = r {
            tracing::warn!(pool = %self.label, "final commit failed: {e}");
        }
    }
}

impl Pool {
    /// Subscribes to pool events (low water mark, out of space, extend, read-only).
    pub fn subscribe(&self) -> mpsc::Receiver<PoolEvent> {
        let (tx, rx) = mpsc::channel();
        lock(&self.inner.subscribers).push(tx);
        rx
    }

    pub fn data_block_size_bytes(&self) -> u64 {
        self.inner.block_size
    }

    /// Which data I/O path is in use ("io_uring" or "pread/pwrite").
    pub fn data_io_path(&self) -> &'static str {
        self.inner.data.io_path()
    }
}
