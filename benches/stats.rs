//! What the pool's statistics cost: 4 KiB random overwrites in place and 4 KiB random
//! reads of a 64 MiB working set (in the page cache), the paths the statistics must not
//! slow by more than 2%. Run it twice, once with the statistics and once with the
//! `no-stats` feature (which compiles them out), and let criterion compare the two:
//!
//!   cargo bench --bench stats -- --save-baseline stats
//!   cargo bench --bench stats --features no-stats -- --baseline stats
//!
//! The second run prints each case's change against the first ("change: [… %]"): with
//! the statistics as the baseline, a change of −2% means the statistics cost 2%.
//! The pool commits only on flush here (no timer), so each sample is the data path alone.

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use std::time::Duration;
use thinly_engine::io::IoMode;
use thinly_engine::pool::{Pool, PoolOptions, PoolSettings, Volume};

const BS: u64 = 64 << 10;
const K4: u64 = 4096;
/// Blocks the working set spans (64 MiB: cached, so the syscall is not the whole cost).
const SET_BLOCKS: u64 = 1024;

struct Lcg(u64);
impl Lcg {
    fn next(&mut self, n: u64) -> u64 {
        self.0 = self.0.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
        (self.0 >> 17) % n
    }
}

fn filled_volume(dir: &std::path::Path) -> (Pool, Volume) {
    let settings = PoolSettings { commit_interval_ms: 0, ..PoolSettings::default() };
    let opts = PoolOptions {
        data_size_bytes: 1 << 30,
        settings,
        io_mode: IoMode::Auto,
        ..PoolOptions::default()
    };
    let pool = Pool::create(dir, &opts).unwrap();
    let vol = pool.create_volume("v", SET_BLOCKS * BS).unwrap();
    let buf = vec![0x5Au8; 1 << 20];
    for off in (0..SET_BLOCKS * BS).step_by(1 << 20) {
        vol.write(off, &buf, false).unwrap();
    }
    vol.flush().unwrap();
    (pool, vol)
}

fn overhead(c: &mut Criterion) {
    let base = std::env::var("THINLY_BENCH_DIR").unwrap_or("/var/tmp".into());
    let dir = tempfile::tempdir_in(base).unwrap();
    let (pool, vol) = filled_volume(dir.path());
    eprintln!("statistics: {}", if thinly_engine::STATS { "on" } else { "compiled out" });
    let pages = SET_BLOCKS * BS / K4;
    let page = vec![0xA5u8; K4 as usize];
    let mut g = c.benchmark_group("stats_overhead_4k");
    g.throughput(Throughput::Bytes(K4));
    g.measurement_time(Duration::from_secs(10));
    let mut rng = Lcg(7);
    g.bench_function("overwrite_in_place", |b| {
        b.iter(|| vol.write(rng.next(pages) * K4, &page, false).unwrap())
    });
    let mut buf = vec![0u8; K4 as usize];
    g.bench_function("read", |b| b.iter(|| vol.read(rng.next(pages) * K4, &mut buf).unwrap()));
    g.finish();
    pool.close().unwrap();
}

criterion_group!(benches, overhead);
criterion_main!(benches);
