//! Pool policies: snapshots quiesce the origin, out-of-data-space (error and queue),
//! the low-water-mark event (once per crossing, re-armed by extend), auto-extend, and
//! out-of-metadata-space turning the pool read-only with needs_check.

mod common;

use common::{Hold, Holding};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Arc};
use std::time::Duration;
use thinly_engine::io::{DataDevice, MemData, MemDevice};
use thinly_engine::pool::config::MemConfigStore;
use thinly_engine::pool::{
    AutoExtend, OutOfSpacePolicy, Pool, PoolError, PoolEvent, PoolOptions, PoolSettings,
};

const BS: u64 = 64 << 10;

fn mem_pool(data_blocks: u64, settings: PoolSettings, data: Arc<dyn DataDevice>) -> Pool {
    let opts = PoolOptions {
        data_size_bytes: data_blocks * BS,
        settings,
        cache_bytes: 1 << 20,
        ..Default::default()
    };
    data.set_len(data_blocks * BS).unwrap();
    Pool::format_on(
        Arc::new(MemDevice::new(1024)),
        data,
        Box::new(MemConfigStore::default()),
        &opts,
        None,
        "t",
    )
    .unwrap()
}

fn settings(out_of_space: OutOfSpacePolicy, lwm: u64) -> PoolSettings {
    PoolSettings {
        commit_interval_ms: 0,
        out_of_space,
        low_water_mark_blocks: lwm,
        ..PoolSettings::default()
    }
}

#[test]
fn a_snapshot_waits_for_writes_in_flight_on_its_origin() {
    let data = Arc::new(Holding::new(Arc::new(MemData::default())));
    let pool = mem_pool(64, settings(OutOfSpacePolicy::Error, 0), data.clone());
    let vol = pool.create_volume("o", 1 << 20).unwrap();
    vol.write(0, &vec![1u8; BS as usize], false).unwrap();
    // Park an in-place overwrite half-way through the data write.
    data.arm(Hold::Write);
    let w = {
        let vol = vol.clone();
        std::thread::spawn(move || vol.write(0, &vec![2u8; BS as usize], false).unwrap())
    };
    data.wait_holding();
    let snapped = Arc::new(AtomicBool::new(false));
    let snapper = {
        let (pool, snapped) = (pool.clone(), snapped.clone());
        std::thread::spawn(move || {
            pool.snapshot("o", "s", false).unwrap();
            snapped.store(true, Ordering::SeqCst);
        })
    };
    // However long we wait, the snapshot cannot be taken while the write is in flight.
    std::thread::sleep(Duration::from_millis(50));
    assert!(!snapped.load(Ordering::SeqCst), "the snapshot did not wait for the origin's write");
    data.release();
    w.join().unwrap();
    snapper.join().unwrap();
    // The write completed before the snapshot: both see it, and it stays put.
    let mut buf = vec![0u8; BS as usize];
    pool.volume("s").unwrap().read(0, &mut buf).unwrap();
    assert!(buf.iter().all(|&b| b == 2));
    vol.write(0, &vec![3u8; BS as usize], false).unwrap();
    pool.volume("s").unwrap().read(0, &mut buf).unwrap();
    assert!(buf.iter().all(|&b| b == 2), "a write after the snapshot changed it");
}

#[test]
fn out_of_space_with_the_error_policy_fails_at_once_and_recovers_after_a_discard() {
    let pool = mem_pool(8, settings(OutOfSpacePolicy::Error, 0), Arc::new(MemData::default()));
    let vol = pool.create_volume("v", 1 << 20).unwrap();
    vol.write(0, &vec![7u8; 8 * BS as usize], false).unwrap();
    let e = vol.write(8 * BS, &[1u8; 512], false).unwrap_err();
    assert!(matches!(e, PoolError::NoSpace(_)), "{e}");
    assert_eq!(pool.status().mode, "out_of_data_space");
    // Reads and discards keep working; freed space is usable (after the commit it needs).
    let mut b = [0u8; 512];
    vol.read(0, &mut b).unwrap();
    assert_eq!(b, [7u8; 512]);
    vol.discard(0, 2 * BS, false).unwrap();
    vol.write(8 * BS, &[1u8; 512], false).unwrap();
    assert_eq!(pool.status().mode, "rw");
}

#[test]
fn out_of_space_with_the_queue_policy_fails_after_the_timeout() {
    let pool = mem_pool(
        2,
        settings(OutOfSpacePolicy::Queue { timeout_ms: 100 }, 0),
        Arc::new(MemData::default()),
    );
    let vol = pool.create_volume("v", 1 << 20).unwrap();
    vol.write(0, &vec![7u8; 2 * BS as usize], false).unwrap();
    assert!(matches!(vol.write(2 * BS, &[1], false), Err(PoolError::NoSpace(_))));
}

#[test]
fn a_queued_write_completes_when_the_pool_is_extended() {
    let pool = mem_pool(
        2,
        settings(OutOfSpacePolicy::Queue { timeout_ms: 60_000 }, 0),
        Arc::new(MemData::default()),
    );
    let events = pool.subscribe();
    let vol = pool.create_volume("v", 1 << 20).unwrap();
    vol.write(0, &vec![7u8; 2 * BS as usize], false).unwrap();
    let w = {
        let vol = vol.clone();
        std::thread::spawn(move || vol.write(2 * BS, &[9u8; 100], false))
    };
    // Wait until the write is queued (the pool says it is out of space), then extend.
    loop {
        match events.recv_timeout(Duration::from_secs(30)).unwrap() {
            PoolEvent::OutOfDataSpace => break,
            _ => continue,
        }
    }
    pool.extend(4 * BS).unwrap();
    w.join().unwrap().unwrap();
    let mut b = [0u8; 100];
    vol.read(2 * BS, &mut b).unwrap();
    assert_eq!(b, [9u8; 100]);
}

fn lwm_events(rx: &mpsc::Receiver<PoolEvent>) -> usize {
    rx.try_iter().filter(|e| matches!(e, PoolEvent::LowWaterMark { .. })).count()
}

#[test]
fn the_low_water_mark_fires_once_per_crossing_and_extend_rearms_it() {
    let pool = mem_pool(16, settings(OutOfSpacePolicy::Error, 4), Arc::new(MemData::default()));
    let rx = pool.subscribe();
    let vol = pool.create_volume("v", 4 << 20).unwrap();
    let block = vec![1u8; BS as usize];
    for b in 0..11 {
        vol.write(b * BS, &block, false).unwrap();
    }
    assert_eq!(lwm_events(&rx), 0, "free 5 > mark 4");
    vol.write(11 * BS, &block, false).unwrap();
    assert_eq!(lwm_events(&rx), 1, "free fell to the mark");
    vol.write(12 * BS, &block, false).unwrap();
    vol.write(13 * BS, &block, false).unwrap();
    assert_eq!(lwm_events(&rx), 0, "raised once per crossing");
    pool.extend(32 * BS).unwrap();
    for b in 14..28 {
        vol.write(b * BS, &block, false).unwrap();
    }
    assert_eq!(lwm_events(&rx), 1, "re-armed by the extend, raised again at the mark");
}

#[test]
fn auto_extend_grows_the_data_device_at_the_low_water_mark() {
    let mut s = settings(OutOfSpacePolicy::Error, 2);
    s.auto_extend = Some(AutoExtend { percent: 50, max_bytes: 24 * BS });
    let pool = mem_pool(8, s, Arc::new(MemData::default()));
    let vol = pool.create_volume("v", 4 << 20).unwrap();
    let block = vec![1u8; BS as usize];
    for b in 0..24 {
        vol.write(b * BS, &block, false).unwrap();
    }
    assert_eq!(pool.status().total_data_blocks, 24);
    assert!(
        matches!(vol.write(24 * BS, &block, false), Err(PoolError::NoSpace(_))),
        "the maximum holds"
    );
}

#[test]
fn running_out_of_metadata_space_turns_the_pool_read_only_with_needs_check() {
    let opts = PoolOptions {
        data_size_bytes: 20_000 * BS,
        settings: settings(OutOfSpacePolicy::Error, 0),
        cache_bytes: 1 << 20,
        ..Default::default()
    };
    let data = Arc::new(MemData::new(20_000 * BS));
    let pool = Pool::format_on(
        Arc::new(MemDevice::new(40)),
        data,
        Box::new(MemConfigStore::default()),
        &opts,
        None,
        "t",
    )
    .unwrap();
    let rx = pool.subscribe();
    let vol = pool.create_volume("v", 20_000 * BS).unwrap();
    let mut failed = None;
    // Scattered single-sector writes: each needs a mapping; the metadata fills first.
    for i in 0..20_000u64 {
        if let Err(e) = vol.write((i * 7919 % 20_000) * BS, &[1u8; 512], false) {
            failed = Some(e);
            break;
        }
    }
    let e = failed.expect("40 metadata blocks cannot map 20 000 blocks");
    let no_space = matches!(
        e,
        PoolError::NoSpace(_) | PoolError::Metadata(thinly_engine::Error::MetadataNoSpace { .. })
    );
    assert!(no_space, "{e}");
    let s = pool.status();
    assert_eq!(s.mode, "ro");
    assert!(s.needs_check);
    assert!(rx.try_iter().any(|e| matches!(e, PoolEvent::ReadOnly { .. })));
    assert!(matches!(vol.write(0, &[1], false), Err(PoolError::ReadOnly(_))));
    let mut b = [0u8; 512];
    vol.read(0, &mut b).unwrap();
}
