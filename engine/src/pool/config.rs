//! `pool.json`: what dm-thin keeps outside its metadata (LVM or a dm table holds it for the
//! kernel): volume names → device ids and virtual sizes, and the pool's settings. It names
//! the metadata transaction id it matches and is replaced atomically (write a temporary
//! file, fsync, rename, fsync the directory).

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// What happens to a write when no data block is free.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "policy")]
pub enum OutOfSpacePolicy {
    /// Hold the write until space appears or the timeout passes, then fail it (ENOSPC).
    Queue { timeout_ms: u64 },
    /// Fail the write at once (ENOSPC).
    Error,
}

impl Default for OutOfSpacePolicy {
    fn default() -> Self {
        OutOfSpacePolicy::Queue { timeout_ms: 60_000 }
    }
}

impl OutOfSpacePolicy {
    pub fn kernel_name(&self) -> &'static str {
        match self {
            OutOfSpacePolicy::Queue { .. } => "queue_if_no_space",
            OutOfSpacePolicy::Error => "error_if_no_space",
        }
    }
}

/// Grow the data file when the low water mark is reached.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct AutoExtend {
    /// Grow by this percentage of the current data size.
    pub percent: u32,
    /// Never beyond this many bytes.
    pub max_bytes: u64,
}

/// The pool's settings.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PoolSettings {
    pub data_block_size_bytes: u64,
    /// Free data blocks at or below which the low-water-mark event fires.
    pub low_water_mark_blocks: u64,
    pub out_of_space: OutOfSpacePolicy,
    /// Zero the unwritten rest of a partially written new block (off: it reads whatever
    /// the data file held; holes read as zeros either way).
    pub zeroing: bool,
    pub commit_interval_ms: u64,
    #[serde(default)]
    pub auto_extend: Option<AutoExtend>,
}

impl Default for PoolSettings {
    fn default() -> Self {
        PoolSettings {
            data_block_size_bytes: 64 << 10,
            low_water_mark_blocks: 0,
            out_of_space: OutOfSpacePolicy::default(),
            zeroing: true,
            commit_interval_ms: 1000,
            auto_extend: None,
        }
    }
}

impl PoolSettings {
    pub fn commit_interval(&self) -> Duration {
        Duration::from_millis(self.commit_interval_ms)
    }
}

/// One volume: a name for a thin device, with its virtual size.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct VolumeConfig {
    pub dev_id: u64,
    pub size_bytes: u64,
    /// Exported read-only (snapshots may be).
    #[serde(default)]
    pub read_only: bool,
    /// The volume this one is a snapshot of, when it was taken (informational).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub snapshot_of: Option<String>,
}

/// The whole of `pool.json`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PoolConfig {
    pub format: u32,
    /// The metadata transaction id this file matches.
    pub transaction_id: u64,
    pub settings: PoolSettings,
    pub volumes: BTreeMap<String, VolumeConfig>,
}

pub const CONFIG_FORMAT: u32 = 1;
pub const CONFIG_FILE: &str = "pool.json";

/// Longest volume name (it becomes an NBD export name and a file-name-safe label).
pub const MAX_VOLUME_NAME: usize = 128;

/// Volume names: 1–128 characters of letters, digits, `.`, `_`, `-`, `+`, `@`, `:`;
/// no path separators, no leading dot.
pub fn validate_volume_name(name: &str) -> Result<(), String> {
    if name.is_empty() || name.len() > MAX_VOLUME_NAME {
        return Err(format!("volume name must be 1 to {MAX_VOLUME_NAME} characters"));
    }
    if name.starts_with('.') {
        return Err("volume name must not start with '.'".into());
    }
    if let Some(c) = name.chars().find(|c| !(c.is_ascii_alphanumeric() || "._-+@:".contains(*c))) {
        return Err(format!("volume name {name:?} contains {c:?}: use letters, digits and ._-+@:"));
    }
    Ok(())
}

/// Where `pool.json` lives: a directory, or memory (tests; survives simulated crashes).
pub trait ConfigStore: Send + Sync {
    fn load(&self) -> io::Result<Option<PoolConfig>>;
    /// Replaces the stored config atomically: after a crash it is the old or the new one.
    fn store(&self, config: &PoolConfig) -> io::Result<()>;
}

pub struct DirConfigStore {
    dir: PathBuf,
}

impl DirConfigStore {
    pub fn new(dir: &Path) -> Self {
        DirConfigStore { dir: dir.to_path_buf() }
    }
}

impl ConfigStore for DirConfigStore {
    fn load(&self) -> io::Result<Option<PoolConfig>> {
        let path = self.dir.join(CONFIG_FILE);
        let text = match std::fs::read_to_string(&path) {
            Ok(t) => t,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(e),
        };
        serde_json::from_str(&text).map(Some).map_err(|e| {
            io::Error::new(io::ErrorKind::InvalidData, format!("{}: {e}", path.display()))
        })
    }

    fn store(&self, config: &PoolConfig) -> io::Result<()> {
        let tmp = self.dir.join(format!(".{CONFIG_FILE}.tmp"));
        let mut f = std::fs::File::create(&tmp)?;
        let mut text = serde_json::to_string_pretty(config).map_err(io::Error::other)?;
        text.push('\n');
        f.write_all(text.as_bytes())?;
        f.sync_all()?;
        std::fs::rename(&tmp, self.dir.join(CONFIG_FILE))?;
        std::fs::File::open(&self.dir)?.sync_all()
    }
}

/// A config store in memory; clones share the stored value.
#[derive(Clone, Default)]
pub struct MemConfigStore {
    value: Arc<Mutex<Option<PoolConfig>>>,
}

impl ConfigStore for MemConfigStore {
    fn load(&self) -> io::Result<Option<PoolConfig>> {
        Ok(self.value.lock().unwrap_or_else(|e| e.into_inner()).clone())
    }

    fn store(&self, config: &PoolConfig) -> io::Result<()> {
        *self.value.lock().unwrap_or_else(|e| e.into_inner()) = Some(config.clone());
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn volume_names_refuse_paths_and_oddities() {
        for good in ["vol0", "a.b-c_d", "snap@1", "x:y"] {
            assert!(validate_volume_name(good).is_ok(), "{good}");
        }
        for bad in ["", "a/b", "..", ".hidden", "with space", &"x".repeat(129), "nul\0"] {
            assert!(validate_volume_name(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn config_round_trips_through_a_directory() {
        let dir = tempfile::tempdir().unwrap();
        let store = DirConfigStore::new(dir.path());
        assert!(store.load().unwrap().is_none());
        let mut volumes = BTreeMap::new();
        volumes.insert(
            "vol0".into(),
            VolumeConfig { dev_id: 1, size_bytes: 1 << 30, read_only: false, snapshot_of: None },
        );
        let c = PoolConfig {
            format: CONFIG_FORMAT,
            transaction_id: 3,
            settings: PoolSettings::default(),
            volumes,
        };
        store.store(&c).unwrap();
        assert_eq!(store.load().unwrap(), Some(c));
    }
}
