//! `pool.json`: what dm-thin keeps outside its metadata (LVM or a dm table holds it for the
//! kernel): volume names → device ids and virtual sizes, and the pool's settings. It is
//! replaced atomically (write a temporary file, fsync, rename, fsync the directory); changes
//! between checkpoints go to an append-only journal numbered by its own sequence
//! (`journal_seq`), independent of the metadata transaction id, which belongs to the user
//! (`set_transaction_id`) exactly as in dm-thin. Open reconciles names with the metadata's
//! device ids (`open::reconcile`).

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

/// What happens to the cached pages of a block's old copy when a write breaks its sharing
/// (copy-on-write): the old copy is then only the snapshots'.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SnapshotCache {
    /// Drop them when the writing volume is the only one open: nobody reads the old copy
    /// until a snapshot is opened, and the new copy reuses their memory (a page of new cache
    /// costs a page of fresh memory: ~10 µs per 4 KiB on a VM whose host takes back free
    /// memory, see benches/README.md). With another volume open they stay: it may share them.
    #[default]
    Auto,
    /// Leave them to the kernel's page cache.
    Keep,
}

/// What creating, snapshotting or growing volumes past the pool's data size does (the
/// management commands' guardrail, `pool::guard`; dm messages never check it).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Overprovision {
    /// Go ahead with a warning that gives the over-provisioning ratio (LVM's behaviour).
    #[default]
    Warn,
    /// Refuse, changing nothing.
    Error,
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
    #[serde(default)]
    pub snapshot_cache: SnapshotCache,
    /// pool.json's `"overprovision": "warn" | "error"` (absent: warn).
    #[serde(default)]
    pub overprovision: Overprovision,
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
            snapshot_cache: SnapshotCache::Auto,
            overprovision: Overprovision::Warn,
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
    /// This is a snapshot whose origin volume was deleted since: `snapshot_of` keeps the
    /// old name for ancestry only (a later volume of that name is no origin of it).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub origin_deleted: bool,
}

/// The whole of `pool.json`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PoolConfig {
    pub format: u32,
    /// The metadata transaction id when this was written: informational only (the metadata
    /// holds the real one; format 1 files moved it on every operation).
    pub transaction_id: u64,
    pub settings: PoolSettings,
    pub volumes: BTreeMap<String, VolumeConfig>,
    /// The last journal entry folded into this checkpoint.
    #[serde(default)]
    pub journal_seq: u64,
}

/// One change to the config, as the journal records it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
pub enum ConfigChange {
    PutVolume {
        name: String,
        volume: VolumeConfig,
    },
    /// Removes the name if it still names device `dev_id` (any device when absent): a
    /// delete's line is journalled after its commit, by when the name may be reused.
    RemoveVolume {
        name: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        dev_id: Option<u64>,
    },
    Settings {
        settings: PoolSettings,
    },
}

/// A journal line: the changes of one operation, numbered by the journal's own sequence,
/// with the metadata transaction id of the time (informational).
#[derive(Debug, Clone, Serialize, Deserialize)]
struct JournalEntry {
    seq: u64,
    transaction_id: u64,
    changes: Vec<ConfigChange>,
}

impl PoolConfig {
    /// Applies journalled changes.
    pub fn apply(&mut self, transaction_id: u64, changes: &[ConfigChange]) {
        for c in changes {
            match c {
                ConfigChange::PutVolume { name, volume } => {
                    self.volumes.insert(name.clone(), volume.clone());
                }
                ConfigChange::RemoveVolume { name, dev_id } => {
                    let named = self.volumes.get(name).map(|v| v.dev_id);
                    if dev_id.is_none() || named == *dev_id {
                        self.volumes.remove(name);
                    }
                }
                ConfigChange::Settings { settings } => self.settings = settings.clone(),
            }
        }
        self.transaction_id = transaction_id;
    }
}

/// 2: the metadata transaction id is the user's; reconciling uses device ids alone.
pub const CONFIG_FORMAT: u32 = 2;
pub const CONFIG_FILE: &str = "pool.json";
/// A second copy of the checkpoint, written after it: a lost or damaged `pool.json` is
/// rebuilt from it (with the journal) instead of guessed from the metadata.
pub const CONFIG_COPY_FILE: &str = "pool.json.bak";
/// The journal of changes since `pool.json` was written.
pub const JOURNAL_FILE: &str = "pool.log";
/// Entries after which the journal is folded into a new `pool.json`: keeps replay short
/// while a management operation stays O(1) (one appended line) instead of O(volumes).
pub const MAX_JOURNAL_ENTRIES: u64 = 1024;

/// Bytes reserved (fallocate, keeping the size) for a new journal: appends then need no
/// new space from the filesystem, so management (a delete that frees space) works on a
/// full one. MAX_JOURNAL_ENTRIES lines of up to 512 bytes.
pub const JOURNAL_RESERVE_BYTES: u64 = MAX_JOURNAL_ENTRIES * 512;

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

/// Where the pool's config lives: a directory, or memory (tests; survives simulated
/// crashes). Both `store` and `append` are atomic: after a crash the config is as before or
/// as after the call.
pub trait ConfigStore: Send + Sync {
    /// The config: the last checkpoint with every journalled change after it.
    fn load(&self) -> io::Result<Option<PoolConfig>>;
    /// Writes a checkpoint of the whole config (and empties the journal).
    fn store(&self, config: &PoolConfig) -> io::Result<()>;
    /// Records `changes` (which `after` already contains) in O(1); may checkpoint `after`.
    fn append(&self, changes: &[ConfigChange], after: &mut PoolConfig) -> io::Result<()>;
    /// Checkpoints `config` (which holds every journalled change) if the journal has any
    /// entry: the clean shutdown's last step.
    fn fold(&self, config: &PoolConfig) -> io::Result<()> {
        self.store(config)
    }
}

pub struct DirConfigStore {
    dir: PathBuf,
    /// Entries in the journal since the last checkpoint.
    entries: std::sync::Mutex<u64>,
}

impl DirConfigStore {
    pub fn new(dir: &Path) -> Self {
        DirConfigStore { dir: dir.to_path_buf(), entries: std::sync::Mutex::new(0) }
    }

    /// The checkpoint: `pool.json`, or when it is missing or unreadable, its copy.
    fn read_checkpoint(&self) -> io::Result<Option<PoolConfig>> {
        let first = self.read_file(CONFIG_FILE);
        if let Ok(Some(c)) = first {
            return Ok(Some(c));
        }
        match self.read_file(CONFIG_COPY_FILE) {
            Ok(Some(c)) => {
                let why = match &first {
                    Err(e) => e.to_string(),
                    _ => "it is missing".to_string(),
                };
                tracing::warn!(
                    "{}: {CONFIG_FILE} cannot be used ({why}): using its copy {CONFIG_COPY_FILE}",
                    self.dir.display()
                );
                Ok(Some(c))
            }
            Ok(None) => first,
            Err(e) => first.and(Err(e)),
        }
    }

    fn read_file(&self, name: &str) -> io::Result<Option<PoolConfig>> {
        let path = self.dir.join(name);
        let text = match std::fs::read_to_string(&path) {
            Ok(t) => t,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(e),
        };
        serde_json::from_str(&text).map(Some).map_err(|e| {
            io::Error::new(io::ErrorKind::InvalidData, format!("{}: {e}", path.display()))
        })
    }

    /// Replaces `name` with `text` atomically (temporary file, fsync, rename, fsync the
    /// directory).
    fn write_file(&self, name: &str, text: &str) -> io::Result<()> {
        let tmp = self.dir.join(format!(".{name}.tmp"));
        let mut f = std::fs::File::create(&tmp)?;
        f.write_all(text.as_bytes())?;
        f.sync_all()?;
        std::fs::rename(&tmp, self.dir.join(name))?;
        std::fs::File::open(&self.dir)?.sync_all()
    }
}

impl ConfigStore for DirConfigStore {
    fn load(&self) -> io::Result<Option<PoolConfig>> {
        let Some(mut config) = self.read_checkpoint()? else { return Ok(None) };
        let journal = match std::fs::read_to_string(self.dir.join(JOURNAL_FILE)) {
            Ok(t) => t,
            Err(e) if e.kind() == io::ErrorKind::NotFound => String::new(),
            Err(e) => return Err(e),
        };
        let mut n = 0;
        for line in journal.lines() {
            // A line a crash tore is the last one; nothing after it was acknowledged.
            let Ok(entry) = serde_json::from_str::<JournalEntry>(line) else { break };
            if entry.seq > config.journal_seq {
                config.apply(entry.transaction_id, &entry.changes);
                config.journal_seq = entry.seq;
                n += 1;
            }
        }
        *self.entries.lock().unwrap_or_else(|e| e.into_inner()) = n;
        Ok(Some(config))
    }

    fn store(&self, config: &PoolConfig) -> io::Result<()> {
        let mut text = serde_json::to_string_pretty(config).map_err(io::Error::other)?;
        text.push('\n');
        self.write_file(CONFIG_FILE, &text)?;
        // Both hold the same checkpoint before the journal restarts: either one, with the
        // journal, rebuilds the config.
        self.write_file(CONFIG_COPY_FILE, &text)?;
        // The checkpoint holds every entry (its journal_seq says so): start a new journal.
        let journal = std::fs::File::create(self.dir.join(JOURNAL_FILE))?;
        reserve_journal(&journal);
        journal.sync_all()?;
        *self.entries.lock().unwrap_or_else(|e| e.into_inner()) = 0;
        Ok(())
    }

    fn fold(&self, config: &PoolConfig) -> io::Result<()> {
        let entries = *self.entries.lock().unwrap_or_else(|e| e.into_inner());
        let journal_bytes = match std::fs::metadata(self.dir.join(JOURNAL_FILE)) {
            Ok(md) => md.len(),
            Err(e) if e.kind() == io::ErrorKind::NotFound => 0,
            Err(e) => return Err(e),
        };
        // A torn last line counts too: the checkpoint replaces it.
        if entries == 0 && journal_bytes == 0 {
            return Ok(());
        }
        self.store(config)
    }

    fn append(&self, changes: &[ConfigChange], after: &mut PoolConfig) -> io::Result<()> {
        let mut entries = self.entries.lock().unwrap_or_else(|e| e.into_inner());
        after.journal_seq += 1;
        if *entries >= MAX_JOURNAL_ENTRIES {
            drop(entries);
            return self.store(after);
        }
        let entry = JournalEntry {
            seq: after.journal_seq,
            transaction_id: after.transaction_id,
            changes: changes.to_vec(),
        };
        let mut line = serde_json::to_string(&entry).map_err(io::Error::other)?;
        line.push('\n');
        let path = self.dir.join(JOURNAL_FILE);
        let mut f = std::fs::OpenOptions::new().create(true).append(true).open(path)?;
        f.write_all(line.as_bytes())?;
        f.sync_data()?;
        *entries += 1;
        Ok(())
    }
}

/// Reserves JOURNAL_RESERVE_BYTES for the journal's appends (best effort: a filesystem
/// without fallocate just allocates as the journal grows).
fn reserve_journal(f: &std::fs::File) {
    use nix::fcntl::{fallocate, FallocateFlags};
    use std::os::fd::AsRawFd;
    let keep = FallocateFlags::FALLOC_FL_KEEP_SIZE;
    if let Err(e) = fallocate(f.as_raw_fd(), keep, 0, JOURNAL_RESERVE_BYTES as i64) {
        tracing::debug!("reserving space for the journal: {e}");
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

    fn append(&self, _changes: &[ConfigChange], after: &mut PoolConfig) -> io::Result<()> {
        after.journal_seq += 1;
        self.store(after)
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
    fn settings_from_before_snapshot_cache_read_as_auto() {
        let mut json = serde_json::to_value(PoolSettings::default()).unwrap();
        assert_eq!(json["snapshot_cache"], "auto");
        json.as_object_mut().unwrap().remove("snapshot_cache");
        let s: PoolSettings = serde_json::from_value(json).unwrap();
        assert_eq!(s.snapshot_cache, SnapshotCache::Auto);
        let keep = PoolSettings { snapshot_cache: SnapshotCache::Keep, ..Default::default() };
        let back: PoolSettings =
            serde_json::from_value(serde_json::to_value(&keep).unwrap()).unwrap();
        assert_eq!(back, keep);
    }

    #[test]
    fn a_late_remove_line_spares_a_name_reused_for_another_device() {
        let v = |dev_id| VolumeConfig {
            dev_id,
            size_bytes: 512,
            read_only: false,
            snapshot_of: None,
            origin_deleted: false,
        };
        let mut c = PoolConfig {
            format: CONFIG_FORMAT,
            transaction_id: 0,
            settings: PoolSettings::default(),
            volumes: BTreeMap::new(),
            journal_seq: 0,
        };
        // Delete x (device 1) committed; create x (device 2) journalled before the delete's
        // line: the late line must not remove the new x.
        c.apply(0, &[ConfigChange::PutVolume { name: "x".into(), volume: v(2) }]);
        c.apply(0, &[ConfigChange::RemoveVolume { name: "x".into(), dev_id: Some(1) }]);
        assert_eq!(c.volumes["x"].dev_id, 2);
        c.apply(0, &[ConfigChange::RemoveVolume { name: "x".into(), dev_id: Some(2) }]);
        assert!(c.volumes.is_empty());
        // A line from before dev_id was recorded removes the name whatever it names.
        c.apply(0, &[ConfigChange::PutVolume { name: "y".into(), volume: v(3) }]);
        let old: ConfigChange =
            serde_json::from_str(r#"{"op": "remove_volume", "name": "y"}"#).unwrap();
        c.apply(0, &[old]);
        assert!(c.volumes.is_empty());
    }

    #[test]
    fn config_round_trips_through_a_directory() {
        let dir = tempfile::tempdir().unwrap();
        let store = DirConfigStore::new(dir.path());
        assert!(store.load().unwrap().is_none());
        let mut volumes = BTreeMap::new();
        volumes.insert(
            "vol0".into(),
            VolumeConfig {
                dev_id: 1,
                size_bytes: 1 << 30,
                read_only: false,
                snapshot_of: None,
                origin_deleted: false,
            },
        );
        let mut c = PoolConfig {
            format: CONFIG_FORMAT,
            transaction_id: 3,
            settings: PoolSettings::default(),
            volumes,
            journal_seq: 0,
        };
        store.store(&c).unwrap();
        assert_eq!(store.load().unwrap(), Some(c.clone()));
        // Journalled changes replay on load; a torn last line is ignored.
        let v = VolumeConfig {
            dev_id: 2,
            size_bytes: 1 << 20,
            read_only: true,
            snapshot_of: Some("vol0".into()),
            origin_deleted: false,
        };
        let put = ConfigChange::PutVolume { name: "snap".into(), volume: v };
        c.apply(4, std::slice::from_ref(&put));
        store.append(&[put], &mut c).unwrap();
        let rm = ConfigChange::RemoveVolume { name: "vol0".into(), dev_id: Some(1) };
        c.apply(5, std::slice::from_ref(&rm));
        store.append(&[rm], &mut c).unwrap();
        let journal = dir.path().join(JOURNAL_FILE);
        let mut f = std::fs::OpenOptions::new().append(true).open(&journal).unwrap();
        f.write_all(b"{\"seq\": 3, \"transa").unwrap();
        let loaded = store.load().unwrap().unwrap();
        assert_eq!(loaded, c);
        assert!(!loaded.volumes.contains_key("vol0") && loaded.volumes["snap"].read_only);
        assert_eq!(loaded.transaction_id, 5);
        // A checkpoint folds the journal in and empties it.
        store.store(&c).unwrap();
        assert_eq!(std::fs::read(&journal).unwrap().len(), 0);
        assert_eq!(store.load().unwrap(), Some(c));
    }
}
