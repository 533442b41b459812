//! The pool's data path: reads (plain and sparse) and writes of any alignment, provisioning,
//! copy-on-write, discard, write_zeroes, block_status, volumes and snapshots, persistence
//! across reopen, on both data I/O paths (io_uring and pread/pwrite).

mod common;

use std::sync::Arc;
use thinly_engine::io::{BlockDevice, FileDevice, IoMode};
use thinly_engine::pool::{Extent, Pool, PoolError, PoolOptions, PoolSettings, RunDetail};
use thinly_engine::thin::{check, CheckOptions};

const BS: u64 = 64 << 10;

fn options() -> PoolOptions {
    PoolOptions {
        data_size_bytes: 64 << 20,
        settings: PoolSettings { commit_interval_ms: 0, ..PoolSettings::default() },
        ..PoolOptions::default()
    }
}

fn pattern(seed: u8, len: usize) -> Vec<u8> {
    (0..len).map(|i| seed.wrapping_mul(31).wrapping_add((i % 251) as u8)).collect()
}

fn assert_metadata_clean(dir: &std::path::Path) {
    let dev: Arc<dyn BlockDevice> =
        Arc::new(FileDevice::open(&dir.join("metadata"), true).unwrap());
    let report = check(dev, CheckOptions::default()).unwrap();
    assert!(report.is_clean(), "{:#?}", report.problems);
    if let Some(tool) = common::real_tool("thin_check") {
        let (rc, out, err) = common::run_tool(&tool, &[dir.join("metadata").to_str().unwrap()]);
        assert_eq!(rc, 0, "{out}{err}");
    }
}

fn data_path_semantics(mode: IoMode) {
    let dir = tempfile::tempdir().unwrap();
    let pool = Pool::create(dir.path(), &options()).unwrap();
    let expected_path = if mode == IoMode::Posix { "pread/pwrite" } else { "io_uring" };
    pool.create_volume("vol0", 16 << 20).unwrap();
    drop(pool);
    let pool = Pool::open(dir.path(), mode).unwrap();
    assert_eq!(pool.data_io_path(), expected_path);
    let vol = pool.volume("vol0").unwrap();

    // Unmapped blocks read as zeros.
    let mut buf = vec![0xFFu8; 200_000];
    vol.read(12345, &mut buf).unwrap();
    assert!(buf.iter().all(|&b| b == 0));

    // A partial first write: the rest of the block reads as zeros.
    let a = pattern(1, 1000);
    vol.write(BS + 100, &a, false).unwrap();
    let mut block = vec![0xFFu8; BS as usize];
    vol.read(BS, &mut block).unwrap();
    assert!(block[..100].iter().all(|&b| b == 0));
    assert_eq!(&block[100..1100], &a[..]);
    assert!(block[1100..].iter().all(|&b| b == 0));

    // A write spanning blocks, unaligned both ends, read back across the boundaries.
    let b = pattern(2, 3 * BS as usize + 777);
    vol.write(5 * BS - 333, &b, false).unwrap();
    let mut back = vec![0u8; b.len()];
    vol.read(5 * BS - 333, &mut back).unwrap();
    assert_eq!(back, b);

    // A snapshot shares; writes after it do not show on the other side.
    let snap = pool.snapshot("vol0", "snap", false).unwrap();
    let c = pattern(3, 5000);
    vol.write(BS + 50, &c, false).unwrap();
    let mut s = vec![0u8; BS as usize];
    snap.read(BS, &mut s).unwrap();
    assert_eq!(s, block, "the snapshot keeps the old block");
    let mut o = vec![0u8; BS as usize];
    vol.read(BS, &mut o).unwrap();
    assert_eq!(&o[..50], &block[..50], "copy-on-write kept the rest of the old block");
    assert_eq!(&o[50..5050], &c[..]);
    assert_eq!(&o[5050..], &block[5050..]);
    let d = pattern(4, 700);
    snap.write(5 * BS, &d, true).unwrap();
    vol.read(5 * BS - 333, &mut back).unwrap();
    assert_eq!(back, b, "writes to the snapshot do not reach the origin");

    // block_status: holes and data, shared and exclusive.
    let ext = vol.block_status(0, 10 * BS, RunDetail::Sharing).unwrap();
    assert_eq!(ext.iter().map(|e| e.len_bytes).sum::<u64>(), 10 * BS);
    assert_eq!(ext[0], Extent { len_bytes: BS, mapped: false, shared: false });
    assert_eq!(
        ext[1],
        Extent { len_bytes: BS, mapped: true, shared: false },
        "broken sharing: exclusive"
    );
    assert!(ext.iter().any(|e| e.mapped && e.shared), "{ext:?}");

    // Discard unmaps whole blocks only; write_zeroes zeroes partial ones.
    vol.discard(BS + 10, 3 * BS, false).unwrap();
    vol.read(BS, &mut o).unwrap();
    assert_eq!(&o[50..5050], &c[..], "the partial first block is untouched by discard");
    let mut z = vec![0xFFu8; 2 * BS as usize];
    vol.read(2 * BS, &mut z).unwrap();
    assert!(z.iter().all(|&x| x == 0), "discarded blocks read zeros");
    vol.write_zeroes(BS + 40, 100, true, false).unwrap();
    vol.read(BS, &mut o).unwrap();
    assert!(o[40..140].iter().all(|&x| x == 0));
    assert_eq!(&o[140..5050], &c[90..]);
    vol.write_zeroes(6 * BS, BS, false, false).unwrap();
    let ext = vol.block_status(6 * BS, BS, RunDetail::Mapped).unwrap();
    assert!(ext[0].mapped, "write_zeroes without may_trim leaves the block allocated");

    // Out of range and read-only requests are refused.
    assert!(matches!(vol.read(16 << 20, &mut [0u8; 1]), Err(PoolError::Invalid(_))));
    assert!(matches!(vol.write((16 << 20) - 1, &[0u8; 2], false), Err(PoolError::Invalid(_))));
    let ro = pool.snapshot("vol0", "ro", true).unwrap();
    assert!(matches!(ro.write(0, &[1], false), Err(PoolError::ReadOnly(_))));

    // Everything flushed survives a reopen.
    vol.flush().unwrap();
    let mut before = vec![0u8; 8 * BS as usize];
    vol.read(0, &mut before).unwrap();
    drop((vol, snap, ro));
    pool.close().unwrap();
    drop(pool);
    let pool = Pool::open(dir.path(), mode).unwrap();
    let mut after = vec![0u8; before.len()];
    pool.volume("vol0").unwrap().read(0, &mut after).unwrap();
    assert_eq!(after, before);
    assert_eq!(pool.list().len(), 3);
    pool.close().unwrap();
    drop(pool);
    assert_metadata_clean(dir.path());
}

#[test]
fn the_data_path_works_through_io_uring() {
    data_path_semantics(IoMode::Uring);
}

#[test]
fn the_data_path_works_through_pread_and_pwrite() {
    data_path_semantics(IoMode::Posix);
}

#[test]
fn a_sparse_read_returns_the_layout_block_status_reports_and_the_same_bytes() {
    let dir = tempfile::tempdir().unwrap();
    let pool = Pool::create(dir.path(), &options()).unwrap();
    let vol = pool.create_volume("vol0", 16 << 20).unwrap();
    // Mapped: block 1 (partly written), blocks 3–4, and block 8, shared with a snapshot.
    vol.write(BS + 100, &pattern(1, 1000), false).unwrap();
    vol.write(3 * BS, &pattern(2, 2 * BS as usize), false).unwrap();
    vol.write(8 * BS, &pattern(3, BS as usize), false).unwrap();
    let snap = pool.snapshot("vol0", "snap", false).unwrap();
    let ranges = [
        (0, 10 * BS),
        (BS + 7, 3 * BS),
        (3 * BS + 1, 100),
        (2 * BS, BS),
        (7 * BS - 5, 2 * BS + 10),
        (5 * BS, 0),
    ];
    for (offset, len) in ranges {
        let mut sparse = vec![0x55u8; 3];
        let layout = vol.read_sparse(offset, len, &mut sparse).unwrap();
        let status = vol.block_status(offset, len, RunDetail::Mapped).unwrap();
        assert_eq!(layout, status, "{len} bytes at {offset}");
        let mut plain = vec![0xEEu8; len as usize];
        vol.read(offset, &mut plain).unwrap();
        // The sparse read appended exactly the mapped runs of the plain read.
        let mut mapped = vec![0x55u8; 3];
        let mut at = 0usize;
        for e in &layout {
            let run = &plain[at..at + e.len_bytes as usize];
            if e.mapped {
                mapped.extend_from_slice(run);
            } else {
                assert!(run.iter().all(|&b| b == 0), "unmapped bytes read as zeros");
            }
            at += e.len_bytes as usize;
        }
        assert_eq!(at as u64, len, "the layout covers the read");
        assert_eq!(sparse, mapped, "{len} bytes at {offset}");
    }
    // Sharing is worked out only when asked for.
    let mapped = Extent { len_bytes: BS, mapped: true, shared: false };
    assert_eq!(vol.block_status(8 * BS, BS, RunDetail::Mapped).unwrap(), vec![mapped]);
    let shared = Extent { shared: true, ..mapped };
    assert_eq!(vol.block_status(8 * BS, BS, RunDetail::Sharing).unwrap(), vec![shared]);
    drop((vol, snap));
    pool.close().unwrap();
    drop(pool);
    assert_metadata_clean(dir.path());
}

#[test]
fn a_second_opener_is_refused_while_the_pool_is_open() {
    let dir = tempfile::tempdir().unwrap();
    let pool = Pool::create(dir.path(), &options()).unwrap();
    assert!(matches!(Pool::open(dir.path(), IoMode::Auto), Err(PoolError::Busy(_))));
    drop(pool);
    Pool::open(dir.path(), IoMode::Auto).unwrap();
}

#[test]
fn volumes_are_created_resized_deleted_and_named_safely() {
    let dir = tempfile::tempdir().unwrap();
    let pool = Pool::create(dir.path(), &options()).unwrap();
    assert!(matches!(pool.create_volume("a/b", 1 << 20), Err(PoolError::Invalid(_))));
    assert!(matches!(pool.create_volume("v", 1000), Err(PoolError::Invalid(_))));
    let v = pool.create_volume("v", 4 << 20).unwrap();
    assert!(matches!(pool.create_volume("v", 1 << 20), Err(PoolError::VolumeExists(_))));
    v.write(0, &pattern(5, 4 << 20), false).unwrap();
    // Shrink to a size inside a block: the tail past the end is zeroed and later reads as 0.
    pool.resize_volume("v", BS + 4096).unwrap();
    assert_eq!(pool.volume_status("v").unwrap().mapped_sectors, 2 * BS / 512);
    pool.resize_volume("v", 4 << 20).unwrap();
    let mut buf = vec![0xFFu8; BS as usize];
    v.read(BS, &mut buf).unwrap();
    assert_eq!(&buf[..4096], &pattern(5, 4 << 20)[BS as usize..BS as usize + 4096]);
    assert!(buf[4096..].iter().all(|&b| b == 0));
    let used = pool.status().used_data_blocks;
    pool.delete_volume("v").unwrap();
    assert!(matches!(v.read(0, &mut buf), Err(PoolError::NoVolume(_))));
    pool.commit().unwrap();
    assert_eq!(pool.status().used_data_blocks, used - 2);
    drop(v);
    pool.close().unwrap();
    drop(pool);
    assert_metadata_clean(dir.path());
}

#[test]
fn the_status_line_has_the_kernels_fields() {
    let dir = tempfile::tempdir().unwrap();
    let pool = Pool::create(dir.path(), &options()).unwrap();
    pool.create_volume("v", 1 << 20).unwrap().write(0, &[1; 4096], true).unwrap();
    let s = pool.status();
    let line = s.to_string();
    let fields: Vec<&str> = line.split_whitespace().collect();
    assert_eq!(fields.len(), 9, "{line}");
    assert_eq!(fields[0], s.transaction_id.to_string());
    assert_eq!(fields[2], format!("1/{}", 64 << 20 >> 16));
    assert_eq!(&fields[3..7], &["-", "rw", "discard_passdown", "queue_if_no_space"]);
    let v = pool.volume_status("v").unwrap();
    assert_eq!(v.to_string(), format!("128 127"));
    let json = serde_json::to_value(&s).unwrap();
    assert_eq!(json["used_data_blocks"], 1);
}

#[test]
fn the_config_journal_folds_into_checkpoints_and_reopens_with_every_volume() {
    let dir = tempfile::tempdir().unwrap();
    // The default metadata size makes room for 1000 thin devices; this test needs more.
    let opts = PoolOptions { metadata_size_bytes: Some(16 << 20), ..options() };
    let pool = Pool::create(dir.path(), &opts).unwrap();
    // More operations than one journal holds, so at least one checkpoint happens.
    for i in 0..1100u32 {
        pool.create_volume(&format!("v{i}"), 1 << 20).unwrap();
    }
    pool.snapshot("v7", "s7", true).unwrap();
    pool.delete_volume("v8").unwrap();
    pool.resize_volume("v9", 2 << 20).unwrap();
    let journal = std::fs::read_to_string(dir.path().join("pool.log")).unwrap();
    assert!(journal.lines().count() < 1024, "the journal was folded into pool.json");
    let want = pool.list();
    drop(pool);
    let pool = Pool::open(dir.path(), IoMode::Auto).unwrap();
    assert_eq!(pool.list(), want);
    assert_eq!(want.len(), 1100);
    assert_eq!(pool.volume("v9").unwrap().size_bytes(), 2 << 20);
    assert!(pool.volume("s7").unwrap().is_read_only());
}

#[test]
fn a_clean_close_folds_the_config_journal_into_pool_json() {
    let dir = tempfile::tempdir().unwrap();
    let pool = Pool::create(dir.path(), &options()).unwrap();
    pool.create_volume("a", 1 << 20).unwrap();
    pool.snapshot("a", "b", true).unwrap();
    let journal = dir.path().join("pool.log");
    assert_eq!(std::fs::read_to_string(&journal).unwrap().lines().count(), 2);
    pool.close().unwrap();
    drop(pool);
    assert_eq!(std::fs::read_to_string(&journal).unwrap(), "", "the journal was folded");
    let config: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.path().join("pool.json")).unwrap())
            .unwrap();
    assert_eq!(config["volumes"]["b"]["snapshot_of"], "a", "{config}");
    let pool = Pool::open(dir.path(), IoMode::Auto).unwrap();
    assert!(pool.volume("b").unwrap().is_read_only());
    assert_metadata_clean(dir.path());
}
