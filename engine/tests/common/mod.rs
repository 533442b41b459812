//! Shared test support: a replayable seeded generator and a small store over the
//! persistent-data core that commits roots through a real dm-thin superblock.
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::ops::ControlFlow;
use std::sync::Arc;
use thinly_engine::btree::{self, ValueKind};
use thinly_engine::format::superblock::{Superblock, SUPERBLOCK_MAGIC, SUPERBLOCK_VERSION};
use thinly_engine::format::thin::BlockTime;
use thinly_engine::format::{node, BlockKind};
use thinly_engine::io::BlockDevice;
use thinly_engine::transaction_manager::TransactionManager;
use thinly_engine::{MetaBlock, Result};

/// splitmix64: deterministic, so a failing seed replays exactly.
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Self {
        Rng(seed)
    }

    pub fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    pub fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }

    pub fn chance(&mut self, percent: u64) -> bool {
        self.below(100) < percent
    }
}

/// How many times more cases a long sweep runs.
pub const LONG_SWEEP_FACTOR: u64 = 10;

/// The size of a sweep (seeds, property-test cases) sized for CI at `count`:
/// `THINLY_LONG_SWEEPS=1` runs `LONG_SWEEP_FACTOR` times as many (a longer search, e.g.
/// after changing the code under test); the default keeps the suite's time for CI.
pub fn sweep(count: u64) -> u64 {
    if std::env::var("THINLY_LONG_SWEEPS").is_ok_and(|v| v == "1") {
        count * LONG_SWEEP_FACTOR
    } else {
        count
    }
}

/// `sweep` for proptest's `cases`.
pub fn sweep_cases(count: u32) -> u32 {
    u32::try_from(sweep(u64::from(count))).unwrap_or(u32::MAX)
}

/// The seeds a model test runs: `THINLY_SEED=N` replays one; otherwise `sweep(count)` seeds
/// starting from a fixed base (or `THINLY_SEED_BASE`).
pub fn seeds(count: u64) -> Vec<u64> {
    if let Some(s) = std::env::var("THINLY_SEED").ok().and_then(|s| s.parse().ok()) {
        return vec![s];
    }
    let base = std::env::var("THINLY_SEED_BASE").ok().and_then(|s| s.parse().ok()).unwrap_or(1);
    (base..base + sweep(count)).collect()
}

/// Runs `f(seed)` for every seed, naming the seed that failed so it can be replayed.
pub fn for_each_seed(count: u64, f: impl Fn(u64)) {
    for seed in seeds(count) {
        let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| f(seed)));
        if let Err(e) = r {
            eprintln!("failed with seed {seed}: replay with THINLY_SEED={seed}");
            std::panic::resume_unwind(e);
        }
    }
}

pub const DETAILS: ValueKind = ValueKind::Plain { size: 24 };

/// A two-level tree store (the thin layout without the thin rules): the superblock's
/// mapping root is a top-level tree of subtree roots; its details root an empty tree.
pub struct Store {
    pub dev: Arc<dyn BlockDevice>,
    pub tm: TransactionManager,
    pub top: MetaBlock,
    pub details: MetaBlock,
    pub time: u32,
}

pub const CACHE_BYTES: usize = 1 << 20;

impl Store {
    pub fn format(dev: Arc<dyn BlockDevice>, nr_data_blocks: u64) -> Result<Self> {
        let mut tm = TransactionManager::format(dev.clone(), nr_data_blocks, CACHE_BYTES)?;
        let top = btree::empty_tree(&mut tm, ValueKind::SubtreeRoot)?;
        let details = btree::empty_tree(&mut tm, DETAILS)?;
        let mut s = Store { dev, tm, top, details, time: 0 };
        s.commit()?;
        Ok(s)
    }

    pub fn open(dev: Arc<dyn BlockDevice>) -> Result<Self> {
        let sb = read_superblock(&dev)?;
        let tm = TransactionManager::open(dev.clone(), &sb, CACHE_BYTES)?;
        Ok(Store {
            dev,
            tm,
            top: sb.data_mapping_root,
            details: sb.device_details_root,
            time: sb.time,
        })
    }

    pub fn commit(&mut self) -> Result<Vec<u64>> {
        let mut sb = Superblock {
            magic: SUPERBLOCK_MAGIC,
            version: SUPERBLOCK_VERSION,
            time: self.time,
            data_mapping_root: self.top,
            device_details_root: self.details,
            data_block_size_sectors: 128,
            metadata_block_size_sectors: 8,
            metadata_nr_blocks: self.dev.nr_blocks(),
            ..Superblock::default()
        };
        self.tm.commit(&mut sb)
    }

    /// Root of subtree `id`, if any.
    pub fn subtree(&mut self, id: u64) -> Result<Option<MetaBlock>> {
        Ok(btree::lookup_u64(&mut self.tm, self.top, ValueKind::SubtreeRoot, id)?.map(MetaBlock))
    }

    /// Adds subtree `id` (whose root reference the caller holds) to the top level.
    pub fn set_subtree(&mut self, id: u64, root: MetaBlock) -> Result<()> {
        self.top = btree::insert(
            &mut self.tm,
            self.top,
            ValueKind::SubtreeRoot,
            id,
            &root.0.to_le_bytes(),
        )?
        .0;
        Ok(())
    }

    /// Edits subtree `id` with `f` (given its root, returning the new root), shadowing the
    /// top level first as the kernel's two-level insert does.
    pub fn edit_subtree<T>(
        &mut self,
        id: u64,
        f: impl FnOnce(&mut TransactionManager, MetaBlock) -> Result<(MetaBlock, T)>,
    ) -> Result<T> {
        let (top, at) = btree::shadow_path(&mut self.tm, self.top, ValueKind::SubtreeRoot, id)?;
        self.top = top;
        let (leaf, i) = at.expect("edit_subtree of a missing subtree");
        let old = MetaBlock(node::value_u64(&self.tm.read(leaf, BlockKind::Node)?[..], i));
        let (new, out) = f(&mut self.tm, old)?;
        if new != old {
            node::set_value_u64(self.tm.get_mut(leaf, BlockKind::Node)?, i, new.0);
        }
        Ok(out)
    }
}

pub fn read_superblock(dev: &Arc<dyn BlockDevice>) -> Result<Superblock> {
    let bm = thinly_engine::block_manager::BlockManager::new(dev.clone(), CACHE_BYTES);
    let b = bm.read_validated(MetaBlock(0), BlockKind::Superblock)?;
    Ok(Superblock::decode(&b[..]))
}

/// Recounts the committed image on `dev`; panics with every problem found.
pub fn assert_clean(dev: &Arc<dyn BlockDevice>) {
    let problems = thinly_engine::recount::check_device(dev.clone(), DETAILS).expect("recount");
    assert!(
        problems.is_empty(),
        "recount found {} problems:\n{}",
        problems.len(),
        problems.iter().take(20).map(|p| p.to_string()).collect::<Vec<_>>().join("\n")
    );
}

pub type Model = BTreeMap<u64, BTreeMap<u64, u64>>;

pub const NR_DATA_BLOCKS: u64 = 1 << 20;

pub fn insert_mapping(s: &mut Store, id: u64, key: u64) -> u64 {
    let block = s.tm.data_sm_mut().alloc().unwrap();
    let v = BlockTime { block, time: s.time }.pack();
    s.edit_subtree(id, |tm, root| {
        btree::insert(tm, root, ValueKind::BlockTime, key, &v.to_le_bytes())
    })
    .unwrap();
    block
}

pub fn remove_mapping(s: &mut Store, id: u64, key: u64) -> bool {
    s.edit_subtree(id, |tm, root| btree::remove(tm, root, ValueKind::BlockTime, key)).unwrap()
}

pub fn read_tree(s: &mut Store, id: u64, begin: u64, end: u64) -> BTreeMap<u64, u64> {
    let root = s.subtree(id).unwrap().unwrap();
    let mut out = BTreeMap::new();
    btree::walk(&mut s.tm, root, ValueKind::BlockTime, begin, end, &mut |k, v| {
        out.insert(k, BlockTime::unpack(u64::from_le_bytes(v.try_into().unwrap())).block);
        Ok(ControlFlow::Continue(()))
    })
    .unwrap()
    .continue_value()
    .expect("walk ran to the end");
    out
}

pub fn new_tree(s: &mut Store, model: &mut Model, next_id: &mut u64) {
    let root = btree::empty_tree(&mut s.tm, ValueKind::BlockTime).unwrap();
    s.set_subtree(*next_id, root).unwrap();
    model.insert(*next_id, BTreeMap::new());
    *next_id += 1;
}

pub fn verify_all(s: &mut Store, model: &Model) {
    let ids: Vec<u64> = {
        let mut ids = Vec::new();
        btree::walk(&mut s.tm, s.top, ValueKind::SubtreeRoot, 0, u64::MAX, &mut |k, _| {
            ids.push(k);
            Ok(ControlFlow::Continue(()))
        })
        .unwrap()
        .continue_value()
        .expect("walk ran to the end");
        ids
    };
    assert_eq!(ids, model.keys().copied().collect::<Vec<_>>(), "set of trees");
    for (id, m) in model {
        assert_eq!(&read_tree(s, *id, 0, u64::MAX), m, "contents of tree {id}");
    }
}

/// Everything the store holds, as a model.
pub fn read_all(s: &mut Store) -> Model {
    let mut ids = Vec::new();
    btree::for_each(&mut s.tm, s.top, ValueKind::SubtreeRoot, 0, u64::MAX, &mut |k, _| {
        ids.push(k);
        Ok(())
    })
    .unwrap();
    ids.into_iter().map(|id| (id, read_tree(s, id, 0, u64::MAX))).collect()
}

/// The path of a real tool, or `None` (loudly) when it is missing outside CI; under CI
/// (`CI` set) a missing tool fails the test. The one rule is `thinly_test_support`'s.
#[allow(unused_imports)] // each test binary uses its own share of these
pub use thinly_test_support::require_tool as real_tool;
/// The golden samples (`tests/data/samples` of the checkout).
#[allow(unused_imports)] // each test binary uses its own share of these
pub use thinly_test_support::{sample, samples_dir};

/// One device as thin_dump prints it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DumpedDevice {
    pub mapped_blocks: u64,
    pub transaction: u64,
    pub creation_time: u32,
    pub snap_time: u32,
    /// virtual block → (data block, time)
    pub mappings: BTreeMap<u64, (u64, u32)>,
}

/// What thin_dump printed: superblock attributes and devices.
#[derive(Debug, Clone, Default)]
pub struct Dump {
    pub attrs: BTreeMap<String, String>,
    pub devices: BTreeMap<u64, DumpedDevice>,
}

fn xml_attrs(line: &str) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    let mut rest = line;
    while let Some(eq) = rest.find("=\"") {
        let name = rest[..eq].rsplit(|c: char| c.is_whitespace() || c == '<').next().unwrap_or("");
        let after = &rest[eq + 2..];
        let end = after.find('"').expect("closing quote");
        out.insert(name.to_string(), after[..end].to_string());
        rest = &after[end + 1..];
    }
    out
}

/// Parses thin_dump's XML (the 0.9 dialect, as Debian's tool prints it).
pub fn parse_dump(text: &str) -> Dump {
    let mut dump = Dump::default();
    let mut cur: Option<u64> = None;
    for line in text.lines().map(str::trim) {
        let a = xml_attrs(line);
        let num = |k: &str| a[k].parse::<u64>().unwrap();
        if line.starts_with("<superblock") {
            dump.attrs = a.clone();
        } else if line.starts_with("<device") {
            let id = num("dev_id");
            cur = Some(id);
            dump.devices.insert(
                id,
                DumpedDevice {
                    mapped_blocks: num("mapped_blocks"),
                    transaction: num("transaction"),
                    creation_time: num("creation_time") as u32,
                    snap_time: num("snap_time") as u32,
                    mappings: BTreeMap::new(),
                },
            );
        } else if line.starts_with("<single_mapping") {
            let d = dump.devices.get_mut(&cur.unwrap()).unwrap();
            d.mappings.insert(num("origin_block"), (num("data_block"), num("time") as u32));
        } else if line.starts_with("<range_mapping") {
            let d = dump.devices.get_mut(&cur.unwrap()).unwrap();
            for i in 0..num("length") {
                d.mappings
                    .insert(num("origin_begin") + i, (num("data_begin") + i, num("time") as u32));
            }
        }
    }
    dump
}

/// Runs a real tool; returns (exit code, stdout, stderr).
pub fn run_tool(tool: &std::path::Path, args: &[&str]) -> (i32, String, String) {
    let out = std::process::Command::new(tool).args(args).output().expect("running a real tool");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// Which operation of a `Holding` device is held.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Hold {
    /// The next write waits, before it reaches the inner device.
    Write,
    /// The next sync makes everything written so far durable on the inner device, then
    /// waits: what is written while it waits stays volatile.
    Sync,
}

#[derive(Default)]
struct HoldState {
    armed: Option<Hold>,
    holding: bool,
    released: bool,
}

/// A data device over another whose next write or sync, once armed, is held until the
/// test releases it (to act while an I/O or a commit's data sync is in flight).
pub struct Holding {
    inner: Arc<dyn thinly_engine::io::DataDevice>,
    state: std::sync::Mutex<HoldState>,
    cv: std::sync::Condvar,
}

impl Holding {
    pub fn new(inner: Arc<dyn thinly_engine::io::DataDevice>) -> Self {
        Holding { inner, state: Default::default(), cv: Default::default() }
    }

    pub fn arm(&self, what: Hold) {
        *self.state.lock().unwrap() = HoldState { armed: Some(what), ..Default::default() };
    }

    /// Waits until the armed operation is being held.
    pub fn wait_holding(&self) {
        let mut s = self.state.lock().unwrap();
        while !s.holding {
            s = self.cv.wait(s).unwrap();
        }
    }

    pub fn release(&self) {
        self.state.lock().unwrap().released = true;
        self.cv.notify_all();
    }

    fn hold_if_armed(&self, what: Hold) {
        let mut s = self.state.lock().unwrap();
        if s.armed != Some(what) {
            return;
        }
        s.armed = None;
        s.holding = true;
        self.cv.notify_all();
        while !s.released {
            s = self.cv.wait(s).unwrap();
        }
    }
}

impl thinly_engine::io::DataDevice for Holding {
    fn len_bytes(&self) -> u64 {
        self.inner.len_bytes()
    }
    fn set_len(&self, len: u64) -> std::io::Result<()> {
        self.inner.set_len(len)
    }
    fn read_at(&self, o: u64, b: &mut [u8]) -> std::io::Result<()> {
        self.inner.read_at(o, b)
    }
    fn write_at(&self, o: u64, d: &[u8]) -> std::io::Result<()> {
        self.hold_if_armed(Hold::Write);
        self.inner.write_at(o, d)
    }
    fn punch_hole(&self, o: u64, l: u64) -> std::io::Result<()> {
        self.inner.punch_hole(o, l)
    }
    fn zero_range(&self, o: u64, l: u64) -> std::io::Result<()> {
        self.inner.zero_range(o, l)
    }
    fn discard_zeroes(&self) -> bool {
        self.inner.discard_zeroes()
    }
    fn sync(&self) -> std::io::Result<()> {
        self.inner.sync()?;
        self.hold_if_armed(Hold::Sync);
        Ok(())
    }
}

/// A small pool for model and crash tests: no commit timer (commits happen where the test
/// says), writes fail at once when data space runs out, a 1 MiB metadata cache.
pub fn test_pool_options(data_size_bytes: u64) -> thinly_engine::pool::PoolOptions {
    use thinly_engine::pool::{OutOfSpacePolicy, PoolOptions, PoolSettings};
    PoolOptions {
        data_size_bytes,
        settings: PoolSettings {
            commit_interval_ms: 0,
            out_of_space: OutOfSpacePolicy::Error,
            ..PoolSettings::default()
        },
        cache_bytes: 1 << 20,
        ..PoolOptions::default()
    }
}
