//! Live statistics of a pool: counters and latency histograms kept on the data path, and
//! the snapshot (`Pool::stats`) that `thinly stats` and the metrics endpoint show.
//!
//! Contracts:
//! - Cheap on the hot path: a counter is one relaxed atomic add; a latency is two clock
//!   reads and one record into a histogram shard picked per thread (`SHARDS` mutexes, so
//!   threads rarely meet). Waits on block cells and on the metadata lock cost clock reads
//!   only when the lock was not free at once. The `no-stats` cargo feature compiles all of
//!   it out (`crate::STATS`), which is how benches/stats.rs measures the cost.
//! - Counters count completed work: a request is counted (requests, bytes, latency) when it
//!   succeeds; data-file bytes and block events when the write that caused them succeeds.
//! - A snapshot reads the atomics one by one while I/O goes on: each figure is exact, the set
//!   is not one instant. `reset` zeroes everything (counters, histograms, lookup depths).
//! - Data-file bytes by cause: `client` (a client's bytes, zeros included), `cow` (bytes a
//!   copy-on-write copied from the shared block), `zeroing` (the rest of a new block that
//!   was not known to read as zeros, made zeros by a hole punch before a partial write).
//! - Per-volume counters live with the volume; a deleted volume's are folded into the
//!   pool's totals, which are the sum over volumes plus that remainder.

use hdrhistogram::Histogram;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Mutex;
use std::time::Instant;

macro_rules! counters {
    ($(#[$m:meta])* $ty:ident { $($v:ident => $name:literal, $help:literal;)* }) => {
        $(#[$m])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq)]
        pub enum $ty { $($v),* }
        impl $ty {
            pub const ALL: &'static [$ty] = &[$($ty::$v),*];
            /// The counter's name in `thinly stats --json` and (with a prefix) the metrics.
            pub fn name(self) -> &'static str {
                match self { $($ty::$v => $name),* }
            }
            /// One line saying what it counts (the metrics' HELP).
            pub fn help(self) -> &'static str {
                match self { $($ty::$v => $help),* }
            }
        }
    };
}

counters! {
    /// Counters kept per volume (and summed for the pool).
    VolumeCounter {
        ReadRequests => "read_requests", "read requests completed";
        ReadBytes => "read_bytes", "bytes read by clients";
        WriteRequests => "write_requests", "write requests completed (FUA ones included)";
        WriteBytes => "write_bytes", "bytes written by clients";
        WriteZeroesRequests => "write_zeroes_requests", "write-zeroes requests completed";
        WriteZeroesBytes => "write_zeroes_bytes", "bytes zeroed by write-zeroes requests";
        TrimRequests => "trim_requests", "trim (discard) requests completed";
        TrimBytes => "trim_bytes", "bytes covered by trim requests";
        FlushRequests => "flush_requests", "flush requests completed";
        FuaRequests => "fua_requests", "requests with FUA (write, write-zeroes, trim)";
        DataClientBytes => "data_written_client_bytes",
            "data-file bytes written with clients' data (zeros included)";
        DataCowBytes => "data_written_cow_bytes",
            "data-file bytes copied from shared blocks by copy-on-write";
        DataZeroingBytes => "data_written_zeroing_bytes",
            "data-file bytes zeroed in new blocks around a partial write";
        BlockWrites => "block_writes",
            "data blocks written (a request counts each block it touches)";
        BlocksProvisioned => "blocks_provisioned", "data blocks allocated for writes";
        CowBreaks => "cow_breaks", "writes to a shared block that broke sharing (copy-on-write)";
        BlocksUnmapped => "blocks_unmapped", "mappings removed by trim and write-zeroes";
    }
}

counters! {
    /// Counters kept for the pool as a whole.
    PoolCounter {
        CommitsFlush => "commits_flush", "commits caused by a flush request";
        CommitsFua => "commits_fua", "commits caused by a FUA request";
        CommitsTimer => "commits_timer", "commits made by the commit timer";
        CommitsManagement => "commits_management", "commits made by management operations";
        CommitsOther => "commits_other", "commits made on close or to reuse freed blocks";
        MetadataBlocksWritten => "metadata_blocks_written",
            "metadata blocks written (commits, cache evictions, superblocks)";
        BlocksFreed => "blocks_freed", "data blocks freed by commits";
        HolePunches => "hole_punches", "hole punches of the data file";
        HolePunchBytes => "hole_punch_bytes", "bytes hole-punched in the data file";
        CellWaits => "cell_waits", "block-cell locks that had to wait";
        CellWaitNanos => "cell_wait_ns", "nanoseconds spent waiting for block cells";
        MetadataLockWaits => "metadata_lock_waits", "metadata-lock acquisitions that had to wait";
        MetadataLockWaitNanos => "metadata_lock_wait_ns",
            "nanoseconds spent waiting for the metadata lock";
    }
}

const NR_VOLUME: usize = VolumeCounter::ALL.len();
const NR_POOL: usize = PoolCounter::ALL.len();

/// Operations with a latency histogram.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OpKind {
    Read,
    Write,
    WriteZeroes,
    Trim,
    Flush,
}

impl OpKind {
    pub const ALL: [OpKind; 5] =
        [OpKind::Read, OpKind::Write, OpKind::WriteZeroes, OpKind::Trim, OpKind::Flush];

    pub fn name(self) -> &'static str {
        match self {
            OpKind::Read => "read",
            OpKind::Write => "write",
            OpKind::WriteZeroes => "write_zeroes",
            OpKind::Trim => "trim",
            OpKind::Flush => "flush",
        }
    }

    fn counters(self) -> (VolumeCounter, Option<VolumeCounter>) {
        use VolumeCounter as V;
        match self {
            OpKind::Read => (V::ReadRequests, Some(V::ReadBytes)),
            OpKind::Write => (V::WriteRequests, Some(V::WriteBytes)),
            OpKind::WriteZeroes => (V::WriteZeroesRequests, Some(V::WriteZeroesBytes)),
            OpKind::Trim => (V::TrimRequests, Some(V::TrimBytes)),
            OpKind::Flush => (V::FlushRequests, None),
        }
    }
}

/// Why a commit ran.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CommitCause {
    Flush,
    Fua,
    Timer,
    Management,
    /// Close, or reclaiming blocks freed in the open transaction when space ran out.
    Other,
}

impl CommitCause {
    fn counter(self) -> PoolCounter {
        match self {
            CommitCause::Flush => PoolCounter::CommitsFlush,
            CommitCause::Fua => PoolCounter::CommitsFua,
            CommitCause::Timer => PoolCounter::CommitsTimer,
            CommitCause::Management => PoolCounter::CommitsManagement,
            CommitCause::Other => PoolCounter::CommitsOther,
        }
    }
}

/// Histogram shards: threads record into `thread index % SHARDS`.
const SHARDS: usize = 8;
/// Latencies above this (one minute, in nanoseconds) are recorded as this.
const MAX_LATENCY_NS: u64 = 60_000_000_000;
/// Significant decimal digits the histograms keep (1% resolution; ~25 KiB a histogram).
const SIGNIFICANT_DIGITS: u8 = 2;
/// Metadata blocks per commit above this are recorded as this.
const MAX_COMMIT_BLOCKS: u64 = 1 << 32;

fn histogram(max: u64) -> Histogram<u64> {
    // The bounds are constants that hdrhistogram accepts (low 1, high ≥ 2, 2 digits).
    Histogram::new_with_bounds(1, max, SIGNIFICANT_DIGITS).expect("valid histogram bounds")
}

/// A clock read that the `no-stats` build does not make.
#[derive(Clone, Copy)]
pub(crate) struct Clock(Option<Instant>);

impl Clock {
    #[inline]
    pub(crate) fn start() -> Clock {
        Clock(crate::STATS.then(Instant::now))
    }

    fn elapsed_ns(self) -> u64 {
        self.0.map_or(0, |t| t.elapsed().as_nanos().min(u64::MAX as u128) as u64)
    }
}

/// One volume's counters.
pub(crate) struct VolumeCounters([AtomicU64; NR_VOLUME]);

impl Default for VolumeCounters {
    fn default() -> Self {
        VolumeCounters(std::array::from_fn(|_| AtomicU64::new(0)))
    }
}

impl VolumeCounters {
    #[inline]
    pub(crate) fn add(&self, c: VolumeCounter, n: u64) {
        if crate::STATS {
            self.0[c as usize].fetch_add(n, Ordering::Relaxed);
        }
    }

    fn load(&self) -> [u64; NR_VOLUME] {
        std::array::from_fn(|i| self.0[i].load(Ordering::Relaxed))
    }

    fn reset(&self) {
        self.0.iter().for_each(|c| c.store(0, Ordering::Relaxed));
    }
}

/// Histograms of commits (rare: one mutex is enough).
struct CommitHistograms {
    latency_ns: Histogram<u64>,
    metadata_blocks: Histogram<u64>,
}

/// A pool's statistics (lives in the pool's `Inner`).
pub(crate) struct Stats {
    pool: [AtomicU64; NR_POOL],
    /// Counters of deleted volumes.
    retired: VolumeCounters,
    shards: Vec<Mutex<Vec<Histogram<u64>>>>,
    commits: Mutex<CommitHistograms>,
    since: Mutex<Instant>,
}

static NEXT_THREAD: AtomicUsize = AtomicUsize::new(0);

thread_local! {
    static SHARD: usize = NEXT_THREAD.fetch_add(1, Ordering::Relaxed) % SHARDS;
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl Default for Stats {
    fn default() -> Self {
        let shard = || Mutex::new(OpKind::ALL.iter().map(|_| histogram(MAX_LATENCY_NS)).collect());
        Stats {
            pool: std::array::from_fn(|_| AtomicU64::new(0)),
            retired: VolumeCounters::default(),
            shards: (0..if crate::STATS { SHARDS } else { 0 }).map(|_| shard()).collect(),
            commits: Mutex::new(CommitHistograms {
                latency_ns: histogram(MAX_LATENCY_NS),
                metadata_blocks: histogram(MAX_COMMIT_BLOCKS),
            }),
            since: Mutex::new(Instant::now()),
        }
    }
}

impl Stats {
    #[inline]
    pub(crate) fn add(&self, c: PoolCounter, n: u64) {
        if crate::STATS {
            self.pool[c as usize].fetch_add(n, Ordering::Relaxed);
        }
    }

    /// A request of `kind` covering `bytes` completed on the volume `vol`.
    #[inline]
    pub(crate) fn op_done(
        &self,
        vol: &VolumeCounters,
        kind: OpKind,
        bytes: u64,
        fua: bool,
        t: Clock,
    ) {
        if !crate::STATS {
            return;
        }
        let (requests, nr_bytes) = kind.counters();
        vol.add(requests, 1);
        if let Some(c) = nr_bytes {
            vol.add(c, bytes);
        }
        if fua {
            vol.add(VolumeCounter::FuaRequests, 1);
        }
        let ns = t.elapsed_ns().max(1);
        let shard = SHARD.with(|s| *s);
        lock(&self.shards[shard])[kind as usize].saturating_record(ns);
    }

    /// A wait for a lock that was not free at once ended.
    pub(crate) fn waited(&self, count: PoolCounter, nanos: PoolCounter, t: Clock) {
        if crate::STATS {
            self.add(count, 1);
            self.add(nanos, t.elapsed_ns());
        }
    }

    /// A commit that wrote `metadata_blocks` blocks finished.
    pub(crate) fn committed(&self, cause: CommitCause, metadata_blocks: u64, t: Clock) {
        if !crate::STATS {
            return;
        }
        self.add(cause.counter(), 1);
        self.add(PoolCounter::MetadataBlocksWritten, metadata_blocks);
        let mut h = lock(&self.commits);
        h.latency_ns.saturating_record(t.elapsed_ns().max(1));
        h.metadata_blocks.saturating_record(metadata_blocks);
    }

    /// Folds a deleted volume's counters into the pool's totals.
    pub(crate) fn retire(&self, vol: &VolumeCounters) {
        for (c, n) in VolumeCounter::ALL.iter().zip(vol.load()) {
            self.retired.add(*c, n);
        }
    }

    /// Zeroes the pool's own counters and histograms (volumes are reset by the caller).
    pub(crate) fn reset(&self) {
        self.pool.iter().for_each(|c| c.store(0, Ordering::Relaxed));
        self.retired.reset();
        for s in &self.shards {
            lock(s).iter_mut().for_each(Histogram::reset);
        }
        let mut h = lock(&self.commits);
        h.latency_ns.reset();
        h.metadata_blocks.reset();
        *lock(&self.since) = Instant::now();
    }

    /// The snapshot of the pool's figures; `volumes` are the live volumes' counters,
    /// `lookup_depths` the metadata's (`ThinMetadata::lookup_depths`).
    pub(crate) fn snapshot<'a>(
        &self,
        block_size_bytes: u64,
        volumes: impl Iterator<Item = (&'a str, &'a VolumeCounters)>,
        lookup_depths: &[u64],
    ) -> StatsSnapshot {
        let mut total = self.retired.load();
        let mut per_volume = BTreeMap::new();
        for (name, v) in volumes {
            let c = v.load();
            total.iter_mut().zip(c).for_each(|(t, n)| *t += n);
            per_volume.insert(name.to_string(), named(VolumeCounter::ALL, &c, |c| c.name()));
        }
        let mut pool = named(VolumeCounter::ALL, &total, |c| c.name());
        for c in PoolCounter::ALL {
            pool.insert(c.name().to_string(), self.pool[*c as usize].load(Ordering::Relaxed));
        }
        let mut latency = BTreeMap::new();
        for kind in OpKind::ALL {
            let mut h = histogram(MAX_LATENCY_NS);
            for s in &self.shards {
                // Same bounds everywhere: adding cannot fail.
                let _ = h.add(&lock(s)[kind as usize]);
            }
            latency.insert(kind.name().to_string(), Summary::of(&h, 1e-3));
        }
        let (commit_latency, commit_blocks) = {
            let h = lock(&self.commits);
            (Summary::of(&h.latency_ns, 1e-3), Summary::of(&h.metadata_blocks, 1.0))
        };
        latency.insert("commit".to_string(), commit_latency);
        let derived = Derived::of(&pool, Some(pool_metadata_bytes(&pool)), lookup_depths);
        StatsSnapshot {
            seconds: lock(&self.since).elapsed().as_secs_f64(),
            data_block_size_bytes: block_size_bytes,
            pool,
            volumes: per_volume,
            latency_us: latency,
            commit_metadata_blocks: commit_blocks,
            lookup_depths: trim_zeros(lookup_depths),
            derived,
        }
    }
}

fn named<C: Copy>(all: &[C], values: &[u64], name: impl Fn(C) -> &'static str) -> Counters {
    all.iter().zip(values).map(|(c, n)| (name(*c).to_string(), *n)).collect()
}

fn pool_metadata_bytes(pool: &Counters) -> u64 {
    let blocks = pool.get(PoolCounter::MetadataBlocksWritten.name()).copied().unwrap_or(0);
    blocks * crate::limits::META_BLOCK_SIZE as u64
}

/// Drops trailing zero entries (depth 0 never happens; deep trees are rare).
fn trim_zeros(depths: &[u64]) -> Vec<u64> {
    let end = depths.iter().rposition(|&n| n > 0).map_or(0, |i| i + 1);
    depths[..end].to_vec()
}

/// Counters by name.
pub type Counters = BTreeMap<String, u64>;

/// Percentiles of one histogram, in the unit the snapshot names (µs for latencies).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize, Default)]
pub struct Summary {
    pub count: u64,
    pub mean: f64,
    pub p50: f64,
    pub p90: f64,
    pub p99: f64,
    pub p999: f64,
    pub max: f64,
}

impl Summary {
    fn of(h: &Histogram<u64>, scale: f64) -> Summary {
        if h.is_empty() {
            return Summary::default();
        }
        let q = |q: f64| h.value_at_quantile(q) as f64 * scale;
        Summary {
            count: h.len(),
            mean: h.mean() * scale,
            p50: q(0.5),
            p90: q(0.9),
            p99: q(0.99),
            p999: q(0.999),
            max: h.max() as f64 * scale,
        }
    }
}

/// Figures derived from the counters; `None` where the divisor is zero.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize, Default)]
pub struct Derived {
    /// Data-file bytes written (client + copy-on-write + zeroing) ÷ client bytes written
    /// (write and write-zeroes requests).
    pub write_amplification: Option<f64>,
    /// The same with the metadata blocks written added above the line (pool only).
    pub write_amplification_with_metadata: Option<f64>,
    /// Block writes that broke sharing ÷ block writes.
    pub cow_share: Option<f64>,
    /// Mean b-tree depth of mapping lookups (pool only).
    pub lookup_depth_mean: Option<f64>,
}

impl Derived {
    /// From a volume's or the pool's counters; `metadata_bytes` and `lookup_depths` only
    /// for the pool.
    pub fn of(c: &Counters, metadata_bytes: Option<u64>, lookup_depths: &[u64]) -> Derived {
        let get = |v: VolumeCounter| c.get(v.name()).copied().unwrap_or(0);
        use VolumeCounter as V;
        let client = get(V::WriteBytes) + get(V::WriteZeroesBytes);
        let data = get(V::DataClientBytes) + get(V::DataCowBytes) + get(V::DataZeroingBytes);
        let ratio = |a: u64, b: u64| (b > 0).then(|| a as f64 / b as f64);
        let nr_lookups: u64 = lookup_depths.iter().sum();
        let depth_sum: u64 = lookup_depths.iter().enumerate().map(|(d, n)| d as u64 * n).sum();
        Derived {
            write_amplification: ratio(data, client),
            write_amplification_with_metadata: metadata_bytes.and_then(|m| ratio(data + m, client)),
            cow_share: ratio(get(V::CowBreaks), get(V::BlockWrites)),
            lookup_depth_mean: ratio(depth_sum, nr_lookups),
        }
    }
}

/// What `Pool::stats` returns (and `thinly stats --json` prints).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StatsSnapshot {
    /// Seconds since the pool opened or the last reset.
    pub seconds: f64,
    pub data_block_size_bytes: u64,
    /// Every `PoolCounter`, and every `VolumeCounter` summed over the volumes (deleted ones
    /// included).
    pub pool: Counters,
    /// Each live volume's `VolumeCounter`s.
    pub volumes: BTreeMap<String, Counters>,
    /// Latency by operation (read, write, write_zeroes, trim, flush, commit), microseconds.
    pub latency_us: BTreeMap<String, Summary>,
    /// Metadata blocks written per commit.
    pub commit_metadata_blocks: Summary,
    /// Mapping lookups by b-tree depth: entry d counts lookups that read d nodes.
    pub lookup_depths: Vec<u64>,
    pub derived: Derived,
}

impl StatsSnapshot {
    /// A pool counter (or a volume counter's pool total) by name; 0 if unknown.
    pub fn pool_counter(&self, name: &str) -> u64 {
        self.pool.get(name).copied().unwrap_or(0)
    }

    /// Volume `volume`'s counter `c`; 0 if unknown.
    pub fn volume_counter(&self, volume: &str, c: VolumeCounter) -> u64 {
        self.volumes.get(volume).and_then(|v| v.get(c.name())).copied().unwrap_or(0)
    }
}

impl super::Pool {
    /// The pool's statistics now: every counter, the latency percentiles, the derived
    /// figures (see the module doc for what each means).
    pub fn stats(&self) -> StatsSnapshot {
        let inner = &self.inner;
        let depths = inner.meta().md.lookup_depths().to_vec();
        let vols = inner.volumes.read().unwrap_or_else(|e| e.into_inner());
        let live = vols.iter().map(|(name, v)| (name.as_str(), &v.counters));
        inner.stats.snapshot(inner.block_size, live, &depths)
    }

    /// Zeroes every counter and histogram (`thinly stats --reset`); the returned snapshot
    /// is the one taken just before.
    pub fn reset_stats(&self) -> StatsSnapshot {
        let before = self.stats();
        let inner = &self.inner;
        inner.meta().md.reset_lookup_depths();
        for v in inner.volumes.read().unwrap_or_else(|e| e.into_inner()).values() {
            v.counters.reset();
        }
        inner.stats.reset();
        before
    }
}
