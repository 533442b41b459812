//! The pool's statistics give exact figures for scripted workloads: data-file bytes by
//! cause, copy-on-write breaks, provisioning, zeroing, unmaps, frees and hole punches,
//! commits by cause, lookups, latency counts, the derived ratios, and reset.
#![cfg(not(feature = "no-stats"))]

use thinly_engine::io::IoMode;
use thinly_engine::pool::{Pool, PoolOptions, PoolSettings, StatsSnapshot, VolumeCounter as C};

const BS: u64 = 64 << 10;
const KIB4: usize = 4096;

fn options() -> PoolOptions {
    PoolOptions {
        data_size_bytes: 64 << 20,
        settings: PoolSettings { commit_interval_ms: 0, ..PoolSettings::default() },
        ..PoolOptions::default()
    }
}

fn vol(s: &StatsSnapshot, c: C) -> u64 {
    s.volume_counter("vol0", c)
}

/// The data-file bytes a volume's writes cost, all causes.
fn data_bytes(s: &StatsSnapshot) -> u64 {
    vol(s, C::DataClientBytes) + vol(s, C::DataCowBytes) + vol(s, C::DataZeroingBytes)
}

#[test]
fn a_4k_write_into_a_shared_64k_block_writes_64k_from_one_cow_break() {
    let dir = tempfile::tempdir().unwrap();
    let pool = Pool::create(dir.path(), &options()).unwrap();
    let v = pool.create_volume("vol0", 1 << 20).unwrap();
    v.write(0, &vec![7u8; BS as usize], false).unwrap();
    pool.snapshot("vol0", "snap", true).unwrap();
    pool.reset_stats();

    v.write(4096, &[1u8; KIB4], false).unwrap();
    let s = pool.stats();
    assert_eq!(vol(&s, C::WriteRequests), 1);
    assert_eq!(vol(&s, C::WriteBytes), 4096);
    assert_eq!(vol(&s, C::CowBreaks), 1);
    assert_eq!(vol(&s, C::BlocksProvisioned), 1);
    assert_eq!(vol(&s, C::DataClientBytes), 4096);
    assert_eq!(vol(&s, C::DataCowBytes), BS - 4096);
    assert_eq!(vol(&s, C::DataZeroingBytes), 0);
    assert_eq!(data_bytes(&s), BS);
    assert_eq!(s.derived.write_amplification, Some(16.0));
    assert_eq!(s.derived.cow_share, Some(1.0));
    assert_eq!(s.latency_us["write"].count, 1);

    // The block is the volume's own now: the next write goes in place.
    v.write(8192, &[2u8; KIB4], false).unwrap();
    let s = pool.stats();
    assert_eq!(vol(&s, C::CowBreaks), 1);
    assert_eq!(vol(&s, C::BlockWrites), 2);
    assert_eq!(data_bytes(&s), BS + 4096);
    assert_eq!(s.derived.cow_share, Some(0.5));
    assert_eq!(s.volume_counter("snap", C::WriteRequests), 0);
    pool.close().unwrap();
}

#[test]
fn a_full_block_write_to_a_fresh_block_needs_no_zeroing() {
    let dir = tempfile::tempdir().unwrap();
    let pool = Pool::create(dir.path(), &options()).unwrap();
    let v = pool.create_volume("vol0", 1 << 20).unwrap();
    pool.reset_stats();
    v.write(BS, &vec![3u8; BS as usize], false).unwrap();
    // A partial write into a block of a new pool: known to be a hole, nothing to zero.
    v.write(3 * BS + 512, &[4u8; 512], false).unwrap();
    let s = pool.stats();
    assert_eq!(vol(&s, C::BlocksProvisioned), 2);
    assert_eq!(vol(&s, C::CowBreaks), 0);
    assert_eq!(vol(&s, C::DataZeroingBytes), 0);
    assert_eq!(vol(&s, C::DataClientBytes), BS + 512);
    assert_eq!(s.derived.write_amplification, Some(1.0));
    assert_eq!(s.pool_counter("hole_punches"), 0);
    pool.close().unwrap();
}

#[test]
fn a_partial_write_to_a_block_not_known_as_a_hole_zeroes_the_rest() {
    let dir = tempfile::tempdir().unwrap();
    let pool = Pool::create(dir.path(), &options()).unwrap();
    pool.create_volume("vol0", 1 << 20).unwrap();
    pool.close().unwrap();
    drop(pool);
    // After a reopen no free block is known to be a hole.
    let pool = Pool::open(dir.path(), IoMode::Auto).unwrap();
    let v = pool.volume("vol0").unwrap();
    v.write(100, &[5u8; 1000], false).unwrap();
    let s = pool.stats();
    assert_eq!(vol(&s, C::DataClientBytes), 1000);
    assert_eq!(vol(&s, C::DataZeroingBytes), BS - 1000);
    assert_eq!(s.pool_counter("hole_punches"), 1);
    assert_eq!(s.pool_counter("hole_punch_bytes"), BS);
    pool.close().unwrap();
}

#[test]
fn commits_are_counted_by_cause_with_their_metadata_blocks() {
    let dir = tempfile::tempdir().unwrap();
    let pool = Pool::create(dir.path(), &options()).unwrap();
    let v = pool.create_volume("vol0", 1 << 20).unwrap();
    pool.reset_stats();
    v.write(0, &[1u8; KIB4], false).unwrap();
    v.flush().unwrap();
    // Nothing changed since: a flush that commits nothing is not a commit.
    v.flush().unwrap();
    v.write(BS, &[1u8; KIB4], true).unwrap();
    pool.create_volume("vol1", 1 << 20).unwrap();
    let s = pool.stats();
    assert_eq!(s.pool_counter("commits_flush"), 1);
    assert_eq!(s.pool_counter("commits_fua"), 1);
    assert_eq!(s.pool_counter("commits_management"), 1);
    assert_eq!(s.pool_counter("commits_timer"), 0);
    assert_eq!(vol(&s, C::FlushRequests), 2);
    assert_eq!(vol(&s, C::FuaRequests), 1);
    assert_eq!(s.latency_us["flush"].count, 2);
    assert_eq!(s.latency_us["commit"].count, 3);
    assert_eq!(s.commit_metadata_blocks.count, 3);
    // Each commit writes at least its superblock and the blocks it changed.
    let blocks = s.pool_counter("metadata_blocks_written");
    assert!(blocks >= 3 * 2, "{blocks} metadata blocks in 3 commits");
    assert_eq!(s.commit_metadata_blocks.mean * 3.0, blocks as f64);
    let with_md = s.derived.write_amplification_with_metadata.unwrap();
    let expected = (2 * KIB4 as u64 + blocks * 4096) as f64 / (2 * KIB4) as f64;
    assert_eq!(with_md, expected);
    pool.close().unwrap();
}

#[test]
fn trims_unmap_and_the_next_commit_frees_and_punches_the_blocks() {
    let dir = tempfile::tempdir().unwrap();
    let pool = Pool::create(dir.path(), &options()).unwrap();
    let v = pool.create_volume("vol0", 1 << 20).unwrap();
    v.write(0, &vec![9u8; 2 * BS as usize], false).unwrap();
    v.flush().unwrap();
    pool.reset_stats();
    v.discard(0, 2 * BS + 512, false).unwrap();
    let s = pool.stats();
    assert_eq!(vol(&s, C::TrimRequests), 1);
    assert_eq!(vol(&s, C::TrimBytes), 2 * BS + 512);
    assert_eq!(vol(&s, C::BlocksUnmapped), 2);
    assert_eq!(s.pool_counter("blocks_freed"), 0, "freed only by the commit");
    v.flush().unwrap();
    let s = pool.stats();
    assert_eq!(s.pool_counter("blocks_freed"), 2);
    assert_eq!(s.pool_counter("hole_punches"), 1, "one run of two blocks");
    assert_eq!(s.pool_counter("hole_punch_bytes"), 2 * BS);
    // Whole blocks of write-zeroes with trim allowed unmap too.
    v.write(0, &vec![9u8; BS as usize], false).unwrap();
    v.write_zeroes(0, BS, true, false).unwrap();
    let s = pool.stats();
    assert_eq!(vol(&s, C::WriteZeroesRequests), 1);
    assert_eq!(vol(&s, C::WriteZeroesBytes), BS);
    assert_eq!(vol(&s, C::BlocksUnmapped), 3);
    pool.close().unwrap();
}

#[test]
fn reads_and_lookups_are_counted_and_reset_zeroes_everything() {
    let dir = tempfile::tempdir().unwrap();
    let pool = Pool::create(dir.path(), &options()).unwrap();
    let v = pool.create_volume("vol0", 1 << 20).unwrap();
    pool.reset_stats();
    v.write(0, &[1u8; KIB4], false).unwrap();
    let mut buf = vec![0u8; 3 * BS as usize];
    v.read(0, &mut buf).unwrap();
    let s = pool.stats();
    assert_eq!(vol(&s, C::ReadRequests), 1);
    assert_eq!(vol(&s, C::ReadBytes), 3 * BS);
    // One lookup for the write, three for the read; a small tree is one leaf deep.
    assert_eq!(s.lookup_depths, vec![0, 4]);
    assert_eq!(s.derived.lookup_depth_mean, Some(1.0));
    let read = s.latency_us["read"];
    assert_eq!(read.count, 1);
    assert!(read.p50 > 0.0 && read.p50 <= read.p99 && read.p99 <= read.max);

    let before = pool.reset_stats();
    assert_eq!(before, s.clone_with_seconds(before.seconds));
    let s = pool.stats();
    assert!(s.pool.values().all(|&n| n == 0), "{:?}", s.pool);
    assert!(s.volumes["vol0"].values().all(|&n| n == 0));
    assert!(s.latency_us.values().all(|l| l.count == 0));
    assert!(s.lookup_depths.is_empty());
    assert_eq!(s.derived.write_amplification, None);
    pool.close().unwrap();
}

#[test]
fn a_deleted_volumes_counts_stay_in_the_pool_totals() {
    let dir = tempfile::tempdir().unwrap();
    let pool = Pool::create(dir.path(), &options()).unwrap();
    let v = pool.create_volume("vol0", 1 << 20).unwrap();
    let w = pool.create_volume("gone", 1 << 20).unwrap();
    pool.reset_stats();
    v.write(0, &[1u8; KIB4], false).unwrap();
    w.write(0, &[1u8; KIB4], false).unwrap();
    drop(w);
    pool.delete_volume("gone").unwrap();
    let s = pool.stats();
    assert!(!s.volumes.contains_key("gone"));
    assert_eq!(s.pool_counter(C::WriteRequests.name()), 2);
    assert_eq!(s.pool_counter(C::BlocksProvisioned.name()), 2);
    assert_eq!(s.pool_counter("blocks_freed"), 1, "the delete's commit freed its block");
    pool.close().unwrap();
}

trait WithSeconds {
    fn clone_with_seconds(&self, seconds: f64) -> Self;
}

impl WithSeconds for StatsSnapshot {
    fn clone_with_seconds(&self, seconds: f64) -> Self {
        StatsSnapshot { seconds, ..self.clone() }
    }
}
