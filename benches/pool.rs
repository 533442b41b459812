//! The pool's data path on a file-backed pool on the local disk, beside the same pwrite
//! pattern on a plain file (the ceiling for in-place overwrites), in one run:
//! 4 KiB random writes into unprovisioned blocks (allocation path) beside the same pattern
//! on a plain sparse file (the filesystem's cost of a fresh page), overwrite in place,
//! copy-on-write break after a snapshot, 4 KiB random reads, 1 MiB sequential write and
//! read, and 4 KiB random reads at snapshot depth 1, 100 and 1000.
//!
//! cargo bench --bench pool

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use std::os::unix::fs::FileExt;
use std::time::{Duration, Instant};
use thinly_engine::io::IoMode;
use thinly_engine::pool::{Pool, PoolOptions, Volume};

const BS: u64 = 64 << 10;
const K4: usize = 4096;
/// Blocks the overwrite / read working set spans (256 MiB).
const SET_BLOCKS: u64 = 4096;

struct Lcg(u64);
impl Lcg {
    fn next(&mut self, n: u64) -> u64 {
        self.0 = self.0.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
        (self.0 >> 17) % n
    }
}

fn new_pool(dir: &std::path::Path) -> Pool {
    let mut opts = PoolOptions { data_size_bytes: 64 << 30, ..PoolOptions::default() };
    if let Some(ms) = std::env::var("THINLY_BENCH_COMMIT_MS").ok().and_then(|s| s.parse().ok()) {
        opts.settings.commit_interval_ms = ms;
    }
    Pool::create(dir, &opts).unwrap()
}

fn fill(vol: &Volume, blocks: u64) {
    let buf = vec![0x5Au8; 1 << 20];
    for off in (0..blocks * BS).step_by(1 << 20) {
        vol.write(off, &buf, false).unwrap();
    }
    vol.flush().unwrap();
}

fn writes(c: &mut Criterion) {
    let dir = tempfile::tempdir_in(std::env::var("THINLY_BENCH_DIR").unwrap_or("/var/tmp".into()))
        .unwrap();
    let pool = new_pool(dir.path());
    eprintln!("data I/O path: {}", pool.data_io_path());
    let vol = pool.create_volume("v", 48 << 30).unwrap();
    fill(&vol, SET_BLOCKS);
    // The baseline is the same pwrite pattern on the same plain file: the pool's data file,
    // opened on its own (the fill mapped virtual block N to data block N), so both see the
    // same page-cache state and the difference is thinly's own work.
    let plain =
        std::fs::OpenOptions::new().read(true).write(true).open(dir.path().join("data")).unwrap();
    let page = vec![0xA5u8; K4];
    let mut g = c.benchmark_group("write_4k_random");
    g.throughput(Throughput::Bytes(K4 as u64));
    let mut rng = Lcg(1);
    g.bench_function("overwrite_in_place", |b| {
        b.iter(|| {
            vol.write(rng.next(SET_BLOCKS * BS / K4 as u64) * K4 as u64, &page, false).unwrap()
        })
    });
    g.bench_function("plain_file_pwrite", |b| {
        b.iter(|| {
            plain.write_all_at(&page, rng.next(SET_BLOCKS * BS / K4 as u64) * K4 as u64).unwrap()
        })
    });
    // The filesystem's own cost of that pattern: 4 KiB into a never-written 64 KiB stretch
    // of a plain sparse file on the same filesystem (a new page-cache page and extent each).
    let fresh_file = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create_new(true)
        .open(dir.path().join("plain-fresh"))
        .unwrap();
    let mut next_plain = 0u64;
    g.bench_function("plain_file_fresh_pwrite", |b| {
        b.iter(|| {
            fresh_file.write_all_at(&page, next_plain * BS + rng.next(16) * K4 as u64).unwrap();
            next_plain += 1;
        })
    });
    drop(fresh_file);
    std::fs::remove_file(dir.path().join("plain-fresh")).unwrap();
    // Allocation path: each write lands in a block never written before, of a volume of
    // its own; when that is used up, it is deleted and made anew (untimed).
    const FRESH_BLOCKS: u64 = 512 << 10;
    let mut fresh = pool.create_volume("fresh", FRESH_BLOCKS * BS).unwrap();
    let mut next_fresh = 0;
    g.bench_function("unprovisioned_block", |b| {
        b.iter_custom(|iters| {
            let mut total = Duration::ZERO;
            for _ in 0..iters {
                if next_fresh == FRESH_BLOCKS {
                    drop(std::mem::replace(&mut fresh, vol.clone()));
                    pool.delete_volume("fresh").unwrap();
                    fresh = pool.create_volume("fresh", FRESH_BLOCKS * BS).unwrap();
                    next_fresh = 0;
                }
                let at = next_fresh * BS + rng.next(16) * K4 as u64;
                let t = Instant::now();
                fresh.write(at, &page, false).unwrap();
                total += t.elapsed();
                next_fresh += 1;
            }
            total
        })
    });
    drop(fresh);
    pool.delete_volume("fresh").unwrap();
    // Copy-on-write: every write breaks the sharing of a block with the snapshot; when all
    // are broken, a new snapshot (untimed) shares them again.
    let mut snaps = 0;
    let mut broken = SET_BLOCKS;
    g.bench_function("cow_break_after_snapshot", |b| {
        b.iter_custom(|iters| {
            let mut total = Duration::ZERO;
            for _ in 0..iters {
                if broken == SET_BLOCKS {
                    pool.snapshot("v", &format!("s{snaps}"), true).unwrap();
                    snaps += 1;
                    broken = 0;
                }
                let t = Instant::now();
                vol.write(broken * BS + rng.next(16) * K4 as u64, &page, false).unwrap();
                total += t.elapsed();
                broken += 1;
            }
            total
        })
    });
    g.finish();

    let mut g = c.benchmark_group("read_4k_random");
    g.throughput(Throughput::Bytes(K4 as u64));
    let mut buf = vec![0u8; K4];
    g.bench_function("plain_file_pread", |b| {
        b.iter(|| {
            plain
                .read_exact_at(&mut buf, rng.next(SET_BLOCKS * BS / K4 as u64) * K4 as u64)
                .unwrap()
        })
    });
    g.bench_function("pool", |b| {
        b.iter(|| vol.read(rng.next(SET_BLOCKS * BS / K4 as u64) * K4 as u64, &mut buf).unwrap())
    });
    g.finish();

    let mut g = c.benchmark_group("sequential_1m");
    g.throughput(Throughput::Bytes(1 << 20));
    let mib = vec![0x3Cu8; 1 << 20];
    let mut rbuf = vec![0u8; 1 << 20];
    let mut pos = 0u64;
    g.bench_function("write", |b| {
        b.iter(|| {
            vol.write(pos % (SET_BLOCKS * BS), &mib, false).unwrap();
            pos += 1 << 20;
        })
    });
    g.bench_function("read", |b| {
        b.iter(|| {
            vol.read(pos % (SET_BLOCKS * BS), &mut rbuf).unwrap();
            pos += 1 << 20;
        })
    });
    g.finish();
    drop(vol);
    pool.close().unwrap();
}

fn depth(c: &mut Criterion) {
    let dir = tempfile::tempdir_in(std::env::var("THINLY_BENCH_DIR").unwrap_or("/var/tmp".into()))
        .unwrap();
    let pool = new_pool(dir.path());
    let base = pool.create_volume("d0", 1 << 30).unwrap();
    fill(&base, 2048);
    let mut g = c.benchmark_group("read_4k_at_snapshot_depth");
    g.throughput(Throughput::Bytes(K4 as u64));
    let mut rng = Lcg(7);
    let mut buf = vec![0u8; K4];
    let mut tip = "d0".to_string();
    let mut depth = 0;
    for target in [1, 100, 1000] {
        while depth < target {
            depth += 1;
            let name = format!("d{depth}");
            let v = pool.snapshot(&tip, &name, false).unwrap();
            // Each layer writes a little of its own, far from the data the bench reads.
            v.write((4096 + depth) * BS, &[depth as u8; 512], false).unwrap();
            tip = name;
        }
        let vol = pool.volume(&tip).unwrap();
        g.bench_function(format!("depth_{target}"), |b| {
            b.iter(|| vol.read(rng.next(2048 * BS / K4 as u64) * K4 as u64, &mut buf).unwrap())
        });
    }
    g.finish();
    drop(base);
    pool.close().unwrap();
}

criterion_group! {
    name = benches;
    config = Criterion::default().measurement_time(Duration::from_secs(3)).warm_up_time(Duration::from_secs(1));
    targets = writes, depth
}
criterion_main!(benches);

#[allow(dead_code)]
fn _io_mode() -> IoMode {
    IoMode::Auto
}
