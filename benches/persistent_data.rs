//! The persistent-data core: b-tree lookup and insert at 1M keys (against std's BTreeMap on
//! the same keys, in the same run), a 1M-key insert transaction with its commit, and
//! space-map allocation.
//!
//! cargo bench --bench persistent_data

use criterion::{black_box, criterion_group, criterion_main, BatchSize, Criterion};
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};
use thinly_engine::btree::{self, ValueKind};
use thinly_engine::format::superblock::{Superblock, SUPERBLOCK_MAGIC};
use thinly_engine::io::{BlockDevice, MemDevice};
use thinly_engine::space_map::SpaceMap;
use thinly_engine::transaction_manager::TransactionManager;
use thinly_engine::MetaBlock;

const N: u64 = 1_000_000;
const PLAIN8: ValueKind = ValueKind::Plain { size: 8 };

fn sb(root: MetaBlock) -> Superblock {
    Superblock {
        magic: SUPERBLOCK_MAGIC,
        version: 2,
        data_mapping_root: root,
        device_details_root: root,
        data_block_size_sectors: 128,
        metadata_block_size_sectors: 8,
        ..Superblock::default()
    }
}

/// A committed tree of N keys (spread: key = i × 7) and its transaction manager.
fn tree_of_1m() -> (TransactionManager, MetaBlock) {
    let dev: Arc<dyn BlockDevice> = Arc::new(MemDevice::new(40_000));
    let mut tm = TransactionManager::format(dev, 0, 256 << 20).unwrap();
    let mut root = btree::empty_tree(&mut tm, PLAIN8).unwrap();
    for i in 0..N {
        root = btree::insert(&mut tm, root, PLAIN8, i * 7, &i.to_le_bytes()).unwrap().0;
    }
    tm.commit(&mut sb(root)).unwrap();
    (tm, root)
}

fn lookup(c: &mut Criterion) {
    let (mut tm, root) = tree_of_1m();
    let std_map: BTreeMap<u64, u64> = (0..N).map(|i| (i * 7, i)).collect();
    let keys: Vec<u64> = (0..4096u64).map(|i| (i.wrapping_mul(0x9E37_79B9) % N) * 7).collect();
    let mut g = c.benchmark_group("lookup_1m_keys");
    let mut i = 0;
    g.bench_function("thinly_btree_cached", |b| {
        b.iter(|| {
            i = (i + 1) % keys.len();
            black_box(btree::lookup_u64(&mut tm, root, PLAIN8, keys[i]).unwrap())
        })
    });
    g.bench_function("std_btreemap", |b| {
        b.iter(|| {
            i = (i + 1) % keys.len();
            black_box(std_map.get(&keys[i]))
        })
    });
    g.finish();
}

fn insert(c: &mut Criterion) {
    let mut g = c.benchmark_group("insert");
    g.sample_size(10).measurement_time(Duration::from_secs(20));
    g.bench_function("1m_sequential_keys_and_commit", |b| {
        b.iter_batched(
            || {
                let dev: Arc<dyn BlockDevice> = Arc::new(MemDevice::new(40_000));
                TransactionManager::format(dev, 0, 256 << 20).unwrap()
            },
            |mut tm| {
                let mut root = btree::empty_tree(&mut tm, PLAIN8).unwrap();
                for k in 0..N {
                    root = btree::insert(&mut tm, root, PLAIN8, k, &k.to_le_bytes()).unwrap().0;
                }
                tm.commit(&mut sb(root)).unwrap();
            },
            BatchSize::PerIteration,
        )
    });
    g.finish();
    let (mut tm, mut root) = tree_of_1m();
    let mut g = c.benchmark_group("insert_into_1m_keys");
    let mut k = 1u64;
    g.bench_function("random_key_cached", |b| {
        b.iter(|| {
            k = k.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
            root =
                btree::insert(&mut tm, root, PLAIN8, (k % N) * 7 + 3, &k.to_le_bytes()).unwrap().0;
        })
    });
    g.finish();
}

fn space_map(c: &mut Criterion) {
    let mut g = c.benchmark_group("space_map");
    g.bench_function("alloc_from_16m_blocks", |b| {
        b.iter_custom(|iters| {
            let mut total = Duration::ZERO;
            let mut left = iters;
            while left > 0 {
                let mut sm = SpaceMap::new("data", 16 << 20);
                let n = left.min(sm.nr_blocks());
                let t = Instant::now();
                for _ in 0..n {
                    black_box(sm.alloc().unwrap());
                }
                total += t.elapsed();
                left -= n;
            }
            total
        })
    });
    g.finish();
}

criterion_group!(benches, lookup, insert, space_map);
criterion_main!(benches);
