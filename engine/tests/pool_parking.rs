//! Provisioning while a commit syncs the data file. A commit releases the metadata lock
//! while it syncs data; writes that provision a block meanwhile (fresh blocks, partial and
//! whole-block copy-on-write) go on, but their data may miss that sync, so their mappings
//! must not join that commit: they are parked and inserted into the next transaction.
//!
//! The sync here is held open at its start (everything written before it is durable, what
//! is written while it is held is not), writes are made meanwhile, then the power is cut at
//! one of three points: during the held sync, after the commit, or after a second flush.
//! After reopen: the metadata checks clean (no leaked or doubly used block), blocks written
//! before a completed flush read back exactly, and every other written sector reads as its
//! old or its new contents — never zeros where neither was zero. Reads and block status of
//! a parked block wait for its mapping and then see the new data.
//! Seeds replay with THINLY_SEED=N.

mod common;

use common::*;
use std::collections::BTreeMap;

use std::sync::Arc;
use thinly_engine::io::{BlockDevice, CrashPlan, FaultyData, FaultyDevice};
use thinly_engine::pool::config::MemConfigStore;
use thinly_engine::pool::{Pool, Volume};
use thinly_engine::thin::{check, CheckOptions, RunDetail};

const BS: u64 = 64 << 10;
const SECTOR: usize = 512;
const BLOCKS: u64 = 32;

/// Where the power goes.
#[derive(Debug, Clone, Copy)]
enum Cut {
    /// While the commit's sync is held: that commit never happened.
    DuringSync,
    /// After the commit that the writes overlapped, before any other.
    AfterCommit,
    /// After a flush that followed every write.
    AfterFlush,
}

/// What a sector may read after the cut: any of these.
type Allowed = BTreeMap<(String, usize), Vec<Vec<u8>>>;

struct Case {
    meta: Arc<FaultyDevice>,
    data: Arc<FaultyData>,
    held: Arc<Holding>,
    store: MemConfigStore,
    pool: Pool,
    /// Each volume's bytes as of the last completed flush.
    flushed: BTreeMap<String, Vec<u8>>,
    /// Each volume's bytes now.
    now: BTreeMap<String, Vec<u8>>,
}

impl Case {
    fn new() -> Case {
        let meta = Arc::new(FaultyDevice::new(1024));
        let data = Arc::new(FaultyData::new(4 * BLOCKS * BS));
        let held = Arc::new(Holding::new(data.clone()));
        let store = MemConfigStore::default();
        let pool = Pool::format_on(
            meta.clone(),
            held.clone(),
            Box::new(store.clone()),
            &test_pool_options(4 * BLOCKS * BS),
            None,
            "p",
        )
        .unwrap();
        Case { meta, data, held, store, pool, flushed: BTreeMap::new(), now: BTreeMap::new() }
    }

    fn write(&mut self, vol: &Volume, offset: u64, bytes: &[u8]) {
        vol.write(offset, bytes, false).unwrap();
        let m = self.now.get_mut(vol.name()).unwrap();
        m[offset as usize..offset as usize + bytes.len()].copy_from_slice(bytes);
    }

    fn flushed_now(&mut self) {
        self.flushed = self.now.clone();
    }
}

fn pattern(seed: u64, len: usize) -> Vec<u8> {
    let mut r = Rng::new(seed);
    (0..len).map(|_| r.next() as u8 | 1).collect()
}

fn run(seed: u64) {
    let mut rng = Rng::new(seed);
    let mut c = Case::new();
    let size = BLOCKS * BS;
    let v = c.pool.create_volume("v", size).unwrap();
    c.now.insert("v".into(), vec![0; size as usize]);
    // The first half of v is written and shared with snapshot s; the second half is empty.
    let half = (BLOCKS / 2 * BS) as usize;
    c.write(&v, 0, &pattern(rng.next(), half));
    c.pool.snapshot("v", "s", false).unwrap();
    c.now.insert("s".into(), c.now["v"].clone());
    c.flushed_now();

    // Each block of v is written once from here: before the commit, or during its sync.
    let mut blocks: Vec<u64> = (0..BLOCKS).collect();
    for i in (1..blocks.len()).rev() {
        blocks.swap(i, rng.below(i as u64 + 1) as usize);
    }
    let (early, late) = blocks.split_at(4 + rng.below(8) as usize);
    let late = &late[..(4 + rng.below(12) as usize).min(late.len())];
    let piece = |rng: &mut Rng, b: u64| -> (u64, usize) {
        match rng.below(3) {
            0 => (b * BS, BS as usize),
            1 => (b * BS + rng.below(16) * 4096, 4096),
            _ => {
                let at = rng.below(BS - 1);
                (b * BS + at, 1 + rng.below(BS - at) as usize)
            }
        }
    };
    for &b in early {
        let (at, len) = piece(&mut rng, b);
        c.write(&v, at, &pattern(rng.next(), len));
    }
    let before_late = c.now.clone();

    c.held.arm(Hold::Sync);
    let committer = {
        let pool = c.pool.clone();
        std::thread::spawn(move || pool.commit())
    };
    c.held.wait_holding();
    for &b in late {
        let (at, len) = piece(&mut rng, b);
        c.write(&v, at, &pattern(rng.next(), len));
    }
    // A read and a block status of a block written during the sync wait for its mapping.
    let probe = late[0];
    let reader = {
        let v = v.clone();
        std::thread::spawn(move || {
            let mut buf = vec![0u8; BS as usize];
            v.read(probe * BS, &mut buf)?;
            let status = v.block_status(probe * BS, BS, RunDetail::Mapped)?;
            Ok::<_, thinly_engine::pool::PoolError>((buf, status))
        })
    };

    let cut = match rng.below(3) {
        0 => Cut::DuringSync,
        1 => Cut::AfterCommit,
        _ => Cut::AfterFlush,
    };
    let mut allowed = Allowed::new();
    allow(&mut allowed, &c.flushed);
    let reopened = match cut {
        Cut::DuringSync => {
            allow(&mut allowed, &before_late);
            allow(&mut allowed, &c.now);
            let r = crash_and_reopen(&c, &mut rng);
            // The old pool's commit fails on the dead devices, which ends the read too.
            c.held.release();
            let _ = committer.join().unwrap();
            let _ = reader.join().unwrap();
            r
        }
        Cut::AfterCommit | Cut::AfterFlush => {
            c.held.release();
            committer.join().unwrap().unwrap();
            let (buf, status) = reader.join().unwrap().unwrap();
            let at = (probe * BS) as usize;
            assert!(buf == c.now["v"][at..at + BS as usize], "seed {seed}: read of a parked block");
            assert!(status.iter().all(|e| e.mapped), "seed {seed}: status of a parked block");
            if let Cut::AfterFlush = cut {
                v.flush().unwrap();
                allowed.clear();
                allow(&mut allowed, &c.now);
            } else {
                // The commit covered the early writes only.
                allowed.clear();
                allow(&mut allowed, &before_late);
                allow(&mut allowed, &c.now);
            }
            crash_and_reopen(&c, &mut rng)
        }
    };

    let report =
        check(reopened.1.clone() as Arc<dyn BlockDevice>, CheckOptions::default()).unwrap();
    assert!(report.is_clean(), "seed {seed} {cut:?}: {:#?}", report.problems);
    for name in ["v", "s"] {
        let vol = reopened.0.volume(name).unwrap();
        let mut got = vec![0u8; size as usize];
        vol.read(0, &mut got).unwrap();
        for (i, s) in got.chunks(SECTOR).enumerate() {
            let ok = &allowed[&(name.to_string(), i)];
            assert!(
                ok.iter().any(|x| x == s),
                "seed {seed} {cut:?}: {name} sector {i} (block {}) reads neither old nor new",
                i * SECTOR / BS as usize
            );
        }
    }
    reopened.0.close().unwrap();
}

/// Adds every sector of `state` to what may be read after the cut.
fn allow(allowed: &mut Allowed, state: &BTreeMap<String, Vec<u8>>) {
    for (name, bytes) in state {
        for (i, s) in bytes.chunks(SECTOR).enumerate() {
            let e = allowed.entry((name.clone(), i)).or_default();
            if !e.iter().any(|x| x == s) {
                e.push(s.to_vec());
            }
        }
    }
}

/// Cuts the power on both devices (unsynced writes kept at random, torn at 512 bytes) and
/// opens the pool on what survived.
fn crash_and_reopen(c: &Case, rng: &mut Rng) -> (Pool, Arc<FaultyDevice>) {
    let meta = Arc::new(FaultyDevice::from_image(
        &c.meta.crash_image(CrashPlan::Random { seed: rng.next() }),
    ));
    let data = Arc::new(c.data.crash(CrashPlan::Random { seed: rng.next() }));
    // The old pool's remaining commits land on the dead devices.
    c.meta.fail_writes_after(0);
    c.data.fail_after(0);
    let pool = Pool::open_on(meta.clone(), data, Box::new(c.store.clone()), None, "p").unwrap();
    (pool, meta)
}

#[test]
fn writes_during_a_commits_data_sync_survive_power_cuts_as_old_or_new() {
    for_each_seed(150, run);
}
