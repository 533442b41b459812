//! Thin metadata against a model and against the real thin-provisioning-tools: random
//! device, mapping, snapshot, metadata-snapshot and resize sequences; then the internal
//! checker, the real `thin_check` (without --ignore-non-fatal-errors, so leaks fail) and the
//! real `thin_dump` (and `thin_dump -m`) must agree with the model. Seeds replay with
//! THINLY_SEED=N.

mod common;

use common::*;
use std::collections::BTreeMap;
use std::sync::Arc;
use thinly_engine::io::{BlockDevice, FileDevice};
use thinly_engine::thin::{check, CheckOptions, OpenOptions, ThinMetadata};
use thinly_engine::{DataBlock, DevId, VirtBlock};

/// device → (virtual block → data block)
type ThinModel = BTreeMap<u64, BTreeMap<u64, u64>>;

struct Case {
    md: ThinMetadata,
    path: std::path::PathBuf,
    model: ThinModel,
    committed: ThinModel,
    held: Option<ThinModel>,
    committed_held: Option<ThinModel>,
    next_id: u64,
}

fn open_file(path: &std::path::Path) -> Arc<dyn BlockDevice> {
    Arc::new(FileDevice::open(path, false).unwrap())
}

impl Case {
    /// A write to `v`: in place if exclusively mapped, else a fresh block (breaking sharing).
    fn write(&mut self, dev: u64, v: u64) {
        let id = DevId(dev);
        if let Some(m) = self.md.lookup(id, VirtBlock(v)).unwrap() {
            assert_eq!(Some(&m.data_block.0), self.model[&dev].get(&v));
            if !m.maybe_shared {
                return;
            }
        }
        let b = self.md.alloc_data_block().unwrap();
        self.md.insert_mapping(id, VirtBlock(v), b).unwrap();
        self.model.get_mut(&dev).unwrap().insert(v, b.0);
    }

    fn step(&mut self, rng: &mut Rng) {
        let ids: Vec<u64> = self.model.keys().copied().collect();
        let pick = |rng: &mut Rng| ids[rng.below(ids.len() as u64) as usize];
        match rng.below(100) {
            _ if ids.is_empty() => self.create(),
            0..=3 => self.create(),
            4..=11 => {
                let origin = pick(rng);
                let id = self.next_id;
                self.next_id += 1;
                self.md.create_snap(DevId(id), DevId(origin)).unwrap();
                let copy = self.model[&origin].clone();
                self.model.insert(id, copy);
            }
            12..=14 if ids.len() > 1 => {
                let id = pick(rng);
                self.md.delete(DevId(id)).unwrap();
                self.model.remove(&id);
            }
            15..=54 => {
                let dev = pick(rng);
                let start = rng.below(4000);
                for v in start..start + 1 + rng.below(200) {
                    self.write(dev, v);
                }
            }
            55..=64 => {
                let dev = pick(rng);
                let start = rng.below(4000);
                let end = start + rng.below(300);
                let n = self.md.remove_range(DevId(dev), VirtBlock(start), VirtBlock(end)).unwrap();
                let m = self.model.get_mut(&dev).unwrap();
                let before = m.len();
                m.retain(|k, _| !(start..end).contains(k));
                assert_eq!(n as usize, before - m.len());
            }
            65..=74 => {
                let dev = pick(rng);
                let v = rng.below(4200);
                let got = self.md.lookup(DevId(dev), VirtBlock(v)).unwrap().map(|m| m.data_block.0);
                assert_eq!(got, self.model[&dev].get(&v).copied(), "lookup dev {dev} block {v}");
            }
            75..=78 => {
                if self.held.is_none() {
                    self.md.reserve_metadata_snap().unwrap();
                    self.held = Some(self.model.clone());
                    self.commit_model();
                } else {
                    self.md.release_metadata_snap().unwrap();
                    self.held = None;
                    self.commit_model();
                }
            }
            79 => {
                let n = self.md.nr_data_blocks();
                self.md.resize_data(n + rng.below(20_000)).unwrap();
            }
            80..=89 => {
                self.md.commit().unwrap();
                self.commit_model();
            }
            90..=93 => {
                self.md.abort().unwrap();
                self.model = self.committed.clone();
                self.held = self.committed_held.clone();
            }
            _ => {
                self.md.commit().unwrap();
                self.commit_model();
                self.md =
                    ThinMetadata::open(open_file(&self.path), OpenOptions::default()).unwrap();
            }
        }
    }

    fn create(&mut self) {
        let id = self.next_id;
        self.next_id += 1;
        self.md.create_thin(DevId(id)).unwrap();
        self.model.insert(id, BTreeMap::new());
    }

    /// Every pair of devices: `changed_blocks` over a random range with a random bound on
    /// runs gives exactly the model's differing blocks, and continuing from `complete_to`
    /// gives the rest.
    fn check_changes(&mut self, rng: &mut Rng) {
        let ids: Vec<u64> = self.model.keys().copied().collect();
        for &a in &ids {
            for &b in &ids {
                let (begin, end) = (rng.below(300), 3900 + rng.below(400));
                let (ma, mb) = (&self.model[&a], &self.model[&b]);
                let want: Vec<u64> = (begin..end).filter(|v| ma.get(v) != mb.get(v)).collect();
                let max_runs = 1 + rng.below(8) as usize;
                let mut got = Vec::new();
                let mut at = begin;
                while at < end {
                    let ch = self
                        .md
                        .changed_blocks(DevId(a), DevId(b), VirtBlock(at), VirtBlock(end), max_runs)
                        .unwrap();
                    assert!(ch.runs.len() <= max_runs && ch.complete_to > at);
                    for (first, len) in ch.runs {
                        assert!(first >= at && first + len <= ch.complete_to);
                        got.extend(first..first + len);
                    }
                    at = ch.complete_to;
                }
                assert_eq!(got, want, "changed blocks between devices {a} and {b}");
            }
        }
    }

    fn commit_model(&mut self) {
        self.committed = self.model.clone();
        self.committed_held = self.held.clone();
    }
}

fn dumped_mappings(d: &Dump) -> ThinModel {
    d.devices
        .iter()
        .map(|(id, dev)| (*id, dev.mappings.iter().map(|(v, (b, _))| (*v, *b)).collect()))
        .collect()
}

fn run_case(seed: u64, nr_steps: usize) {
    let mut rng = Rng::new(seed);
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("metadata");
    let dev: Arc<dyn BlockDevice> = Arc::new(FileDevice::create(&path, 8192).unwrap());
    let md = ThinMetadata::format(dev, 128, 100_000, 1 << 20).unwrap();
    let mut c = Case {
        md,
        path: path.clone(),
        model: BTreeMap::new(),
        committed: BTreeMap::new(),
        held: None,
        committed_held: None,
        next_id: 1,
    };
    for i in 0..nr_steps {
        c.step(&mut rng);
        if i % 25 == 24 {
            c.check_changes(&mut rng);
        }
    }
    c.check_changes(&mut rng);
    c.md.commit().unwrap();
    c.commit_model();
    // Every device reads back as modelled, with exact mapped_blocks.
    for (id, m) in &c.model {
        assert_eq!(c.md.device_details(DevId(*id)).unwrap().mapped_blocks, m.len() as u64);
        let mut got = BTreeMap::new();
        c.md.for_each_mapping(DevId(*id), VirtBlock(0), VirtBlock(u64::MAX), &mut |v, mp| {
            got.insert(v.0, mp.data_block.0);
            Ok(std::ops::ControlFlow::Continue(()))
        })
        .unwrap();
        assert_eq!(&got, m, "device {id}");
    }
    if let Some(h) = c.md.held_snapshot().unwrap() {
        let devs = c.md.snapshot_devices(&h).unwrap();
        let mut got = ThinModel::new();
        for id in devs.keys() {
            let maps = c.md.snapshot_mappings(&h, *id).unwrap();
            got.insert(id.0, maps.into_iter().map(|(v, b, _)| (v.0, b.0)).collect());
        }
        assert_eq!(Some(&got), c.held.as_ref(), "the held metadata snapshot");
    }
    drop(c.md);
    let report = check(open_file(&path), CheckOptions::default()).unwrap();
    assert!(report.is_clean(), "internal checker: {:#?}", report.problems);

    let Some(thin_check) = real_tool("thin_check") else {
        return;
    };
    let p = path.to_str().unwrap();
    let (rc, out, err) = run_tool(&thin_check, &[p]);
    assert_eq!(rc, 0, "thin_check failed:\n{out}\n{err}");
    let thin_dump = real_tool("thin_dump").expect("thin_dump beside thin_check");
    let (rc, out, err) = run_tool(&thin_dump, &[p]);
    assert_eq!(rc, 0, "thin_dump failed: {err}");
    let dump = parse_dump(&out);
    assert_eq!(dumped_mappings(&dump), c.model, "thin_dump differs from the model");
    if let Some(held) = &c.held {
        let (rc, out, err) = run_tool(&thin_dump, &["-m", p]);
        assert_eq!(rc, 0, "thin_dump -m failed: {err}");
        assert_eq!(&dumped_mappings(&parse_dump(&out)), held, "thin_dump -m differs");
    }
}

#[test]
fn random_thin_operations_pass_the_real_thin_check_and_dump_as_modelled() {
    for_each_seed(12, |seed| run_case(seed, 150));
}

#[test]
fn a_chain_of_1000_snapshots_deletes_one_from_the_middle_exactly() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("metadata");
    let dev: Arc<dyn BlockDevice> = Arc::new(FileDevice::create(&path, 16384).unwrap());
    let mut md = ThinMetadata::format(dev, 128, 1 << 20, 1 << 22).unwrap();
    md.create_thin(DevId(0)).unwrap();
    let mut model: ThinModel = BTreeMap::new();
    model.insert(0, BTreeMap::new());
    for v in 0..2000 {
        let b = md.alloc_data_block().unwrap();
        md.insert_mapping(DevId(0), VirtBlock(v), b).unwrap();
        model.get_mut(&0).unwrap().insert(v, b.0);
    }
    // Each snapshot of the previous one, then a few writes of its own.
    for id in 1..1000u64 {
        md.create_snap(DevId(id), DevId(id - 1)).unwrap();
        let mut m = model[&(id - 1)].clone();
        for v in [id % 2000, (id * 7) % 2000] {
            let b = md.alloc_data_block().unwrap();
            md.insert_mapping(DevId(id), VirtBlock(v), b).unwrap();
            m.insert(v, b.0);
        }
        model.insert(id, m);
    }
    md.commit().unwrap();
    let used_before = md.status().used_data_blocks;
    // The blocks only device 500 maps are exactly those it wrote and 501 overwrote again.
    let exclusive: Vec<u64> = model[&500]
        .values()
        .filter(|b| {
            model.iter().filter(|(id, _)| **id != 500).all(|(_, m)| !m.values().any(|x| x == *b))
        })
        .copied()
        .collect();
    md.delete(DevId(500)).unwrap();
    model.remove(&500);
    let freed = md.commit().unwrap();
    let mut freed: Vec<u64> = freed.into_iter().map(|b: DataBlock| b.0).collect();
    freed.sort_unstable();
    let mut want = exclusive.clone();
    want.sort_unstable();
    assert_eq!(freed, want, "delete frees exactly the snapshot's exclusive blocks");
    assert_eq!(md.status().used_data_blocks, used_before - exclusive.len() as u64);
    drop(md);
    let report = check(open_file(&path), CheckOptions::default()).unwrap();
    assert!(report.is_clean(), "{:#?}", report.problems);
    if let Some(thin_check) = real_tool("thin_check") {
        let (rc, out, err) = run_tool(&thin_check, &[path.to_str().unwrap()]);
        assert_eq!(rc, 0, "{out}{err}");
    }
}
