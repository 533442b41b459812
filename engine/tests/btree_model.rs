//! Model-based tests of the persistent-data core: random operations on shared two-level
//! trees against `BTreeMap`s, across commits and reopens, with a full recount after each
//! case. Seeds replay with THINLY_SEED=N.

mod common;

use common::*;
use std::collections::BTreeMap;
use std::sync::Arc;
use thinly_engine::btree::{self, ValueKind};
use thinly_engine::format::thin::BlockTime;
use thinly_engine::io::{BlockDevice, MemDevice};
use thinly_engine::MetaBlock;

fn run_case(seed: u64, nr_ops: usize, key_space: u64) {
    let mut rng = Rng::new(seed);
    let dev: Arc<dyn BlockDevice> = Arc::new(MemDevice::new(8192));
    let mut s = Store::format(dev.clone(), NR_DATA_BLOCKS).unwrap();
    let mut model: Model = BTreeMap::new();
    let mut committed: Model = BTreeMap::new();
    let mut next_id = 0u64;
    for _ in 0..nr_ops {
        let ids: Vec<u64> = model.keys().copied().collect();
        let pick = |rng: &mut Rng| ids[rng.below(ids.len() as u64) as usize];
        match rng.below(100) {
            _ if ids.is_empty() => new_tree(&mut s, &mut model, &mut next_id),
            0..=2 => new_tree(&mut s, &mut model, &mut next_id),
            3..=5 => {
                // Snapshot: share the whole subtree (one inc of its root).
                let origin = pick(&mut rng);
                let root = s.subtree(origin).unwrap().unwrap();
                s.tm.inc(root).unwrap();
                s.set_subtree(next_id, root).unwrap();
                let copy = model[&origin].clone();
                model.insert(next_id, copy);
                next_id += 1;
            }
            6 if ids.len() > 1 => {
                let id = pick(&mut rng);
                let (top, found) =
                    btree::remove(&mut s.tm, s.top, ValueKind::SubtreeRoot, id).unwrap();
                assert!(found);
                s.top = top;
                model.remove(&id);
            }
            7..=44 => {
                let id = pick(&mut rng);
                let key = rng.below(key_space);
                let block = insert_mapping(&mut s, id, key);
                model.get_mut(&id).unwrap().insert(key, block);
            }
            45..=49 => {
                // A sequential run, so trees grow deep quickly.
                let id = pick(&mut rng);
                let start = rng.below(key_space);
                for key in start..start + rng.below(600) {
                    let block = insert_mapping(&mut s, id, key);
                    model.get_mut(&id).unwrap().insert(key, block);
                }
            }
            50..=69 => {
                let id = pick(&mut rng);
                let key =
                    match model[&id].keys().nth(rng.below(model[&id].len() as u64 + 1) as usize) {
                        Some(&k) if rng.chance(80) => k,
                        _ => rng.below(key_space),
                    };
                let found = remove_mapping(&mut s, id, key);
                assert_eq!(
                    found,
                    model.get_mut(&id).unwrap().remove(&key).is_some(),
                    "remove {key} from {id}"
                );
            }
            70..=74 => {
                // Remove a run of keys (a discard), which empties whole leaves.
                let id = pick(&mut rng);
                let start = rng.below(key_space);
                for key in start..start + rng.below(800) {
                    let found = remove_mapping(&mut s, id, key);
                    assert_eq!(found, model.get_mut(&id).unwrap().remove(&key).is_some());
                }
            }
            75..=84 => {
                let id = pick(&mut rng);
                let key = rng.below(key_space);
                let root = s.subtree(id).unwrap().unwrap();
                let got = btree::lookup_u64(&mut s.tm, root, ValueKind::BlockTime, key)
                    .unwrap()
                    .map(|v| BlockTime::unpack(v).block);
                assert_eq!(got, model[&id].get(&key).copied(), "lookup {key} in {id}");
            }
            85..=89 => {
                let id = pick(&mut rng);
                let a = rng.below(key_space);
                let b = a + rng.below(2000);
                let want: BTreeMap<u64, u64> =
                    model[&id].range(a..b).map(|(k, v)| (*k, *v)).collect();
                assert_eq!(read_tree(&mut s, id, a, b), want, "range [{a}, {b}) of {id}");
            }
            90..=95 => {
                s.commit().unwrap();
                committed = model.clone();
            }
            _ => {
                // Reopen from disk: everything since the last commit is gone.
                drop(s);
                s = Store::open(dev.clone()).unwrap();
                model = committed.clone();
            }
        }
    }
    s.commit().unwrap();
    verify_all(&mut s, &model);
    assert_clean(&dev);
    drop(s);
    let mut s = Store::open(dev.clone()).unwrap();
    verify_all(&mut s, &model);
}

#[test]
fn random_operations_on_shared_trees_match_the_model() {
    for_each_seed(24, |seed| run_case(seed, 400, 5_000));
}

#[test]
fn deep_trees_survive_heavy_churn() {
    for_each_seed(3, |seed| run_case(1000 + seed, 1500, 60_000));
}

#[test]
fn a_million_sequential_keys_commit_and_reopen() {
    let dev: Arc<dyn BlockDevice> = Arc::new(MemDevice::new(40_000));
    let mut s = Store::format(dev.clone(), 1 << 21).unwrap();
    let root = btree::empty_tree(&mut s.tm, ValueKind::BlockTime).unwrap();
    s.set_subtree(0, root).unwrap();
    let mut root = root;
    for k in 0..1_000_000u64 {
        let v = BlockTime { block: k, time: 0 }.pack();
        s.tm.data_sm_mut().set(k, 1).unwrap();
        root = btree::insert(&mut s.tm, root, ValueKind::BlockTime, k, &v.to_le_bytes()).unwrap().0;
    }
    s.set_subtree(0, root).unwrap();
    s.commit().unwrap();
    assert_clean(&dev);
    let mut s = Store::open(dev).unwrap();
    let root: MetaBlock = s.subtree(0).unwrap().unwrap();
    for k in (0..1_000_000u64).step_by(9973) {
        let v = btree::lookup_u64(&mut s.tm, root, ValueKind::BlockTime, k).unwrap();
        assert_eq!(v.map(|v| BlockTime::unpack(v).block), Some(k));
    }
}

#[test]
fn removing_every_key_leaves_an_empty_leaf_root() {
    let dev: Arc<dyn BlockDevice> = Arc::new(MemDevice::new(4096));
    let mut s = Store::format(dev.clone(), 1 << 16).unwrap();
    let root = btree::empty_tree(&mut s.tm, ValueKind::BlockTime).unwrap();
    s.set_subtree(7, root).unwrap();
    for k in 0..20_000 {
        insert_mapping(&mut s, 7, k * 3);
    }
    s.commit().unwrap();
    assert_clean(&dev);
    for k in (0..20_000).rev() {
        assert!(remove_mapping(&mut s, 7, k * 3));
    }
    s.commit().unwrap();
    assert_clean(&dev);
    assert!(read_tree(&mut s, 7, 0, u64::MAX).is_empty());
    assert_eq!(s.tm.data_sm().nr_allocated(), 0);
}
