//! `thinly check` / `thinly dump` vs the installed thin_check / thin_dump, side by side,
//! on one generated metadata file (default: ≥ 10M mappings over ≥ 100 snapshots).
//!
//! Run: `CARGO_TARGET_DIR=… cargo bench -p thinly-tools --bench tools_vs_real`
//! Knobs: `THINLY_BENCH_SNAPS` (chain depth, default 110), `THINLY_BENCH_BLOCKS`
//! (mappings per origin, default 100000), `THINLY_BENCH_DIR` (scratch dir, default a
//! temporary one), `THINLY_BENCH_RUNS` (timed runs per tool, best is reported, default 3).

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use thinly_engine::fsck::gen::{generate_into, GenConfig};
use thinly_engine::fsck::restore::{Overrides, Restorer};
use thinly_engine::fsck::Validator;
use thinly_engine::io::FileDevice;

fn env_u64(name: &str, default: u64) -> u64 {
    std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

fn best_of(runs: u64, prog: &str, args: &[&str]) -> Option<Duration> {
    let mut best: Option<Duration> = None;
    for _ in 0..runs {
        let t = Instant::now();
        let st = Command::new(prog)
            .args(args)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .ok()?;
        let d = t.elapsed();
        if !st.success() {
            eprintln!("{prog} {args:?} failed: {st}");
            return None;
        }
        best = Some(best.map_or(d, |b| b.min(d)));
    }
    best
}

fn main() {
    let snaps = env_u64("THINLY_BENCH_SNAPS", 110) as u32;
    let blocks = env_u64("THINLY_BENCH_BLOCKS", 100_000);
    let runs = env_u64("THINLY_BENCH_RUNS", 3);
    let cfg = GenConfig {
        seed: 42,
        nr_origins: 2,
        chain_depth: snaps,
        nr_branch_snaps: 4,
        virt_blocks: blocks * 2,
        origin_blocks: blocks,
        writes_per_snapshot: 1_000,
        max_run: 64,
        data_block_size: 128,
    };
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir =
        std::env::var_os("THINLY_BENCH_DIR").map_or_else(|| tmp.path().to_path_buf(), Into::into);
    let meta = dir.join("bench.meta");
    let mut v = Validator::default();
    generate_into(&cfg, &mut v).expect("generate");
    let (nr_mappings, nr_devices) = (v.nr_mappings(), v.nr_devices());
    if !meta.exists() {
        let nr_blocks = (nr_mappings / 84 + 20 * nr_devices + 10_000).min(4_161_600);
        let t = Instant::now();
        let dev = std::sync::Arc::new(
            FileDevice::create(&meta, nr_blocks).expect("create metadata file"),
        );
        let mut r = Restorer::new(dev, Overrides::default());
        generate_into(&cfg, &mut r).expect("restore");
        eprintln!("generated and restored in {:.1?}", t.elapsed());
    }
    let thinly = Path::new(env!("CARGO_BIN_EXE_thinly"));
    let m = meta.to_str().expect("path");
    println!(
        "metadata: {m}: {nr_mappings} mappings, {nr_devices} devices ({snaps}-snapshot chain)"
    );
    println!("{:<10} {:>12} {:>12} {:>8}", "operation", "thinly", "0.9.0 real", "speedup");
    for (op, ours, real) in [
        ("check", vec!["check", "-q", m], ("thin_check", vec!["-q", m])),
        ("dump", vec!["dump", m], ("thin_dump", vec![m])),
    ] {
        let a = best_of(runs, thinly.to_str().expect("path"), &ours);
        let b = best_of(runs, real.0, &real.1);
        let fmt = |d: Option<Duration>| {
            d.map_or("n/a".to_string(), |d| format!("{:.3}s", d.as_secs_f64()))
        };
        let speedup = match (a, b) {
            (Some(a), Some(b)) => format!("{:.1}x", b.as_secs_f64() / a.as_secs_f64()),
            _ => "n/a".into(),
        };
        println!("{op:<10} {:>12} {:>12} {speedup:>8}", fmt(a), fmt(b));
    }
}
