//! ENGINE BUG (found by the kernel tests; not fixed here, engine/ belongs to another change):
//! `Pool::status()` fills two of the kernel's thin-pool status fields differently from the
//! kernel (Linux 6.1, dm-thin-pool 1.22.0).
//!
//! Observed on the same pool (thinly's pool made by kernel_thinly_pool.rs: 8 MiB metadata =
//! 2048 blocks, after the kernel's writes; the engine reads 14 metadata blocks in use):
//!
//! ```text
//! kernel `dmsetup status`:  0 131072 thin-pool 7 218/2048 110/1024 - rw discard_passdown queue_if_no_space - 512
//! thinly Pool::status():             7  14/2048 110/1024 - rw discard_passdown queue_if_no_space - 204
//! ```
//!
//! 1. used metadata blocks: the kernel reports `total - free`, where free excludes the
//!    metadata reserve (dm-thin-metadata.c `__set_metadata_reserve`: min(4096, total / 10),
//!    here 204), so its "used" includes the reserve: 14 + 204 = 218. thinly reports 14.
//! 2. the last field: the kernel prints its metadata low-water threshold
//!    (dm-thin.c `calc_metadata_threshold`: min(1024, metadata blocks / 4), here 512); thinly
//!    prints the reserve (204).
//!
//! Data figures, transaction id, held root, mode and policy agree (see kernel_diff.rs, whose
//! status rows compare them for five workloads). The test below states the kernel's rule;
//! it is ignored so the suite stays green; run it with `cargo test --test
//! kernel_status_compat -- --ignored`.

use thinly_engine::kernel::observe::MetaView;
use thinly_engine::pool::{Pool, PoolOptions, PoolSettings};

#[test]
#[ignore = "ENGINE BUG: Pool::status metadata fields differ from the kernel's (see the file's comment)"]
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
