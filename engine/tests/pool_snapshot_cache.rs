//! `SnapshotCache`: when a write breaks sharing, the old copy's cached pages are dropped
//! while the writing volume is the only one open, and kept otherwise (or always, with
//! `keep`). Contents never change: only the page cache is affected.

mod common;

use std::fs::File;
use std::os::fd::AsRawFd;
use std::sync::Arc;
use thinly_engine::io::{BlockDevice, DataDevice, FileDevice, IoMode, MemData, MemDevice};
use thinly_engine::pool::config::MemConfigStore;
use thinly_engine::pool::{Pool, PoolOptions, PoolSettings, SnapshotCache, Volume};

const BS: u64 = 64 << 10;

fn block_at(data: &MemData, offset: u64) -> Vec<u8> {
    let mut b = vec![0u8; BS as usize];
    data.read_at(offset, &mut b).unwrap();
    b
}

fn options(cache: SnapshotCache) -> PoolOptions {
    PoolOptions {
        data_size_bytes: 64 * BS,
        settings: PoolSettings {
            commit_interval_ms: 0,
            snapshot_cache: cache,
            ..PoolSettings::default()
        },
        cache_bytes: 1 << 20,
        ..Default::default()
    }
}

/// A pool in `dir` created with `cache`, reopened with `io_mode`.
fn file_pool(dir: &std::path::Path, cache: SnapshotCache, io_mode: IoMode) -> Pool {
    drop(Pool::create(dir, &options(cache)).unwrap());
    Pool::open(dir, io_mode).unwrap()
}

fn mem_pool(cache: SnapshotCache) -> (Pool, Arc<MemData>) {
    let data = Arc::new(MemData::default());
    let opts = options(cache);
    data.set_len(64 * BS).unwrap();
    let pool = Pool::format_on(
        Arc::new(MemDevice::new(1024)),
        data.clone(),
        Box::new(MemConfigStore::default()),
        &opts,
        None,
        "t",
    )
    .unwrap();
    (pool, data)
}

fn pattern(seed: u8, len: usize) -> Vec<u8> {
    (0..len).map(|i| seed.wrapping_mul(37).wrapping_add((i % 253) as u8)).collect()
}

/// `vol` with blocks 0..4 written (block i holds `pattern(i)`), then snapshot `snap`; the
/// snapshot's handle is closed again, as the control socket does.
fn volume_and_snapshot(pool: &Pool) -> Volume {
    let vol = pool.create_volume("vol", 16 * BS).unwrap();
    for i in 0..4u8 {
        vol.write(i as u64 * BS, &pattern(i, BS as usize), false).unwrap();
    }
    drop(pool.snapshot("vol", "snap", false).unwrap());
    vol
}

fn read(vol: &Volume, offset: u64, len: u64) -> Vec<u8> {
    let mut b = vec![0u8; len as usize];
    vol.read(offset, &mut b).unwrap();
    b
}

#[test]
fn breaking_sharing_drops_the_old_copy_while_only_the_writer_is_open() {
    let (pool, data) = mem_pool(SnapshotCache::Auto);
    let vol = volume_and_snapshot(&pool);
    assert!(data.take_cache_drops().is_empty(), "writes to unshared blocks drop nothing");

    // Whole-block, partial and one-byte copy-on-write of blocks 0, 1 and 2.
    vol.write(0, &pattern(10, BS as usize), false).unwrap();
    vol.write(BS + 8192, &pattern(11, 4096), false).unwrap();
    vol.write(2 * BS + 77, &[0xAB], false).unwrap();
    let dropped = data.take_cache_drops();
    assert_eq!(dropped.len(), 3, "{dropped:?}");
    for (i, &(offset, len)) in dropped.iter().enumerate() {
        assert_eq!(len, BS);
        assert_eq!(offset % BS, 0);
        // The dropped range is the old copy of the block the write broke.
        assert_eq!(block_at(&data, offset), pattern(i as u8, BS as usize), "drop {i}");
    }

    // In place (now unshared) and fresh provisioning: no old copy, nothing dropped.
    vol.write(0, &pattern(12, BS as usize), false).unwrap();
    vol.write(9 * BS, &pattern(13, 100), false).unwrap();
    assert!(data.take_cache_drops().is_empty());

    // The contents: the snapshot still reads the old copies, the volume the new data.
    let snap = pool.volume("snap").unwrap();
    for i in 0..4u8 {
        assert_eq!(read(&snap, i as u64 * BS, BS), pattern(i, BS as usize), "snap block {i}");
    }
    assert_eq!(read(&vol, 0, BS), pattern(12, BS as usize));
    let mut b1 = pattern(1, BS as usize);
    b1[8192..8192 + 4096].copy_from_slice(&pattern(11, 4096));
    assert_eq!(read(&vol, BS, BS), b1);
    let mut b2 = pattern(2, BS as usize);
    b2[77] = 0xAB;
    assert_eq!(read(&vol, 2 * BS, BS), b2);
}

#[test]
fn another_open_volume_keeps_the_old_copy_cached() {
    let (pool, data) = mem_pool(SnapshotCache::Auto);
    let vol = volume_and_snapshot(&pool);

    // The snapshot is open (served, say): it may read the old copies.
    let snap = pool.volume("snap").unwrap();
    vol.write(0, &pattern(20, BS as usize), false).unwrap();
    assert!(data.take_cache_drops().is_empty());

    // A second handle on the writing volume itself does not count as another volume.
    drop(snap);
    let vol2 = vol.clone();
    vol2.write(BS, &pattern(21, BS as usize), false).unwrap();
    assert_eq!(data.take_cache_drops().len(), 1);

    // An unrelated volume open keeps them too (it is not known what it shares).
    let other = pool.create_volume("other", BS).unwrap();
    vol.write(2 * BS, &pattern(22, BS as usize), false).unwrap();
    assert!(data.take_cache_drops().is_empty());
    drop(other);
    vol.write(3 * BS, &pattern(23, BS as usize), false).unwrap();
    assert_eq!(data.take_cache_drops().len(), 1);
}

#[test]
fn keep_never_drops() {
    let (pool, data) = mem_pool(SnapshotCache::Keep);
    let vol = volume_and_snapshot(&pool);
    vol.write(0, &pattern(30, BS as usize), false).unwrap();
    vol.write(BS + 5, &pattern(31, 10), false).unwrap();
    assert!(data.take_cache_drops().is_empty());
}

#[test]
fn the_setting_survives_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let pool = file_pool(dir.path(), SnapshotCache::Keep, IoMode::Auto);
    assert_eq!(pool.settings().snapshot_cache, SnapshotCache::Keep);
}

/// Whether the page at `offset` of `file` is in the page cache (mincore on a mapping that
/// is never touched, so asking loads nothing).
fn page_cached(file: &File, offset: u64) -> bool {
    const PAGE: usize = 4096;
    // SAFETY: a fresh shared read-only mapping of one page of an open file; the kernel picks
    // the address; nothing reads through it.
    let addr = unsafe {
        libc::mmap(
            std::ptr::null_mut(),
            PAGE,
            libc::PROT_READ,
            libc::MAP_SHARED,
            file.as_raw_fd(),
            offset as libc::off_t,
        )
    };
    assert_ne!(addr, libc::MAP_FAILED, "mmap: {}", std::io::Error::last_os_error());
    let mut resident = 0u8;
    // SAFETY: `addr` is the page-aligned one-page mapping made above; mincore writes one
    // byte (one page) into `resident`.
    let r = unsafe { libc::mincore(addr, PAGE, &mut resident) };
    let err = std::io::Error::last_os_error();
    // SAFETY: unmaps exactly the mapping made above, which nothing refers to any more.
    unsafe { libc::munmap(addr, PAGE) };
    assert_eq!(r, 0, "mincore: {err}");
    resident & 1 == 1
}

/// On a real data file, the old copy's pages really leave the page cache (they were clean:
/// a flush synced them), the snapshot still reads them, and with the snapshot open they stay.
#[test]
fn on_a_file_the_old_copy_leaves_the_page_cache_and_still_reads_back() {
    for io_mode in [IoMode::Uring, IoMode::Posix] {
        let dir = tempfile::tempdir().unwrap();
        let pool = file_pool(dir.path(), SnapshotCache::Auto, io_mode);
        let vol = volume_and_snapshot(&pool);
        vol.flush().unwrap();
        let file = File::open(dir.path().join("data")).unwrap();
        // The old copies: the snapshot's blocks, which hold what vol's blocks 0..4 held.
        let old: Vec<u64> = (0..64)
            .map(|b| b * BS)
            .filter(|&o| {
                let mut blk = vec![0u8; BS as usize];
                std::os::unix::fs::FileExt::read_exact_at(&file, &mut blk, o).unwrap();
                (0..4u8).any(|i| blk == pattern(i, BS as usize))
            })
            .collect();
        assert_eq!(old.len(), 4);
        assert!(old.iter().all(|&o| page_cached(&file, o)), "just read: cached");

        vol.write(0, &pattern(40, BS as usize), false).unwrap();
        vol.write(BS + 4096, &pattern(41, 4096), false).unwrap();
        let gone = old.iter().filter(|&&o| !page_cached(&file, o)).count();
        assert_eq!(gone, 2, "{io_mode:?}: the two broken blocks' old copies are evicted");

        let snap = pool.volume("snap").unwrap();
        vol.write(2 * BS, &pattern(42, BS as usize), false).unwrap();
        assert_eq!(old.iter().filter(|&&o| !page_cached(&file, o)).count(), 2, "snap is open");
        for i in 0..4u8 {
            assert_eq!(read(&snap, i as u64 * BS, BS), pattern(i, BS as usize));
        }
        assert_eq!(read(&vol, 0, BS), pattern(40, BS as usize));
        assert_eq!(read(&vol, 2 * BS, BS), pattern(42, BS as usize));
        drop((snap, vol));
        pool.close().unwrap();
        let md = dir.path().join("metadata");
        let dev: Arc<dyn BlockDevice> = Arc::new(FileDevice::open(&md, true).unwrap());
        common::assert_clean(&dev);
    }
}
