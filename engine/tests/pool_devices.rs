//! Pools on block devices (real loop devices) and metadata that grows online.
//!
//! Loop-device tests need root and `losetup`: they skip loudly without, and fail when `CI`
//! is set. Each device is detached when its `LoopDevice` drops, failures included.

mod common;

use common::*;
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::sync::Arc;
use thinly_engine::io::{BlockDevice, CrashPlan, FaultyData, FaultyDevice, FileDevice, IoMode};
use thinly_engine::pool::config::MemConfigStore;
use thinly_engine::pool::{
    AutoExtend, OutOfSpacePolicy, Pool, PoolError, PoolOptions, PoolSettings,
};
use thinly_engine::thin::{check, CheckOptions};
use thinly_test_support::LoopDevice;

const BS: u64 = 64 << 10;
const DATA_BYTES: u64 = 64 << 20;
const META_BYTES: u64 = 8 << 20;

fn pattern(seed: u8, len: usize) -> Vec<u8> {
    (0..len).map(|i| seed.wrapping_mul(31).wrapping_add((i % 251) as u8)).collect()
}

/// Two loop devices, the data one filled with garbage (a device is not known to be zeroed).
fn loop_devices() -> Option<(LoopDevice, LoopDevice)> {
    let data = LoopDevice::new(DATA_BYTES)?;
    let meta = LoopDevice::new(META_BYTES)?;
    fill(data.path(), 0, DATA_BYTES, 0xa5);
    Some((data, meta))
}

fn fill(path: &Path, offset: u64, len: u64, byte: u8) {
    let f = std::fs::OpenOptions::new().write(true).open(path).unwrap();
    let chunk = vec![byte; 1 << 20];
    let mut done = 0;
    while done < len {
        let n = (len - done).min(chunk.len() as u64) as usize;
        f.write_all_at(&chunk[..n], offset + done).unwrap();
        done += n as u64;
    }
    f.sync_all().unwrap();
}

fn device_options(data: &LoopDevice, meta: &LoopDevice, data_bytes: u64) -> PoolOptions {
    PoolOptions {
        data_size_bytes: data_bytes,
        data_path: Some(data.path().to_path_buf()),
        metadata_path: Some(meta.path().to_path_buf()),
        settings: PoolSettings {
            commit_interval_ms: 0,
            out_of_space: OutOfSpacePolicy::Error,
            ..PoolSettings::default()
        },
        ..PoolOptions::default()
    }
}

fn assert_clean(meta_path: &Path) {
    let dev: Arc<dyn BlockDevice> = Arc::new(FileDevice::open(meta_path, true).unwrap());
    let report = check(dev, CheckOptions::default()).unwrap();
    assert!(report.is_clean(), "{:#?}", report.problems);
    if let Some(tool) = real_tool("thin_check") {
        let (rc, out, err) = run_tool(&tool, &[meta_path.to_str().unwrap()]);
        assert_eq!(rc, 0, "thin_check {}: {out}{err}", meta_path.display());
    }
}

#[test]
fn a_pool_on_loop_devices_zeroes_new_blocks_and_reopens_from_pool_json() {
    let Some((data, meta)) = loop_devices() else { return };
    let dir = tempfile::tempdir().unwrap();
    let mut progress = Vec::new();
    let opts = device_options(&data, &meta, DATA_BYTES);
    let pool =
        Pool::create_with_progress(dir.path(), &opts, &mut |d, t| progress.push((d, t))).unwrap();
    assert_eq!(progress.last(), Some(&(DATA_BYTES, DATA_BYTES)), "zeroing reported its end");
    assert_eq!(pool.status().total_data_blocks, DATA_BYTES / BS);
    assert_eq!(pool.status().total_metadata_blocks, META_BYTES / 4096);
    assert!(!dir.path().join("data").exists() && !dir.path().join("metadata").exists());
    let vol = pool.create_volume("v", 8 << 20).unwrap();
    vol.write(100, &pattern(1, 1000), false).unwrap();
    vol.write(3 * BS + 7, &pattern(2, 10), false).unwrap();
    drop(vol);
    pool.close().unwrap();
    drop(pool);
    assert!(Pool::exists(dir.path()), "pool.json leads to the metadata device");

    let pool = Pool::open(dir.path(), IoMode::Auto).unwrap();
    let vol = pool.volume("v").unwrap();
    let mut got = vec![0u8; 4 * BS as usize];
    vol.read(0, &mut got).unwrap();
    let mut want = vec![0u8; 4 * BS as usize];
    want[100..1100].copy_from_slice(&pattern(1, 1000));
    want[(3 * BS + 7) as usize..(3 * BS + 17) as usize].copy_from_slice(&pattern(2, 10));
    assert!(got == want, "the device's old bytes never show through a partial write");
    // A block freed by a discard is only BLKDISCARDed, which may keep its bytes; after a
    // reopen no free block is a known hole: each is zeroed before a partial write. (The
    // garbage written under the pool stands for whatever a discard or a crash left.)
    vol.discard(0, BS, false).unwrap();
    pool.commit().unwrap();
    drop(vol);
    pool.close().unwrap();
    drop(pool);
    fill(data.path(), 0, DATA_BYTES, 0x77);
    let pool = Pool::open(dir.path(), IoMode::Auto).unwrap();
    let other = pool.create_volume("w", 8 << 20).unwrap();
    for b in 0..(DATA_BYTES / BS) - 2 {
        other.write(b * BS + 5, &[9], false).unwrap();
        let mut blk = vec![0u8; BS as usize];
        other.read(b * BS, &mut blk).unwrap();
        let mut want = vec![0u8; BS as usize];
        want[5] = 9;
        assert!(blk == want, "block {b} of w");
        if b * BS + BS >= 8 << 20 {
            break;
        }
    }
    drop(other);
    pool.close().unwrap();
    drop(pool);
    assert_clean(meta.path());
}

#[test]
fn a_second_opener_of_a_device_pool_is_refused_as_busy() {
    let Some((data, meta)) = loop_devices() else { return };
    let dir = tempfile::tempdir().unwrap();
    let pool = Pool::create(dir.path(), &device_options(&data, &meta, DATA_BYTES)).unwrap();
    let second = Pool::open(dir.path(), IoMode::Auto);
    assert!(matches!(second, Err(PoolError::Busy(_))), "the flock refuses a second opener");
    // Another pool directory naming the same devices: the devices' O_EXCL refuses it.
    let dir2 = tempfile::tempdir().unwrap();
    let r = Pool::create(dir2.path(), &device_options(&data, &meta, DATA_BYTES));
    assert!(matches!(r, Err(PoolError::Busy(_))), "{:?}", r.err());
    assert!(!dir2.path().join("pool.json").exists(), "a refused create leaves nothing");
    pool.close().unwrap();
    drop(pool);
    // A device held exclusively elsewhere (a mount, dm-thin) refuses the pool too.
    let held = thinly_engine::io::blockdev::open_exclusive(data.path(), false).unwrap();
    let r = Pool::open(dir.path(), IoMode::Auto);
    assert!(matches!(r, Err(PoolError::Busy(_))), "{:?}", r.err());
    drop(held);
    Pool::open(dir.path(), IoMode::Auto).unwrap().close().unwrap();
}

#[test]
fn a_size_that_is_not_the_devices_is_refused() {
    let Some((data, meta)) = loop_devices() else { return };
    let dir = tempfile::tempdir().unwrap();
    let r = Pool::create(dir.path(), &device_options(&data, &meta, DATA_BYTES / 2));
    assert!(matches!(r, Err(PoolError::Invalid(_))), "{:?}", r.err());
    let opts = PoolOptions {
        metadata_size_bytes: Some(4 << 20),
        ..device_options(&data, &meta, DATA_BYTES)
    };
    assert!(matches!(Pool::create(dir.path(), &opts), Err(PoolError::Invalid(_))));
    assert!(!Pool::exists(dir.path()));
}

#[test]
fn extend_takes_in_a_grown_data_device_whose_new_blocks_are_zeroed() {
    let Some((data, meta)) = loop_devices() else { return };
    let dir = tempfile::tempdir().unwrap();
    let pool = Pool::create(dir.path(), &device_options(&data, &meta, DATA_BYTES)).unwrap();
    let vol = pool.create_volume("v", 256 << 20).unwrap();
    let nr = DATA_BYTES / BS;
    for b in 0..nr {
        vol.write(b * BS, &[1], false).unwrap();
    }
    assert!(matches!(vol.write(nr * BS, &[1], false), Err(PoolError::NoSpace(_))), "full");
    data.grow(2 * DATA_BYTES);
    fill(data.path(), DATA_BYTES, DATA_BYTES, 0x5a);
    assert_eq!(pool.data_device_bytes(), 2 * DATA_BYTES);
    assert!(pool.extend(3 * DATA_BYTES).is_err(), "past the device: refused");
    assert_eq!(pool.status().total_data_blocks, nr, "a refused extend changes nothing");
    pool.extend(pool.data_device_bytes()).unwrap();
    assert_eq!(pool.status().total_data_blocks, 2 * nr);
    vol.write(nr * BS + 10, &[7], false).unwrap();
    let mut blk = vec![0u8; BS as usize];
    vol.read(nr * BS, &mut blk).unwrap();
    let mut want = vec![0u8; BS as usize];
    want[10] = 7;
    assert!(blk == want, "the grown part's old bytes do not show");
    drop(vol);
    pool.close().unwrap();
    drop(pool);
    let pool = Pool::open(dir.path(), IoMode::Auto).unwrap();
    assert_eq!(pool.status().total_data_blocks, 2 * nr);
    pool.close().unwrap();
    drop(pool);
    assert_clean(meta.path());
}

/// Fills `vol` with one small write per block until the metadata has less than `free`
/// blocks free (or `max` blocks are written); returns how many were written.
fn fill_metadata(pool: &Pool, vol: &thinly_engine::pool::Volume, free: u64, max: u64) -> u64 {
    let mut b = 0;
    while b < max {
        let s = pool.status();
        if s.total_metadata_blocks - s.used_metadata_blocks < free {
            break;
        }
        vol.write(b * 2 * BS, &pattern(b as u8, 512), false).unwrap();
        b += 1;
        if b % 256 == 0 {
            pool.commit().unwrap();
        }
    }
    pool.commit().unwrap();
    b
}

fn verify_fill(vol: &thinly_engine::pool::Volume, n: u64) {
    for b in 0..n {
        let mut got = vec![0u8; 512];
        vol.read(b * 2 * BS, &mut got).unwrap();
        assert!(got == pattern(b as u8, 512), "block {b} changed");
    }
}

/// Metadata growth while another thread writes, on the given pool; checks data and room.
fn grow_metadata_online(pool: &Pool, new_bytes: u64) {
    let vol = pool.create_volume("v", 1 << 30).unwrap();
    let n = fill_metadata(pool, &vol, 40, 4000);
    let before = pool.status().total_metadata_blocks;
    let writer = {
        let vol = pool.volume("v").unwrap();
        std::thread::spawn(move || {
            for i in 0..200u64 {
                vol.write((1 << 29) + i * BS, &[i as u8; 100], false).unwrap();
            }
        })
    };
    pool.resize_metadata(new_bytes).unwrap();
    writer.join().unwrap();
    assert_eq!(pool.status().total_metadata_blocks, new_bytes / 4096);
    assert!(before < new_bytes / 4096);
    verify_fill(&vol, n);
    let more = fill_metadata(pool, &vol, 40, n + 500);
    assert!(more > n, "the new metadata blocks are used");
    verify_fill(&vol, more);
    assert!(matches!(pool.resize_metadata(new_bytes - 4096), Err(PoolError::Invalid(_))));
}

#[test]
fn metadata_grows_online_on_a_file_pool_and_thin_check_passes() {
    let dir = tempfile::tempdir().unwrap();
    let opts = PoolOptions {
        data_size_bytes: 1 << 30,
        metadata_size_bytes: Some(256 << 10),
        settings: PoolSettings { commit_interval_ms: 50, ..PoolSettings::default() },
        ..PoolOptions::default()
    };
    let pool = Pool::create(dir.path(), &opts).unwrap();
    grow_metadata_online(&pool, 1 << 20);
    let vol = pool.volume("v").unwrap();
    drop(vol);
    pool.close().unwrap();
    drop(pool);
    let meta = dir.path().join("metadata");
    assert_eq!(std::fs::metadata(&meta).unwrap().len(), 1 << 20);
    let pool = Pool::open(dir.path(), IoMode::Auto).unwrap();
    assert_eq!(pool.status().total_metadata_blocks, 256);
    pool.close().unwrap();
    drop(pool);
    assert_clean(&meta);
}

#[test]
fn metadata_grows_online_on_a_grown_loop_device() {
    let Some(data) = LoopDevice::new(1 << 30) else { return };
    let Some(meta) = LoopDevice::new(256 << 10) else { return };
    let dir = tempfile::tempdir().unwrap();
    let opts = PoolOptions {
        settings: PoolSettings {
            zeroing: false,
            commit_interval_ms: 50,
            ..PoolSettings::default()
        },
        ..device_options(&data, &meta, 1 << 30)
    };
    let pool = Pool::create(dir.path(), &opts).unwrap();
    assert!(pool.resize_metadata(1 << 20).is_err(), "the device has not grown yet");
    meta.grow(1 << 20);
    grow_metadata_online(&pool, 1 << 20);
    pool.close().unwrap();
    drop(pool);
    assert_clean(meta.path());
}

#[test]
fn metadata_extends_itself_at_its_low_water_mark_when_asked() {
    let dir = tempfile::tempdir().unwrap();
    let settings = PoolSettings {
        commit_interval_ms: 0,
        metadata_auto_extend: Some(AutoExtend { percent: 100, max_bytes: 4 << 20 }),
        ..PoolSettings::default()
    };
    let opts = PoolOptions {
        data_size_bytes: 1 << 30,
        metadata_size_bytes: Some(256 << 10),
        settings,
        ..PoolOptions::default()
    };
    let pool = Pool::create(dir.path(), &opts).unwrap();
    let vol = pool.create_volume("v", 1 << 30).unwrap();
    // Far more mappings than 64 metadata blocks hold: the pool must grow on its own.
    for b in 0..6000u64 {
        vol.write(b * 2 * BS % (1 << 30), &pattern(b as u8, 512), false).unwrap();
        if b % 100 == 0 {
            pool.commit().unwrap();
        }
    }
    pool.commit().unwrap();
    let s = pool.status();
    assert!(s.total_metadata_blocks > 64, "grew: {} blocks", s.total_metadata_blocks);
    verify_fill(&vol, 6000.min((1 << 30) / (2 * BS)));
    drop(vol);
    pool.close().unwrap();
    drop(pool);
    assert_clean(&dir.path().join("metadata"));
}

/// Power cuts around a metadata growth (with the writes of its commit failing from each
/// point on): the pool reopens with the old or the new size, clean, flushed data intact.
#[test]
fn a_power_cut_around_metadata_growth_keeps_the_old_or_the_new_size() {
    for fail_at in 0..12u64 {
        for plan in [CrashPlan::DropAll, CrashPlan::KeepAll, CrashPlan::Random { seed: fail_at }] {
            power_cut_case(fail_at, plan);
        }
    }
}

fn power_cut_case(fail_at: u64, plan: CrashPlan) {
    let meta = Arc::new(FaultyDevice::new(64));
    let data = Arc::new(FaultyData::new(1024 * BS));
    let store = MemConfigStore::default();
    let opts = test_pool_options(1024 * BS);
    let pool =
        Pool::format_on(meta.clone(), data.clone(), Box::new(store.clone()), &opts, None, "cut")
            .unwrap();
    let vol = pool.create_volume("v", 1024 * BS).unwrap();
    for b in 0..200u64 {
        vol.write(b * BS, &pattern(b as u8, 700), false).unwrap();
    }
    pool.commit().unwrap();
    meta.fail_writes_after(fail_at);
    let grew = pool.resize_metadata(256 * 4096).is_ok();
    if fail_at >= 11 {
        assert!(grew, "enough writes were allowed for the growth's commit");
    }
    let image = meta.crash_image(plan);
    let data2 = Arc::new(data.crash(plan));
    meta.fail_writes_after(0);
    data.fail_after(0);
    drop(vol);
    drop(pool);
    let meta2 = Arc::new(FaultyDevice::from_image(&image));
    let pool = Pool::open_on(meta2.clone(), data2, Box::new(store), None, "cut")
        .unwrap_or_else(|e| panic!("fail_at {fail_at} {plan:?}: reopen: {e}"));
    let total = pool.status().total_metadata_blocks;
    assert!(total == 64 || total == 256, "fail_at {fail_at}: {total} blocks");
    if grew {
        assert_eq!(total, 256, "fail_at {fail_at} {plan:?}: a growth that returned is durable");
    }
    let vol = pool.volume("v").unwrap();
    for b in 0..200u64 {
        let mut got = vec![0u8; 700];
        vol.read(b * BS, &mut got).unwrap();
        assert!(got == pattern(b as u8, 700), "fail_at {fail_at} {plan:?}: block {b}");
    }
    drop(vol);
    pool.close().unwrap();
    let report = check(meta2 as Arc<dyn BlockDevice>, CheckOptions::default()).unwrap();
    assert!(report.is_clean(), "fail_at {fail_at} {plan:?}: {:#?}", report.problems);
}
