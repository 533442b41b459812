//! Snapshots are O(1): create_snap at chain depth 1 and 10 000 and on an origin with 1M
//! mappings, and a lookup in a snapshot at depth 1 and 10 000, in one run. Every case has
//! 10 001 devices, so only the depth differs; `small_pool_depth_1` (two devices) shows what
//! the device count alone costs (the top-level tree is one level shallower).
//!
//! cargo bench --bench thin_metadata

use criterion::{black_box, criterion_group, criterion_main, Criterion};
use std::sync::Arc;
use std::time::{Duration, Instant};
use thinly_engine::io::{BlockDevice, MemDevice};
use thinly_engine::thin::ThinMetadata;
use thinly_engine::{DevId, VirtBlock};

const ORIGIN_BLOCKS: u64 = 100_000;

/// A pool of 10 001 devices: device 0 holds `origin_blocks` mappings and has a chain of
/// `depth` snapshots above it, each writing 8 blocks of its own; independent thin devices
/// (8 mappings each) make up the rest, so every case has the same number of devices and
/// only the chain depth differs. Returns the metadata and the chain's tip.
fn chain(depth: u64, origin_blocks: u64) -> (ThinMetadata, DevId) {
    let (mut md, tip) = chain_only(depth, origin_blocks);
    for id in depth + 1..=10_000 {
        let dev = DevId(id);
        md.create_thin(dev).unwrap();
        for v in 0..8 {
            let b = md.alloc_data_block().unwrap();
            md.insert_mapping(dev, VirtBlock(v), b).unwrap();
        }
    }
    md.commit().unwrap();
    (md, tip)
}

/// Device 0 and its chain of `depth` snapshots, nothing else.
fn chain_only(depth: u64, origin_blocks: u64) -> (ThinMetadata, DevId) {
    let dev: Arc<dyn BlockDevice> = Arc::new(MemDevice::new(200_000));
    let mut md = ThinMetadata::format(dev, 128, 4 << 20, 512 << 20).unwrap();
    md.create_thin(DevId(0)).unwrap();
    for v in 0..origin_blocks {
        let b = md.alloc_data_block().unwrap();
        md.insert_mapping(DevId(0), VirtBlock(v), b).unwrap();
    }
    for id in 1..=depth {
        md.create_snap(DevId(id), DevId(id - 1)).unwrap();
        for j in 0..8u64 {
            let b = md.alloc_data_block().unwrap();
            let v = (id * 131 + j * 7919) % origin_blocks.max(1);
            md.insert_mapping(DevId(id), VirtBlock(v), b).unwrap();
        }
    }
    md.commit().unwrap();
    (md, DevId(depth))
}

fn create_snap(c: &mut Criterion) {
    let mut g = c.benchmark_group("create_snap");
    // Every snapshot bumps the pool's 24-bit time: keep criterion's iteration count bounded.
    g.sample_size(20)
        .warm_up_time(Duration::from_millis(300))
        .measurement_time(Duration::from_secs(1));
    for (name, depth, blocks) in [
        ("depth_1", 1, ORIGIN_BLOCKS),
        ("depth_10000", 10_000, ORIGIN_BLOCKS),
        ("origin_1m_mappings", 0, 1_000_000),
        ("small_pool_depth_1", 1, ORIGIN_BLOCKS),
    ] {
        let (mut md, tip) = if name.starts_with("small") {
            chain_only(depth, blocks)
        } else {
            chain(depth, blocks)
        };
        let mut next = 1_000_000u64;
        g.bench_function(name, |b| {
            b.iter_custom(|iters| {
                let mut total = Duration::ZERO;
                for _ in 0..iters {
                    let t = Instant::now();
                    md.create_snap(DevId(next), tip).unwrap();
                    total += t.elapsed();
                    md.delete(DevId(next)).unwrap();
                    next += 1;
                }
                total
            })
        });
    }
    g.finish();
}

fn lookup(c: &mut Criterion) {
    let mut g = c.benchmark_group("lookup_in_snapshot");
    for (name, depth) in [("depth_1", 1), ("depth_10000", 10_000)] {
        let (mut md, tip) = chain(depth, ORIGIN_BLOCKS);
        let mut v = 0u64;
        g.bench_function(name, |b| {
            b.iter(|| {
                v = (v + 7919) % ORIGIN_BLOCKS;
                black_box(md.lookup(tip, VirtBlock(v)).unwrap())
            })
        });
    }
    g.finish();
}

criterion_group!(benches, create_snap, lookup);
criterion_main!(benches);
