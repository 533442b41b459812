//! thin_trim discards exactly the data blocks no device maps.

mod common;

use std::os::unix::fs::{FileExt, MetadataExt};
use thinly_engine::pool::{Pool, PoolOptions, PoolSettings};

#[test]
fn thin_trim_punches_the_unmapped_blocks_and_keeps_the_mapped_ones() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("pool");
    let opts = PoolOptions {
        data_size_bytes: 64 << 20,
        settings: PoolSettings { commit_interval_ms: 0, ..PoolSettings::default() },
        ..PoolOptions::default()
    };
    let pool = Pool::create(&dir, &opts).unwrap();
    let v = pool.create_volume("v", 16 << 20).unwrap();
    v.write(0, &vec![0xAB; 4 << 16], true).unwrap();
    drop(v);
    pool.close().unwrap();
    drop(pool);
    // Stale bytes in free blocks 10..20, as another writer (or the kernel) may leave them.
    let data = std::fs::OpenOptions::new().write(true).open(dir.join("data")).unwrap();
    data.write_all_at(&vec![0x5A; 10 << 16], 10 << 16).unwrap();
    data.sync_all().unwrap();
    let before = std::fs::metadata(dir.join("data")).unwrap().blocks() * 512;
    let meta = dir.join("metadata");
    let out = common::thinly_run(&[
        "trim",
        "--metadata-dev",
        meta.to_str().unwrap(),
        "--data-dev",
        dir.join("data").to_str().unwrap(),
    ]);
    common::ok(&out, "thinly trim");
    let after = std::fs::metadata(dir.join("data")).unwrap().blocks() * 512;
    assert!(
        after + (10 << 16) <= before,
        "the free blocks were deallocated ({before} → {after} bytes)"
    );
    let f = std::fs::File::open(dir.join("data")).unwrap();
    let mut buf = vec![0u8; 20 << 16];
    f.read_exact_at(&mut buf, 0).unwrap();
    assert!(buf[..4 << 16].iter().all(|&b| b == 0xAB), "mapped blocks are kept");
    assert!(buf[4 << 16..].iter().all(|&b| b == 0), "unmapped blocks read zeros");
}
