//! `Pool::status()` fills the kernel's thin-pool status fields the way the kernel does
//! (Linux 6.1, dm-thin-pool 1.22.0), found by comparing both on the same pool:
//!
//! 1. used metadata blocks: the kernel reports `total - free`, where free excludes the
//!    metadata reserve (dm-thin-metadata.c: min(4096, total / 10)), so "used" includes it;
//! 2. the last field is the metadata low-water threshold (dm-thin.c
//!    `calc_metadata_threshold`: min(1024, metadata blocks / 4)).

use thinly_engine::pool::{Pool, PoolOptions, PoolSettings};
use thinly_lab::kernel::observe::MetaView;

#[test]
fn pool_status_metadata_fields_follow_the_kernel() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("pool");
    let opts = PoolOptions {
        data_size_bytes: 64 << 20,
        metadata_size_bytes: Some(8 << 20),
        settings: PoolSettings::default(),
        ..PoolOptions::default()
    };
    let pool = Pool::create(&dir, &opts).unwrap();
    pool.create_volume("v", 16 << 20).unwrap().write(0, &[7u8; 1 << 20], false).unwrap();
    pool.close().unwrap();
    drop(pool);
    let raw = MetaView::read(&dir.join("metadata")).unwrap();
    let total = raw.total_metadata_blocks;
    assert_eq!(total, 2048);
    let pool = Pool::open(&dir, Default::default()).unwrap();
    let s = pool.status();
    let reserve = (total / 10).min(4096);
    let threshold = (total / 4).min(1024);
    assert_eq!(
        (s.used_metadata_blocks, s.metadata_low_watermark),
        (raw.used_metadata_blocks + reserve, threshold),
        "kernel: used metadata = in use + reserve ({reserve}); last field = min(1024, total/4)"
    );
}
