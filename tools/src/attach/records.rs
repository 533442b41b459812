//! The attachment records of a pool: `<pool>/attachments.json`, a JSON array with one
//! entry per attached volume, so that `detach`, `list` and `status` run in other processes
//! find what `attach` set up. Writers hold `<pool>/attachments.lock` (flock) for the whole
//! read-modify-write and replace the file by rename, so a crash leaves the old or the new
//! list, never half of one. Readers that only display take no lock.

use super::limits::{POLL_STEP, RECORDS_LOCK_TIMEOUT};
use anyhow::{bail, Context, Result};
use nix::fcntl::{Flock, FlockArg};
use serde::{Deserialize, Serialize};
use std::fs::File;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Instant;

/// The records' file name in the pool directory.
pub const ATTACHMENTS_FILE: &str = "attachments.json";
/// The lock file serializing attach and detach on one pool.
const LOCK_FILE: &str = "attachments.lock";

/// How a volume reached the host.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "kebab-case")]
pub enum AttachPath {
    /// nbdfuse exposes the export as a file in a FUSE mount; a loop device sits on it.
    FuseLoop,
    /// The kernel's NBD client (`/dev/nbdN`), driven by a supervising thinly process.
    KernelNbd,
}

/// One attached volume.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Attachment {
    pub volume: String,
    /// The block device the user mounts (`/dev/loopN`).
    pub device: PathBuf,
    pub path: AttachPath,
    pub read_only: bool,
    /// The FUSE mount point (a directory under `<pool>/attach/`; empty for kernel NBD).
    pub mountpoint: PathBuf,
    /// The file inside the FUSE mount that backs the loop device.
    pub file: PathBuf,
    /// The helper process: nbdfuse, or the thinly process supervising /dev/nbdN.
    pub helper_pid: i32,
}

/// The records, locked for update until dropped.
pub struct Records {
    dir: PathBuf,
    pub list: Vec<Attachment>,
    _lock: Flock<File>,
}

impl Records {
    /// Locks the pool's records (waiting up to `RECORDS_LOCK_TIMEOUT` for another attach
    /// or detach) and reads them.
    pub fn lock(dir: &Path) -> Result<Records> {
        let path = dir.join(LOCK_FILE);
        let start = Instant::now();
        let mut file = File::options()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&path)
            .with_context(|| format!("opening {}", path.display()))?;
        let lock = loop {
            match Flock::lock(file, FlockArg::LockExclusiveNonblock) {
                Ok(lock) => break lock,
                Err((f, nix::errno::Errno::EWOULDBLOCK)) => {
                    if start.elapsed() > RECORDS_LOCK_TIMEOUT {
                        bail!("another attach or detach holds {} too long", path.display());
                    }
                    file = f;
                    std::thread::sleep(POLL_STEP);
                }
                Err((_, e)) => return Err(e).context(format!("locking {}", path.display())),
            }
        };
        Ok(Records { dir: dir.to_path_buf(), list: read(dir)?, _lock: lock })
    }

    /// Writes the records back (temporary file, fsync, rename, fsync of the directory).
    pub fn save(&self) -> Result<()> {
        let path = self.dir.join(ATTACHMENTS_FILE);
        let tmp = self.dir.join(format!("{ATTACHMENTS_FILE}.tmp"));
        let mut f = File::create(&tmp).with_context(|| format!("creating {}", tmp.display()))?;
        f.write_all(serde_json::to_string_pretty(&self.list)?.as_bytes())?;
        f.write_all(b"\n")?;
        f.sync_all()?;
        std::fs::rename(&tmp, &path).with_context(|| format!("replacing {}", path.display()))?;
        File::open(&self.dir)?.sync_all()?;
        Ok(())
    }
}

/// Reads the records without locking (empty when there is no file yet).
pub fn read(dir: &Path) -> Result<Vec<Attachment>> {
    let path = dir.join(ATTACHMENTS_FILE);
    match std::fs::read(&path) {
        Ok(bytes) => serde_json::from_slice(&bytes)
            .with_context(|| format!("parsing {} (not thinly's attachment list?)", path.display())),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Vec::new()),
        Err(e) => Err(e).context(format!("reading {}", path.display())),
    }
}
