//! The metadata transaction id is the user's, as in dm-thin: only `set_transaction_id OLD
//! NEW` moves it, and a wrong OLD changes nothing. Docker's devicemapper message sequence
//! across reopens; management operations cut by a power loss at every metadata write, and
//! between their commit and their journal line, reopen as before or as after.

mod common;

use common::{for_each_seed, test_pool_options, Rng};
use std::collections::BTreeSet;
use std::io;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use thinly_engine::io::{BlockDevice, CrashPlan, FaultyData, FaultyDevice, FileDevice, IoMode};
use thinly_engine::pool::config::{ConfigChange, ConfigStore, MemConfigStore, PoolConfig};
use thinly_engine::pool::{Pool, PoolError, VolumeInfo};
use thinly_engine::thin::{check, CheckOptions, OpenOptions, ThinMetadata};

const BS: u64 = 64 << 10;
const DATA_BYTES: u64 = 64 * BS;
/// The volume every crash case writes and changes: 16 blocks.
const VOL_BYTES: u64 = 16 * BS;
/// Where a shrink cuts that volume.
const SHRUNK_BYTES: u64 = 2 * BS;
/// The user's transaction id before each crash case's operation.
const USER_TID: u64 = 42;

fn tid(pool: &Pool) -> u64 {
    pool.status().transaction_id
}

fn pattern(seed: u8, len: u64) -> Vec<u8> {
    (0..len).map(|i| seed.wrapping_mul(29).wrapping_add((i % 253) as u8)).collect()
}

/// The internal checker and (when `real`, where installed) the real thin_check on a
/// metadata image.
fn assert_image_clean(image: &[u8], real: bool) {
    let dev: Arc<dyn BlockDevice> = Arc::new(FaultyDevice::from_image(image));
    let report = check(dev, CheckOptions::default()).expect("checking the metadata");
    assert!(report.is_clean(), "{:#?}", report.problems);
    if let Some(tool) = real.then(|| common::real_tool("thin_check")).flatten() {
        let file = tempfile::NamedTempFile::new().expect("temp file");
        std::fs::write(file.path(), image).expect("writing the image");
        let (rc, out, err) = common::run_tool(&tool, &[file.path().to_str().expect("utf-8")]);
        assert_eq!(rc, 0, "thin_check: {out}{err}");
    }
}

fn assert_dir_clean(dir: &std::path::Path) {
    let image = std::fs::read(dir.join("metadata")).expect("reading the metadata file");
    assert_image_clean(&image, true);
}

/// Runs `text` as a pool message and checks the transaction id after it.
fn step(pool: &Pool, text: &str, want_tid: u64) {
    pool.message(text).unwrap_or_else(|e| panic!("message {text:?}: {e}"));
    assert_eq!(tid(pool), want_tid, "after {text:?}");
}

#[test]
fn device_messages_leave_the_transaction_id_and_only_set_transaction_id_moves_it() {
    let dir = tempfile::tempdir().unwrap();
    let pool = Pool::create(dir.path(), &test_pool_options(DATA_BYTES)).unwrap();
    assert_eq!(tid(&pool), 0);
    step(&pool, "create_thin 0", 0);
    step(&pool, "set_transaction_id 0 18", 18);
    step(&pool, "create_thin 1", 18);
    // The example: after one create_thin, 18 → 19 must still work.
    step(&pool, "set_transaction_id 18 19", 19);
    pool.create_volume("named", VOL_BYTES).unwrap();
    pool.snapshot("named", "named-snap", true).unwrap();
    pool.resize_volume("named", 2 * VOL_BYTES).unwrap();
    pool.delete_volume("named-snap").unwrap();
    pool.extend(DATA_BYTES * 2).unwrap();
    step(&pool, "create_snap 7 0", 19);
    step(&pool, "delete 7", 19);
    assert_eq!(tid(&pool), 19);
    // A wrong OLD is refused and changes nothing, not even after a commit.
    let before = (pool.list(), pool.status());
    let err = pool.message("set_transaction_id 18 20").unwrap_err();
    assert!(matches!(err, PoolError::Metadata(_)), "{err}");
    pool.commit().unwrap();
    assert_eq!((pool.list(), pool.status()), before);
    pool.close().unwrap();
    drop(pool);
    let pool = Pool::open(dir.path(), IoMode::Auto).unwrap();
    assert_eq!(tid(&pool), 19);
    assert_eq!(pool.list(), before.0);
    // Any NEW is accepted, as the kernel accepts it (even a smaller one).
    step(&pool, "set_transaction_id 19 3", 3);
    pool.close().unwrap();
    drop(pool);
    assert_dir_clean(dir.path());
}

/// Docker's devicemapper driver: a base device, then per layer a snapshot of the base and
/// `set_transaction_id` closing Docker's own transaction; some layers are deleted (again
/// closed by `set_transaction_id`); the daemon restarts (close and reopen) between layers
/// and checks its counter against the pool's. The kernel's answer is `want`.
#[test]
fn dockers_devicemapper_message_sequence_sees_the_kernels_transaction_ids_across_restarts() {
    let dir = tempfile::tempdir().unwrap();
    let mut pool = Pool::create(dir.path(), &test_pool_options(DATA_BYTES)).unwrap();
    let mut want = 0;
    step(&pool, "create_thin 0", want);
    step(&pool, &format!("set_transaction_id {want} {}", want + 1), want + 1);
    want += 1;
    for layer in 1..=12u64 {
        let base = if layer > 1 && layer % 3 != 1 { layer - 1 } else { 0 };
        step(&pool, &format!("create_snap {layer} {base}"), want);
        step(&pool, &format!("set_transaction_id {want} {}", want + 1), want + 1);
        want += 1;
        if layer % 3 == 0 {
            step(&pool, &format!("delete {layer}"), want);
            step(&pool, &format!("set_transaction_id {want} {}", want + 1), want + 1);
            want += 1;
        }
        // Docker's start-up check: its stale counter is refused, the right one is not.
        assert!(pool.message(&format!("set_transaction_id {} {}", want - 1, want)).is_err());
        assert_eq!(tid(&pool), want);
        pool.close().unwrap();
        drop(pool);
        pool = Pool::open(dir.path(), IoMode::Auto).unwrap();
        assert_eq!(tid(&pool), want, "after the restart following layer {layer}");
        let ids: BTreeSet<u64> = pool.list().iter().map(|(_, v)| v.dev_id).collect();
        let alive: BTreeSet<u64> =
            std::iter::once(0).chain((1..=layer).filter(|l| l % 3 != 0)).collect();
        assert_eq!(ids, alive, "after layer {layer}");
    }
    pool.close().unwrap();
    drop(pool);
    assert_dir_clean(dir.path());
    let dev: Arc<dyn BlockDevice> =
        Arc::new(FileDevice::open(&dir.path().join("metadata"), true).unwrap());
    let md = ThinMetadata::open(dev, OpenOptions::default()).unwrap();
    assert_eq!(md.transaction_id(), want);
}

/// A config store that can be made to fail as a power cut just before its write would:
/// the metadata device then takes no more writes either.
#[derive(Clone, Default)]
struct FlakyStore {
    inner: MemConfigStore,
    failing: Arc<AtomicBool>,
    meta: Arc<std::sync::OnceLock<Arc<FaultyDevice>>>,
}

impl FlakyStore {
    fn check(&self) -> io::Result<()> {
        if !self.failing.load(Ordering::SeqCst) {
            return Ok(());
        }
        if let Some(meta) = self.meta.get() {
            meta.fail_writes_after(0);
        }
        Err(io::Error::other("injected: power cut before the config write"))
    }
}

impl ConfigStore for FlakyStore {
    fn load(&self) -> io::Result<Option<PoolConfig>> {
        self.inner.load()
    }
    fn store(&self, config: &PoolConfig) -> io::Result<()> {
        self.check()?;
        self.inner.store(config)
    }
    fn append(&self, changes: &[ConfigChange], after: &mut PoolConfig) -> io::Result<()> {
        self.check()?;
        self.inner.append(changes, after)
    }
}

#[derive(Debug, Clone, Copy)]
enum Op {
    Create,
    Snapshot,
    Delete,
    Shrink,
    Grow,
    SetTid,
    CreateThinMessage,
    DeleteMessage,
}

const OPS: [Op; 8] = [
    Op::Create,
    Op::Snapshot,
    Op::Delete,
    Op::Shrink,
    Op::Grow,
    Op::SetTid,
    Op::CreateThinMessage,
    Op::DeleteMessage,
];

impl Op {
    fn run(self, pool: &Pool) -> Result<(), PoolError> {
        match self {
            Op::Create => pool.create_volume("new", VOL_BYTES).map(drop),
            Op::Snapshot => pool.snapshot("a", "a-snap", false).map(drop),
            Op::Delete => pool.delete_volume("s"),
            Op::Shrink => pool.resize_volume("a", SHRUNK_BYTES),
            Op::Grow => pool.resize_volume("a", 2 * VOL_BYTES),
            Op::SetTid => pool.message(&format!("set_transaction_id {USER_TID} 43")).map(drop),
            Op::CreateThinMessage => pool.message("create_thin 9").map(drop),
            Op::DeleteMessage => pool.message("delete 2").map(drop),
        }
    }
}

struct Case {
    meta: Arc<FaultyDevice>,
    data: Arc<FaultyData>,
    store: FlakyStore,
    pool: Pool,
}

/// A pool at transaction id 42 with volume `a` (written over its 16 blocks) and its
/// snapshot `s` (device 2), all committed.
fn setup() -> Case {
    let meta = Arc::new(FaultyDevice::new(1024));
    let data = Arc::new(FaultyData::new(DATA_BYTES));
    let store = FlakyStore::default();
    assert!(store.meta.set(meta.clone()).is_ok());
    let opts = test_pool_options(DATA_BYTES);
    let pool =
        Pool::format_on(meta.clone(), data.clone(), Box::new(store.clone()), &opts, None, "p")
            .unwrap();
    pool.message(&format!("set_transaction_id 0 {USER_TID}")).unwrap();
    let a = pool.create_volume("a", VOL_BYTES).unwrap();
    a.write(0, &pattern(1, VOL_BYTES), true).unwrap();
    pool.snapshot("a", "s", true).unwrap();
    a.write(0, &pattern(2, BS), true).unwrap();
    pool.commit().unwrap();
    Case { meta, data, store, pool }
}

/// Volume `a`'s bytes as the setup left them.
fn a_bytes() -> Vec<u8> {
    let mut want = pattern(1, VOL_BYTES);
    want[..BS as usize].copy_from_slice(&pattern(2, BS));
    want
}

/// Opens what a power cut left and checks it is the state before `op` or after it.
fn reopen_and_check(
    c: &Case,
    op: Op,
    plan: CrashPlan,
    before: &[VolumeInfo],
    after: &[VolumeInfo],
) {
    let image = c.meta.crash_image(plan);
    let data = Arc::new(c.data.crash(plan));
    let meta = Arc::new(FaultyDevice::from_image(&image));
    // A copy: each plan reopens what the cut left, not what an earlier reopen reconciled.
    let store = MemConfigStore::default();
    let stored = c.store.inner.load().expect("loading the config");
    store.store(&stored.expect("a config")).expect("copying the config");
    let store = Box::new(store);
    let pool = Pool::open_on(meta.clone(), data, store, None, "p").expect("reopening");
    let list = pool.list();
    let tid_now = tid(&pool);
    match op {
        Op::SetTid => assert!(tid_now == USER_TID || tid_now == 43, "{op:?}: {tid_now}"),
        _ => assert_eq!(tid_now, USER_TID, "{op:?} moved the transaction id"),
    }
    assert!(!pool.status().needs_check, "{op:?}: a power cut is not a failure to flag");
    let sized = |l: &[VolumeInfo]| -> Vec<(String, u64)> {
        l.iter().map(|(n, v)| (n.clone(), v.dev_id)).collect()
    };
    match op {
        // A shrink whose journal line was lost keeps the old size over removed mappings.
        Op::Shrink => assert_eq!(sized(&list), sized(before), "{op:?}"),
        _ => assert!(list == before || list == after, "{op:?}: {list:#?}"),
    }
    // Every name's device exists and every device has a name.
    let ids: BTreeSet<u64> = list.iter().map(|(_, v)| v.dev_id).collect();
    check_data(&pool, op);
    pool.close().expect("closing after the crash");
    drop(pool);
    let image = meta.crash_image(CrashPlan::DropAll);
    let dev: Arc<dyn BlockDevice> = Arc::new(FaultyDevice::from_image(&image));
    let md = ThinMetadata::open(dev, OpenOptions::default()).expect("reading the metadata");
    assert_eq!(md.device_ids().iter().map(|d| d.0).collect::<BTreeSet<_>>(), ids, "{op:?}");
    // The real thin_check on one plan of each cut point keeps the test's run time modest.
    assert_image_clean(&image, matches!(plan, CrashPlan::KeepAll));
}

/// No volume lost a byte it should keep; past a shrink, each block is old or zeros.
fn check_data(pool: &Pool, op: Op) {
    let s = pool.volume("s").map(|v| {
        let mut buf = vec![0; VOL_BYTES as usize];
        v.read(0, &mut buf).expect("reading s");
        buf
    });
    match (op, s) {
        (Op::Delete | Op::DeleteMessage, Err(_)) => {}
        (_, s) => assert!(s.expect("s is there") == pattern(1, VOL_BYTES), "{op:?}: s changed"),
    }
    let a = pool.volume("a").expect("a is there");
    let mut buf = vec![0; a.size_bytes() as usize];
    a.read(0, &mut buf).expect("reading a");
    let want = a_bytes();
    let kept = if matches!(op, Op::Shrink) { SHRUNK_BYTES } else { VOL_BYTES } as usize;
    assert!(buf[..kept] == want[..kept], "{op:?}: a changed");
    for (i, block) in buf[kept..].chunks(BS as usize).enumerate() {
        let old = want.get(kept + i * BS as usize..kept + (i + 1) * BS as usize);
        let ok = block.iter().all(|&b| b == 0) || old.is_some_and(|o| o == block);
        assert!(ok, "{op:?}: block {} of a is neither old nor zeros", kept / BS as usize + i);
    }
}

/// Cuts the power after every metadata write (and flush) the operation makes, keeping
/// none, all, or a random part of the unflushed writes.
fn crash_at_every_write(op: Op, seed: u64) {
    let after = {
        let c = setup();
        op.run(&c.pool).expect("the operation without faults");
        c.pool.list()
    };
    let mut rng = Rng::new(seed);
    for k in 0.. {
        let c = setup();
        let before = c.pool.list();
        c.meta.fail_writes_after(k);
        let r = op.run(&c.pool);
        for plan in [CrashPlan::DropAll, CrashPlan::KeepAll, CrashPlan::Random { seed: rng.next() }]
        {
            reopen_and_check(&c, op, plan, &before, &after);
        }
        if r.is_ok() {
            break;
        }
        assert!(k < 10_000, "{op:?} never finished");
    }
    // The commit landed, the journal line did not (or the reverse, by the op's order).
    let c = setup();
    let before = c.pool.list();
    c.store.failing.store(true, Ordering::SeqCst);
    let _ = op.run(&c.pool);
    reopen_and_check(&c, op, CrashPlan::KeepAll, &before, &after);
}

#[test]
fn management_operations_cut_at_every_metadata_write_reopen_as_before_or_after() {
    for_each_seed(1, |seed| {
        for op in OPS {
            crash_at_every_write(op, seed);
        }
    });
}
