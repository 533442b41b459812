//! Concurrency: 8 threads write, discard and read overlapping blocks of two volumes while
//! another thread takes snapshots and the commit timer runs. Pages (4 KiB) interleave
//! between threads, so every data block is provisioned, copied and overwritten by several
//! threads at once, but every byte has one writer — which makes the result checkable:
//! - every read sees each page whole, as some version its writer wrote (or zeros);
//! - each snapshot is a consistent point: for every writer it shows exactly a prefix of
//!   that writer's sequence of writes;
//! - after joining, every page holds its writer's last version, before and after reopen;
//! - the metadata checks clean (internal checker and the real thin_check).

mod common;

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::thread;
use thinly_engine::io::{BlockDevice, FileDevice, IoMode};
use thinly_engine::pool::{Pool, PoolOptions, PoolSettings, Volume};
use thinly_engine::thin::{check, CheckOptions};

const PAGE: u64 = 4096;
const BS: u64 = 64 << 10;
const VOL_BYTES: u64 = 4 << 20;
const THREADS: u64 = 8;
/// Pages below this are interleaved between threads; the blocks above are owned whole.
const SHARED_PAGES: u64 = 48 * BS / PAGE;
const OPS: usize = 1500;

fn page_bytes(vol: u64, page: u64, version: u64) -> Vec<u8> {
    let mut b = vec![(version as u8).wrapping_mul(17) ^ page as u8; PAGE as usize];
    b[..8].copy_from_slice(&vol.to_le_bytes());
    b[8..16].copy_from_slice(&page.to_le_bytes());
    b[16..24].copy_from_slice(&version.to_le_bytes());
    b
}

/// The version a page holds (0 = never written / zeros); panics on anything else.
fn version_of(vol: u64, page: u64, b: &[u8]) -> u64 {
    if b.iter().all(|&x| x == 0) {
        return 0;
    }
    let v = u64::from_le_bytes(b[16..24].try_into().unwrap());
    assert_eq!(b, &page_bytes(vol, page, v)[..], "vol {vol} page {page}: torn or foreign contents");
    v
}

/// One writer's log: (volume, page, version) in the order written.
type Log = Vec<(u64, u64, u64)>;
/// A writer's log and the last version it wrote to each (volume, page).
type WriterResult = (Log, BTreeMap<(u64, u64), u64>);
/// Snapshots taken during the run: (name, contents when taken).
type Taken = Arc<Mutex<Vec<(String, Vec<u8>)>>>;

fn writer(t: u64, vols: [Volume; 2], seed: u64) -> WriterResult {
    let mut rng = common::Rng::new(seed);
    let mut log = Log::new();
    let mut latest: BTreeMap<(u64, u64), u64> = BTreeMap::new();
    let own_block = |i: u64| 48 + 2 * t + i;
    for _ in 0..OPS {
        let v = rng.below(2);
        let vol = &vols[v as usize];
        match rng.below(10) {
            0..=5 => {
                let page = rng.below(SHARED_PAGES / THREADS) * THREADS + t;
                let version = latest.get(&(v, page)).copied().unwrap_or(0) + 1;
                vol.write(page * PAGE, &page_bytes(v, page, version), rng.chance(5)).unwrap();
                latest.insert((v, page), version);
                log.push((v, page, version));
            }
            6 => {
                // Whole-block work in blocks this thread owns: write the block, or discard it.
                let block = own_block(rng.below(2));
                let pages = block * BS / PAGE..(block + 1) * BS / PAGE;
                if rng.chance(50) {
                    let mut buf = Vec::new();
                    for p in pages.clone() {
                        let version = latest.get(&(v, p)).copied().unwrap_or(0) + 1;
                        buf.extend(page_bytes(v, p, version));
                        latest.insert((v, p), version);
                    }
                    vol.write(block * BS, &buf, false).unwrap();
                } else {
                    vol.discard(block * BS, BS, false).unwrap();
                    for p in pages {
                        latest.insert((v, p), 0);
                    }
                }
            }
            7 => vol.flush().unwrap(),
            _ => {
                let len = (1 + rng.below(40)) * PAGE;
                let start = rng.below(VOL_BYTES / PAGE - len / PAGE) * PAGE;
                let mut buf = vec![0u8; len as usize];
                vol.read(start, &mut buf).unwrap();
                for (i, chunk) in buf.chunks(PAGE as usize).enumerate() {
                    let page = start / PAGE + i as u64;
                    let got = version_of(v, page, chunk);
                    if page < SHARED_PAGES && page % THREADS == t {
                        // Our own page: exactly what we last wrote.
                        assert_eq!(
                            got,
                            latest.get(&(v, page)).copied().unwrap_or(0),
                            "own page {page}"
                        );
                    }
                }
            }
        }
    }
    (log, latest)
}

/// The snapshot shows, for writer `log`, some prefix of its writes to volume 0.
fn assert_prefix(snapshot: &[u8], log: &Log, t: u64) {
    let writes: Vec<(u64, u64)> = log.iter().filter(|w| w.0 == 0).map(|w| (w.1, w.2)).collect();
    let (mut lo, mut hi) = (0usize, writes.len());
    let mut pages: BTreeMap<u64, Vec<usize>> = BTreeMap::new();
    for (i, (p, _)) in writes.iter().enumerate() {
        pages.entry(*p).or_default().push(i);
    }
    for (p, idx) in &pages {
        let r = (*p * PAGE) as usize..((*p + 1) * PAGE) as usize;
        let seen = version_of(0, *p, &snapshot[r]);
        // Writes to p are versions 1, 2, … in order; seeing version k means the prefix
        // includes write k and excludes write k+1.
        let k = seen as usize;
        if k > 0 {
            lo = lo.max(idx[k - 1] + 1);
        }
        if k < idx.len() {
            hi = hi.min(idx[k]);
        }
    }
    assert!(lo <= hi, "writer {t}: the snapshot is not a prefix of its writes ({lo} > {hi})");
}

fn stress_options() -> PoolOptions {
    PoolOptions {
        data_size_bytes: 256 << 20,
        settings: PoolSettings { commit_interval_ms: 20, ..PoolSettings::default() },
        ..PoolOptions::default()
    }
}

#[test]
fn eight_threads_and_snapshots_agree_with_the_model() {
    let dir = tempfile::tempdir().unwrap();
    stress(dir.path(), &stress_options(), &dir.path().join("metadata"));
}

/// The same run on a pool whose data and metadata are loop devices (skipped loudly
/// without root and losetup, failed under CI).
#[test]
fn eight_threads_and_snapshots_agree_with_the_model_on_loop_devices() {
    let Some(data) = thinly_test_support::LoopDevice::new(256 << 20) else { return };
    let Some(meta) = thinly_test_support::LoopDevice::new(16 << 20) else { return };
    let dir = tempfile::tempdir().unwrap();
    let opts = PoolOptions {
        data_path: Some(data.path().to_path_buf()),
        metadata_path: Some(meta.path().to_path_buf()),
        ..stress_options()
    };
    stress(dir.path(), &opts, meta.path());
}

fn stress(dir: &std::path::Path, opts: &PoolOptions, meta_path: &std::path::Path) {
    let pool = Pool::create(dir, opts).unwrap();
    let vols =
        [pool.create_volume("a", VOL_BYTES).unwrap(), pool.create_volume("b", VOL_BYTES).unwrap()];
    let snaps: Taken = Arc::default();
    let done = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let snapper = {
        let (pool, snaps, done) = (pool.clone(), snaps.clone(), done.clone());
        thread::spawn(move || {
            let mut n = 0;
            while !done.load(std::sync::atomic::Ordering::SeqCst) && n < 12 {
                thread::sleep(std::time::Duration::from_millis(15));
                let name = format!("snap{n}");
                let s = pool.snapshot("a", &name, true).unwrap();
                let mut bytes = vec![0u8; VOL_BYTES as usize];
                s.read(0, &mut bytes).unwrap();
                snaps.lock().unwrap().push((name, bytes));
                n += 1;
            }
        })
    };
    let writers: Vec<_> = (0..THREADS)
        .map(|t| {
            let vols = vols.clone();
            thread::spawn(move || writer(t, vols, 1000 + t))
        })
        .collect();
    let results: Vec<WriterResult> = writers.into_iter().map(|h| h.join().unwrap()).collect();
    done.store(true, std::sync::atomic::Ordering::SeqCst);
    snapper.join().unwrap();

    let verify = |vols: &[Volume]| {
        for (v, vol) in vols.iter().enumerate() {
            let mut bytes = vec![0u8; VOL_BYTES as usize];
            vol.read(0, &mut bytes).unwrap();
            for (page, chunk) in bytes.chunks(PAGE as usize).enumerate() {
                let page = page as u64;
                let owner =
                    if page < SHARED_PAGES { page % THREADS } else { (page * PAGE / BS - 48) / 2 };
                let want = results[owner as usize].1.get(&(v as u64, page)).copied().unwrap_or(0);
                assert_eq!(version_of(v as u64, page, chunk), want, "volume {v} page {page}");
            }
        }
    };
    verify(&vols);
    let snaps = snaps.lock().unwrap().clone();
    assert!(!snaps.is_empty());
    for (name, bytes) in &snaps {
        // Snapshots still read what they read when taken.
        let mut now = vec![0u8; VOL_BYTES as usize];
        pool.volume(name).unwrap().read(0, &mut now).unwrap();
        assert!(&now == bytes, "{name} changed after it was taken");
        for (t, (log, _)) in results.iter().enumerate() {
            assert_prefix(bytes, log, t as u64);
        }
    }
    drop(vols);
    pool.close().unwrap();
    drop(pool);
    let pool = Pool::open(dir, IoMode::Auto).unwrap();
    verify(&[pool.volume("a").unwrap(), pool.volume("b").unwrap()]);
    pool.close().unwrap();
    drop(pool);
    let dev: Arc<dyn BlockDevice> = Arc::new(FileDevice::open(meta_path, true).unwrap());
    let report = check(dev, CheckOptions::default()).unwrap();
    assert!(report.is_clean(), "{:#?}", report.problems);
    if let Some(tool) = common::real_tool("thin_check") {
        let (rc, out, err) = common::run_tool(&tool, &[meta_path.to_str().unwrap()]);
        assert_eq!(rc, 0, "{out}{err}");
    }
}
