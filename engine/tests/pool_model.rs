//! The pool against a model of every volume's bytes: random writes, reads, write_zeroes,
//! discards, snapshots, deletes, resizes, flushes and reopens on several volumes; then power
//! cuts on both devices at random points (each device keeps a random subset of what was
//! not yet synced, torn at 512 bytes). After a cut, every block not written since the last
//! completed flush reads back exactly, the internal checker is clean, and at the end of
//! each case so is the real thin_check. Seeds replay with THINLY_SEED=N.
//!
//! The same model runs on a data device that behaves as a block device at its worst
//! (`FaultyData::device`: garbage where nothing was written, discards that keep the old
//! bytes): a partial write to a new block must still read zeros around it.

mod common;

use common::*;
use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use thinly_engine::io::{BlockDevice, CrashPlan, DataDevice, FaultyData, FaultyDevice};
use thinly_engine::pool::config::MemConfigStore;
use thinly_engine::pool::{Pool, PoolOptions};
use thinly_engine::thin::{check, CheckOptions};

const BS: u64 = 64 << 10;
const VOL_BYTES: u64 = 1 << 20;

#[derive(Clone, Default)]
struct Model {
    vols: BTreeMap<String, Vec<u8>>,
}

struct World {
    meta: Arc<FaultyDevice>,
    data: Arc<FaultyData>,
    store: MemConfigStore,
    pool: Pool,
    model: Model,
    /// The model as of the last completed commit we know of.
    flushed: Model,
    /// Blocks written since then, per volume.
    dirty: BTreeMap<String, BTreeSet<u64>>,
    next: u32,
}

impl World {
    /// A fresh pool on a sparse data file, or (`device`) on a block device never zeroed.
    fn new(device: bool) -> World {
        let meta = Arc::new(FaultyDevice::new(2048));
        let data =
            Arc::new(if device { FaultyData::device(512 * BS) } else { FaultyData::new(512 * BS) });
        let store = MemConfigStore::default();
        let opts = PoolOptions { data_zeroed: !device, ..test_pool_options(512 * BS) };
        let pool = Pool::format_on(
            meta.clone(),
            data.clone(),
            Box::new(store.clone()),
            &opts,
            None,
            "model",
        )
        .unwrap();
        World {
            meta,
            data,
            store,
            pool,
            model: Model::default(),
            flushed: Model::default(),
            dirty: BTreeMap::new(),
            next: 0,
        }
    }

    fn mark_dirty(&mut self, vol: &str, offset: u64, len: u64) {
        let d = self.dirty.entry(vol.to_string()).or_default();
        for b in offset / BS..(offset + len).div_ceil(BS) {
            d.insert(b);
        }
    }

    fn committed(&mut self) {
        self.flushed = self.model.clone();
        self.dirty.clear();
    }

    fn step(&mut self, rng: &mut Rng) {
        let names: Vec<String> = self.model.vols.keys().cloned().collect();
        if names.is_empty() || (names.len() < 6 && rng.chance(6)) {
            let name = format!("v{}", self.next);
            self.next += 1;
            self.pool.create_volume(&name, VOL_BYTES).unwrap();
            self.model.vols.insert(name, vec![0; VOL_BYTES as usize]);
            return self.committed();
        }
        let name = names[rng.below(names.len() as u64) as usize].clone();
        let vol = self.pool.volume(&name).unwrap();
        let size = self.model.vols[&name].len() as u64;
        let offset = rng.below(size);
        let len = (1 + rng.below(3 * BS)).min(size - offset);
        match rng.below(100) {
            0..=39 => {
                let seed = rng.next() as u8;
                let bytes: Vec<u8> = (0..len).map(|i| seed ^ (i as u8).wrapping_mul(7)).collect();
                let fua = rng.chance(10);
                vol.write(offset, &bytes, fua).unwrap();
                self.model.vols.get_mut(&name).unwrap()[offset as usize..(offset + len) as usize]
                    .copy_from_slice(&bytes);
                self.mark_dirty(&name, offset, len);
                if fua {
                    self.committed();
                }
            }
            40..=54 => {
                let mut buf = vec![0u8; len as usize];
                vol.read(offset, &mut buf).unwrap();
                assert!(
                    buf[..] == self.model.vols[&name][offset as usize..(offset + len) as usize],
                    "read of {len} at {offset} in {name}"
                );
            }
            55..=61 => {
                vol.write_zeroes(offset, len, rng.chance(50), false).unwrap();
                self.model.vols.get_mut(&name).unwrap()[offset as usize..(offset + len) as usize]
                    .fill(0);
                self.mark_dirty(&name, offset, len);
            }
            62..=67 => {
                vol.discard(offset, len, false).unwrap();
                let (first, end) = (offset.div_ceil(BS), (offset + len) / BS);
                if first < end {
                    self.model.vols.get_mut(&name).unwrap()
                        [(first * BS) as usize..(end * BS) as usize]
                        .fill(0);
                }
                self.mark_dirty(&name, offset, len);
            }
            68..=73 if names.len() < 8 => {
                let snap = format!("v{}", self.next);
                self.next += 1;
                self.pool.snapshot(&name, &snap, false).unwrap();
                let copy = self.model.vols[&name].clone();
                self.model.vols.insert(snap, copy);
                self.committed();
            }
            74..=76 if names.len() > 1 => {
                drop(vol);
                self.pool.delete_volume(&name).unwrap();
                self.model.vols.remove(&name);
                self.committed();
            }
            77..=79 => {
                let new = (1 + rng.below(2 * VOL_BYTES / 4096)) * 4096;
                self.pool.resize_volume(&name, new).unwrap();
                let m = self.model.vols.get_mut(&name).unwrap();
                m.resize(new as usize, 0);
                self.committed();
            }
            80..=91 => {
                vol.flush().unwrap();
                self.committed();
            }
            _ => {
                drop(vol);
                self.pool.close().unwrap();
                self.committed();
                let store = Box::new(self.store.clone());
                let pool =
                    Pool::open_on(self.meta.clone(), self.data.clone(), store, None, "model")
                        .unwrap();
                self.pool = pool;
            }
        }
    }

    /// Cuts the power on both devices and reopens; checks what must have survived.
    fn crash(&mut self, rng: &mut Rng, round: usize) {
        let meta = Arc::new(FaultyDevice::from_image(
            &self.meta.crash_image(CrashPlan::Random { seed: rng.next() }),
        ));
        let data = Arc::new(self.data.crash(CrashPlan::Random { seed: rng.next() }));
        // The old pool's last handle goes; its final commit lands on the dead devices.
        self.meta.fail_writes_after(0);
        self.data.fail_after(0);
        let store = Box::new(self.store.clone());
        let pool = Pool::open_on(meta.clone(), data.clone(), store, None, "model")
            .unwrap_or_else(|e| panic!("round {round}: reopen after a power cut failed: {e}"));
        let old = std::mem::replace(&mut self.pool, pool);
        drop(old);
        self.meta = meta;
        self.data = data;
        let report =
            check(self.meta.clone() as Arc<dyn BlockDevice>, CheckOptions::default()).unwrap();
        assert!(report.is_clean(), "round {round}: {:#?}", report.problems);
        let names: Vec<String> = self.pool.list().into_iter().map(|(n, _)| n).collect();
        assert_eq!(
            names,
            self.flushed.vols.keys().cloned().collect::<Vec<_>>(),
            "round {round}: volumes"
        );
        for (name, want) in &self.flushed.vols {
            let vol = self.pool.volume(name).unwrap();
            let dirty = self.dirty.get(name).cloned().unwrap_or_default();
            let mut got = vec![0u8; want.len()];
            vol.read(0, &mut got).unwrap();
            for b in 0..(want.len() as u64).div_ceil(BS) {
                if dirty.contains(&b) {
                    continue;
                }
                let r = (b * BS) as usize..((b + 1) * BS).min(want.len() as u64) as usize;
                assert!(
                    got[r.clone()] == want[r.clone()],
                    "round {round}: {name} block {b} lost flushed data"
                );
            }
            // What we read now is the truth from here on.
            self.model.vols.insert(name.clone(), got);
        }
        self.model.vols.retain(|n, _| self.flushed.vols.contains_key(n));
        self.committed();
    }
}

fn run_case(seed: u64, rounds: usize, device: bool) -> World {
    let mut rng = Rng::new(seed);
    let mut w = World::new(device);
    for round in 0..rounds {
        for _ in 0..20 {
            w.step(&mut rng);
        }
        w.crash(&mut rng, round);
    }
    w
}

#[test]
fn random_operations_match_the_model_across_power_cuts() {
    // 60 seeds for CI; THINLY_LONG_SWEEPS=1 runs 600.
    for_each_seed(60, |seed| sweep_case(seed, false));
}

#[test]
fn random_operations_match_the_model_on_a_block_device_across_power_cuts() {
    // 20 seeds for CI; THINLY_LONG_SWEEPS=1 runs 200.
    for_each_seed(20, |seed| sweep_case(seed, true));
}

fn sweep_case(seed: u64, device: bool) {
    {
        let w = run_case(seed, 5, device);
        // The final state also passes the real thin_check (without leniency).
        if seed.is_multiple_of(10) {
            if let Some(tool) = real_tool("thin_check") {
                w.pool.close().unwrap();
                let dir = tempfile::tempdir().unwrap();
                let path = dir.path().join("metadata");
                std::fs::write(&path, w.meta.crash_image(CrashPlan::KeepAll)).unwrap();
                let (rc, out, err) = run_tool(&tool, &[path.to_str().unwrap()]);
                assert_eq!(rc, 0, "seed {seed}: {out}{err}");
            }
        }
        let _ = w.data.len_bytes();
    }
}
