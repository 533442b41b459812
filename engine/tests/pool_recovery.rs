//! Smaller defects of issue 13 §5 on the engine side: status after a delete frees blocks,
//! a lost pool.json, a failed create.

use thinly_engine::io::IoMode;
use thinly_engine::pool::{OutOfSpacePolicy, Pool, PoolOptions, PoolSettings};

const BS: u64 = 64 << 10;

fn options(data_bytes: u64) -> PoolOptions {
    let settings = PoolSettings {
        commit_interval_ms: 0,
        out_of_space: OutOfSpacePolicy::Error,
        ..PoolSettings::default()
    };
    PoolOptions { data_size_bytes: data_bytes, settings, ..PoolOptions::default() }
}

#[test]
fn status_says_rw_again_once_a_delete_frees_data_blocks() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let pool = Pool::create(tmp.path(), &options(16 * BS)).expect("create");
    let a = pool.create_volume("a", 32 * BS).expect("a");
    for b in 0..16 {
        a.write(b * BS, &vec![7u8; BS as usize], false).expect("write");
    }
    assert!(a.write(16 * BS, &vec![7u8; BS as usize], false).is_err(), "the pool is full");
    assert_eq!(pool.status().mode, "out_of_data_space");
    drop(a);
    pool.delete_volume("a").expect("delete");
    assert_eq!(pool.status().mode, "rw", "the delete freed every block");
}

#[test]
fn a_lost_pool_json_is_rebuilt_with_sizes_and_read_only_flags() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = tmp.path().join("pool");
    let pool = Pool::create(&dir, &options(64 << 20)).expect("create");
    pool.create_volume("a", 3 << 20).expect("a");
    pool.snapshot("a", "frozen", true).expect("snapshot");
    pool.create_volume("c", 5 << 20).expect("c");
    let before = pool.list();
    pool.close().expect("close");
    drop(pool);
    std::fs::remove_file(dir.join("pool.json")).expect("lose pool.json");
    let pool = Pool::open(&dir, IoMode::Auto).expect("reopen");
    assert_eq!(pool.list(), before, "volumes rebuilt as they were");
    assert!(pool.volume("frozen").expect("frozen").is_read_only());
    pool.close().expect("close");
    drop(pool);
    assert!(dir.join("pool.json").exists(), "pool.json written again");
}

#[test]
fn a_failed_pool_create_leaves_nothing_behind() {
    let tmp = tempfile::tempdir().expect("tempdir");
    // Metadata too small to format: fails after the metadata file was made.
    let dir = tmp.path().join("new");
    let opts = PoolOptions { metadata_size_bytes: Some(4096), ..options(16 << 20) };
    assert!(Pool::create(&dir, &opts).is_err());
    assert!(!dir.exists(), "the directory it made is gone");
    // A directory holding a stray data file: the create fails, the stray file stays.
    let dir = tmp.path().join("stray");
    std::fs::create_dir(&dir).expect("dir");
    std::fs::write(dir.join("data"), b"not thinly's").expect("stray data");
    assert!(Pool::create(&dir, &options(16 << 20)).is_err());
    let left: Vec<_> = std::fs::read_dir(&dir)
        .expect("read dir")
        .map(|e| e.expect("entry").file_name().into_string().expect("utf-8"))
        .collect();
    assert_eq!(left, vec!["data".to_string()], "only the stray file is left");
    assert_eq!(std::fs::read(dir.join("data")).expect("data"), b"not thinly's");
}
