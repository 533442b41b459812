//! Metadata that a running pool holds: a `thinly serve` (or any open `Pool`) keeps an
//! exclusive flock on its metadata file or device and changes it while it runs, so what a
//! tool reads there may be half a transaction. As thin_check refuses the live metadata of
//! an active pool (its `-m` checks the metadata snapshot instead), the thin_* tools here:
//! - read live metadata only with `--force` (check, dump, ls, delta, rmap), or through the
//!   metadata snapshot (`-m`, after `thinly message reserve_metadata_snap`);
//! - never write it (restore's and repair's output, trim's discards, check's repairs),
//!   force or not: stop the server first.
//!
//! Held is read from `/proc/locks` (the FLOCK entries of the file's device and inode), so
//! asking takes no lock that could make a starting server fail.

use std::path::Path;

use anyhow::{bail, Result};

/// Whether some process holds an exclusive flock on `path` (a pool has it open).
pub fn held_by_a_pool(path: &Path) -> bool {
    use std::os::unix::fs::MetadataExt;
    let Ok(m) = std::fs::metadata(path) else { return false };
    let Ok(locks) = std::fs::read_to_string("/proc/locks") else { return false };
    let dev = m.dev();
    let (major, minor) = (nix::sys::stat::major(dev), nix::sys::stat::minor(dev));
    let want = format!("{major:02x}:{minor:02x}:{}", m.ino());
    locks.lines().any(|l| {
        let f: Vec<&str> = l.split_whitespace().collect();
        // "1: FLOCK ADVISORY WRITE pid maj:min:inode start end"
        f.get(1) == Some(&"FLOCK") && f.get(3) == Some(&"WRITE") && f.get(5) == Some(&want.as_str())
    })
}

/// For a tool that reads `path`: refuses live metadata unless `force` or `snapshot` (the
/// metadata snapshot is stable while the pool runs); with `force`, warns.
pub fn may_read(tool: &str, path: &Path, force: bool, snapshot: bool) -> Result<()> {
    if snapshot || !held_by_a_pool(path) {
        return Ok(());
    }
    if force {
        eprintln!(
            "{tool}: WARNING: {} is in use by a running pool; its metadata may change while \
             it is read",
            path.display()
        );
        return Ok(());
    }
    bail!(
        "{} is in use by a running pool (thinly serve): its metadata changes under a reader. \
         Stop the server, or read the metadata snapshot (thinly message reserve_metadata_snap, \
         then -m), or pass --force",
        path.display()
    )
}

/// For a tool that writes `path` (or the pool's data): refuses live metadata, always.
pub fn may_write(tool: &str, path: &Path) -> Result<()> {
    if held_by_a_pool(path) {
        bail!(
            "{tool}: {} is in use by a running pool (thinly serve); stop the server first",
            path.display()
        );
    }
    Ok(())
}
