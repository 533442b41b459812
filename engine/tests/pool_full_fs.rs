//! A full filesystem is out of data space, not a broken pool (issue 13 §2). The pool lives
//! on a small tmpfs mounted by the test (root needed: skipped loudly without it, a failure
//! under CI); the data file fills it. Writes then fail with ENOSPC under both out-of-space
//! policies, the pool stays writable (no needs_check), a delete and a discard still work
//! and let writes resume, and after a reopen every flushed byte is there and the metadata
//! checks clean (internal checker and the real thin_check).

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use thinly_engine::io::{BlockDevice, FileDevice, IoMode};
use thinly_engine::pool::{OutOfSpacePolicy, Pool, PoolOptions, PoolSettings, Volume};
use thinly_engine::thin::{check, CheckOptions};

const BS: u64 = 64 << 10;
const FS_BYTES: u64 = 8 << 20;

/// A tmpfs mounted for one test; unmounted when dropped, also when the test panics.
struct Tmpfs {
    dir: tempfile::TempDir,
}

impl Tmpfs {
    fn mount(size_bytes: u64) -> Option<Tmpfs> {
        let dir = tempfile::tempdir().expect("tempdir");
        let out = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size_bytes}"), "thinly-test"])
            .arg(dir.path())
            .output();
        match out {
            Ok(o) if o.status.success() => Some(Tmpfs { dir }),
            other => {
                let why = match other {
                    Ok(o) => String::from_utf8_lossy(&o.stderr).into_owned(),
                    Err(e) => e.to_string(),
                };
                assert!(std::env::var_os("CI").is_none(), "mounting a tmpfs failed: {why}");
                eprintln!("SKIPPED: mounting a tmpfs needs privileges ({why})");
                None
            }
        }
    }

    fn path(&self) -> PathBuf {
        self.dir.path().to_path_buf()
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let ok = Command::new("umount").arg(self.dir.path()).status().is_ok_and(|s| s.success());
        if !ok {
            // Something still holds a file open: detach it now, it goes when released.
            let _ = Command::new("umount").arg("-l").arg(self.dir.path()).status();
        }
    }
}

fn pattern(seed: u64) -> Vec<u8> {
    (0..BS).map(|i| (seed as u8).wrapping_mul(37).wrapping_add((i % 253) as u8)).collect()
}

/// Out of space, as the pool says it: its own no-space error or the filesystem's ENOSPC.
fn is_enospc(r: &thinly_engine::pool::Result<()>) -> bool {
    use thinly_engine::pool::PoolError;
    match r {
        Err(PoolError::NoSpace(_)) => true,
        Err(PoolError::Metadata(thinly_engine::Error::MetadataNoSpace { .. })) => true,
        Err(PoolError::Io(e)) => e.raw_os_error() == Some(nix::libc::ENOSPC),
        _ => false,
    }
}

/// Writes whole blocks from `first` and flushes each, until a write fails; returns the
/// blocks written and flushed. The failure must be ENOSPC.
fn fill(vol: &Volume, first: u64, flushed: &mut Vec<(u64, u64)>, seed: u64) -> u64 {
    let mut b = first;
    loop {
        let r = vol.write(b * BS, &pattern(seed + b), false);
        if r.is_err() {
            assert!(is_enospc(&r), "a write on a full filesystem: {r:?}");
            return b;
        }
        vol.flush().expect("a flush on a filling filesystem");
        flushed.retain(|(x, _)| *x != b);
        flushed.push((b, seed + b));
        b += 1;
        assert!(b * BS < vol.size_bytes(), "the filesystem never filled");
    }
}

fn set_policy(pool: &Pool, policy: OutOfSpacePolicy) {
    let mut s = pool.settings();
    s.out_of_space = policy;
    pool.set_settings(s).expect("settings");
}

fn assert_clean(dir: &Path) {
    let dev: Arc<dyn BlockDevice> =
        Arc::new(FileDevice::open(&dir.join("metadata"), true).expect("metadata"));
    let report = check(dev, CheckOptions::default()).expect("check");
    assert!(report.is_clean(), "{:#?}", report.problems);
    if let Some(tool) = common::real_tool("thin_check") {
        let out = Command::new(tool).arg(dir.join("metadata")).output().expect("thin_check");
        assert!(out.status.success(), "thin_check: {}", String::from_utf8_lossy(&out.stderr));
    }
}

#[test]
fn a_full_filesystem_is_out_of_data_space_and_delete_or_discard_lets_writes_resume() {
    let Some(fs) = Tmpfs::mount(FS_BYTES) else { return };
    let dir = fs.path().join("pool");
    let settings = PoolSettings {
        commit_interval_ms: 0,
        out_of_space: OutOfSpacePolicy::Error,
        ..PoolSettings::default()
    };
    let opts = PoolOptions { data_size_bytes: 64 << 20, settings, ..PoolOptions::default() };
    let pool = Pool::create(&dir, &opts).expect("create");
    let meta = std::fs::metadata(dir.join("metadata")).expect("metadata file");
    use std::os::unix::fs::MetadataExt;
    assert!(meta.blocks() * 512 >= meta.len(), "the metadata file is preallocated");

    let keep = pool.create_volume("keep", 32 << 20).expect("keep");
    let scratch = pool.create_volume("scratch", 32 << 20).expect("scratch");
    let mut flushed = Vec::new();
    for b in 0..16 {
        scratch.write(b * BS, &pattern(1000 + b), false).expect("scratch");
    }
    scratch.flush().expect("flush scratch");

    // Full: ENOSPC at once under `error`, after the timeout under `queue`.
    let next = fill(&keep, 0, &mut flushed, 0);
    let r = keep.write(next * BS, &pattern(next), false);
    assert!(is_enospc(&r), "error policy: {r:?}");
    let s = pool.status();
    assert_eq!((s.mode.as_str(), s.needs_check), ("out_of_data_space", false));
    set_policy(&pool, OutOfSpacePolicy::Queue { timeout_ms: 50 });
    let r = keep.write(next * BS, &pattern(next), false);
    assert!(is_enospc(&r), "queue policy after its timeout: {r:?}");
    keep.flush().expect("a flush with nothing new still works");

    // A queued write waits for the space a delete frees.
    set_policy(&pool, OutOfSpacePolicy::Queue { timeout_ms: 60_000 });
    let writer = {
        let keep = pool.volume("keep").expect("keep");
        std::thread::spawn(move || keep.write(next * BS, &pattern(next), false))
    };
    drop(scratch);
    pool.delete_volume("scratch").expect("delete on a full filesystem");
    writer.join().expect("writer").expect("the queued write resumes after the delete");
    keep.flush().expect("flush");
    flushed.push((next, next));
    assert_eq!(pool.status().mode, "rw", "space appeared");

    // Full again: a discard frees space too.
    set_policy(&pool, OutOfSpacePolicy::Error);
    let next = fill(&keep, next + 1, &mut flushed, 0);
    keep.discard(0, 4 * BS, false).expect("discard on a full filesystem");
    keep.flush().expect("flush after the discard");
    flushed.retain(|(b, _)| *b >= 4);
    keep.write(next * BS, &pattern(next), false).expect("a write after the discard");
    keep.flush().expect("flush");
    flushed.push((next, next));
    let s = pool.status();
    assert_eq!((s.mode.as_str(), s.needs_check), ("rw", false));
    drop(keep);
    pool.close().expect("close");
    drop(pool);

    let pool = Pool::open(&dir, IoMode::Auto).expect("reopen");
    let keep = pool.volume("keep").expect("keep");
    let mut buf = vec![0u8; BS as usize];
    for b in 0..4 {
        keep.read(b * BS, &mut buf).expect("read");
        assert!(buf.iter().all(|&x| x == 0), "discarded block {b} reads zeros");
    }
    for (b, seed) in &flushed {
        keep.read(b * BS, &mut buf).expect("read");
        assert!(buf == pattern(*seed), "flushed block {b} lost");
    }
    drop(keep);
    pool.close().expect("close");
    drop(pool);
    assert_clean(&dir);
}
