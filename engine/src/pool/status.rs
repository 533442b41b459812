//! Status in the kernel's thin-pool and thin target formats, and the kernel's message
//! vocabulary (create_thin, create_snap, delete, set_transaction_id, metadata snapshots).

use super::config::VolumeConfig;
use super::{Meta, Mode, Pool, PoolError, Result, VolumeState};
use crate::units::DevId;
use std::sync::atomic::Ordering;
use std::sync::Arc;

/// The kernel's thin-pool status fields.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct PoolStatus {
    pub transaction_id: u64,
    pub used_metadata_blocks: u64,
    pub total_metadata_blocks: u64,
    pub used_data_blocks: u64,
    pub total_data_blocks: u64,
    pub held_metadata_root: Option<u64>,
    /// "rw", "out_of_data_space" or "ro".
    pub mode: String,
    pub read_only_reason: Option<String>,
    pub discard_passdown: bool,
    pub out_of_space_policy: String,
    pub needs_check: bool,
    pub metadata_low_watermark: u64,
    pub data_block_size_bytes: u64,
    pub low_water_mark_blocks: u64,
    pub data_io: String,
}

impl std::fmt::Display for PoolStatus {
    /// `dmsetup status` of a thin-pool target, less the leading start/length/type.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} {}/{} {}/{} {} {} {} {} {} {}",
            self.transaction_id,
            self.used_metadata_blocks,
            self.total_metadata_blocks,
            self.used_data_blocks,
            self.total_data_blocks,
            self.held_metadata_root.map_or("-".to_string(), |b| b.to_string()),
            self.mode,
            if self.discard_passdown { "discard_passdown" } else { "no_discard_passdown" },
            self.out_of_space_policy,
            if self.needs_check { "needs_check" } else { "-" },
            self.metadata_low_watermark,
        )
    }
}

/// A volume's status: the kernel's thin target fields, in sectors.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct VolumeStatus {
    pub name: String,
    pub dev_id: u64,
    pub size_bytes: u64,
    pub read_only: bool,
    pub mapped_sectors: u64,
    /// Highest mapped sector, if any block is mapped.
    pub highest_mapped_sector: Option<u64>,
    /// The origin volume, while it exists (see `origin_deleted`).
    pub snapshot_of: Option<String>,
    /// A snapshot whose origin was deleted (then `snapshot_of` is `None`).
    pub origin_deleted: bool,
    /// Mapped bytes: `exclusive_bytes + shared_bytes`.
    pub mapped_bytes: u64,
    /// Bytes of data blocks only this volume maps (every node on the way and the data block
    /// have reference count 1: thin_ls's EXCLUSIVE; see `thin::usage` for its cost).
    pub exclusive_bytes: u64,
    /// Mapped bytes some other volume (or the held metadata snapshot) also references.
    pub shared_bytes: u64,
}

impl std::fmt::Display for VolumeStatus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.highest_mapped_sector {
            Some(h) => write!(f, "{} {h}", self.mapped_sectors),
            None => write!(f, "{} -", self.mapped_sectors),
        }
    }
}

/// A volume as `list` shows it.
pub type VolumeInfo = (String, VolumeConfig);

impl Pool {
    pub fn status(&self) -> PoolStatus {
        let meta = self.inner.meta();
        let s = meta.md.status();
        let (mode, reason) = match &meta.mode {
            Mode::Write => ("rw", None),
            Mode::OutOfDataSpace => ("out_of_data_space", None),
            Mode::ReadOnly(r) => ("ro", Some(r.clone())),
        };
        PoolStatus {
            transaction_id: s.transaction_id,
            // The kernel reports total − free, where free leaves out its metadata reserve.
            used_metadata_blocks: {
                let reserve = crate::limits::metadata_reserve_blocks(s.total_metadata_blocks);
                let free = s.total_metadata_blocks - s.used_metadata_blocks;
                s.total_metadata_blocks - free.saturating_sub(reserve)
            },
            total_metadata_blocks: s.total_metadata_blocks,
            used_data_blocks: s.used_data_blocks,
            total_data_blocks: s.total_data_blocks,
            held_metadata_root: s.held_root,
            mode: mode.to_string(),
            read_only_reason: reason,
            discard_passdown: true,
            out_of_space_policy: meta.config.settings.out_of_space.kernel_name().to_string(),
            needs_check: s.needs_check,
            // dm-thin's calc_metadata_threshold: min(1024, metadata blocks / 4).
            metadata_low_watermark: (s.total_metadata_blocks / 4).min(1024),
            data_block_size_bytes: self.inner.block_size,
            low_water_mark_blocks: meta.config.settings.low_water_mark_blocks,
            data_io: self.inner.data.io_path().to_string(),
        }
    }

    pub fn volume_status(&self, name: &str) -> Result<VolumeStatus> {
        let state = self.state_of(name)?;
        let mut meta = self.inner.settled(self.inner.meta(), Some(state.dev));
        let dev = DevId(state.dev);
        let details = meta.md.device_details(dev)?;
        let highest = meta.md.highest_mapped(dev)?;
        let exclusive = meta.md.exclusive_blocks(dev)?.min(details.mapped_blocks);
        let spb = self.inner.block_size / 512;
        let bs = self.inner.block_size;
        let config = meta.config.volumes.get(name);
        let origin = config.and_then(|v| v.snapshot_of.clone());
        // An origin that no longer exists is deleted too (a crash between a delete's commit
        // and its journal line leaves the mark unwritten).
        let origin_deleted = config.is_some_and(|v| v.origin_deleted)
            || origin.as_ref().is_some_and(|o| !meta.config.volumes.contains_key(o));
        let snapshot_of = origin.filter(|_| !origin_deleted);
        Ok(VolumeStatus {
            name: name.to_string(),
            dev_id: state.dev,
            size_bytes: state.size_bytes.load(Ordering::SeqCst),
            read_only: state.read_only,
            mapped_sectors: details.mapped_blocks * spb,
            highest_mapped_sector: highest.map(|b| (b.0 + 1) * spb - 1),
            snapshot_of,
            origin_deleted,
            mapped_bytes: details.mapped_blocks * bs,
            exclusive_bytes: exclusive * bs,
            shared_bytes: (details.mapped_blocks - exclusive) * bs,
        })
    }

    /// Runs a kernel thin-pool message: create_thin, create_snap, delete,
    /// set_transaction_id, reserve_metadata_snap, release_metadata_snap. A device created
    /// this way gets a volume named `thin<ID>` as large as the data device.
    pub fn message(&self, text: &str) -> Result<String> {
        let words: Vec<&str> = text.split_whitespace().collect();
        let num = |i: usize| -> Result<u64> {
            words.get(i).and_then(|w| w.parse().ok()).ok_or_else(|| {
                PoolError::Invalid(format!("message {text:?}: argument {i} must be a number"))
            })
        };
        let argc = |n: usize| -> Result<()> {
            if words.len() != n + 1 {
                return Err(PoolError::Invalid(format!("message {text:?} takes {n} arguments")));
            }
            Ok(())
        };
        match words.first().copied() {
            Some("create_thin") => {
                argc(1)?;
                let id = DevId(num(1)?);
                let size = self.status().total_data_blocks * self.inner.block_size;
                self.device_message(
                    |meta| meta.md.create_thin(id),
                    |_| (format!("thin{}", id.0), size, None),
                )
            }
            Some("create_snap") => {
                argc(2)?;
                let (id, origin) = (DevId(num(1)?), DevId(num(2)?));
                let origin_vol = self.volume_of(origin);
                if let Some((_, st)) = &origin_vol {
                    let _q = st.gate.write().unwrap_or_else(|e| e.into_inner());
                    return self.device_message(
                        |meta| meta.md.create_snap(id, origin),
                        |_| {
                            (
                                format!("thin{}", id.0),
                                st.size_bytes.load(Ordering::SeqCst),
                                origin_vol.as_ref().map(|o| o.0.clone()),
                            )
                        },
                    );
                }
                let size = self.status().total_data_blocks * self.inner.block_size;
                self.device_message(
                    |meta| meta.md.create_snap(id, origin),
                    |_| (format!("thin{}", id.0), size, None),
                )
            }
            Some("delete") => {
                argc(1)?;
                let id = DevId(num(1)?);
                match self.volume_of(id) {
                    Some((name, _)) => self.delete_volume(&name).map(|()| String::new()),
                    None => Err(PoolError::Metadata(crate::Error::UnknownDevice(id))),
                }
            }
            Some("set_transaction_id") => {
                argc(2)?;
                let (old, new) = (num(1)?, num(2)?);
                let mut meta = self.inner.meta();
                self.inner.check_writable(&meta)?;
                // A wrong OLD is refused with nothing changed; the id lives in the metadata
                // only (pool.json's copy is informational), committed now as the kernel does.
                meta.md.set_transaction_id(old, new)?;
                let (mut meta, r) = self.inner.commit_locked(meta);
                r?;
                meta.config.transaction_id = new;
                Ok(String::new())
            }
            Some("reserve_metadata_snap") => {
                argc(0)?;
                self.metadata_snap(true).map(|b| b.map_or(String::new(), |b| b.to_string()))
            }
            Some("release_metadata_snap") => {
                argc(0)?;
                self.metadata_snap(false).map(|_| String::new())
            }
            _ => Err(PoolError::Invalid(format!("unknown message {text:?}"))),
        }
    }

    /// Reserves (`reserve`) or releases the metadata snapshot. Refused, with nothing
    /// changed, when one is held already (reserve) or none is (release). Both commit the
    /// metadata inside: everything before them is committed first through the pool's
    /// commit (the data sync, then the metadata), so that their commits hold only the
    /// snapshot's own change.
    fn metadata_snap(&self, reserve: bool) -> Result<Option<u64>> {
        let mut meta = self.inner.settled(self.inner.meta(), None);
        self.inner.check_writable(&meta)?;
        let held = meta.md.status().held_root;
        match (reserve, held) {
            (true, Some(b)) => {
                return Err(PoolError::Metadata(crate::Error::MetadataSnapExists(
                    crate::units::MetaBlock(b),
                )))
            }
            (false, None) => return Err(PoolError::Metadata(crate::Error::NoMetadataSnap)),
            _ => {}
        }
        loop {
            let (m, r) = self.inner.commit_locked(meta);
            meta = m;
            r?;
            // Mappings parked during that commit's data sync joined the next transaction:
            // commit again until nothing is left uncommitted.
            let writes = self.inner.data_writes.load(Ordering::SeqCst);
            if !meta.md.has_changes() && writes == meta.committed_writes {
                break;
            }
            meta = self.inner.settled(meta, None);
        }
        let r = if reserve {
            meta.md.reserve_metadata_snap().map(|b| Some(b.0))
        } else {
            meta.md.release_metadata_snap().map(|()| None)
        };
        r.map_err(|e| self.inner.metadata_failed(&mut meta, e))
    }

    fn volume_of(&self, id: DevId) -> Option<(String, Arc<VolumeState>)> {
        let vols = self.inner.volumes.read().unwrap_or_else(|e| e.into_inner());
        vols.iter().find(|(_, s)| s.dev == id.0).map(|(n, s)| (n.clone(), s.clone()))
    }

    fn device_message(
        &self,
        op: impl FnOnce(&mut Meta) -> crate::Result<()>,
        volume: impl FnOnce(&Meta) -> (String, u64, Option<String>),
    ) -> Result<String> {
        let mut meta = self.inner.settled(self.inner.meta(), None);
        self.inner.check_writable(&meta)?;
        op(&mut meta).map_err(|e| match e {
            e @ (crate::Error::DeviceExists(_)
            | crate::Error::UnknownDevice(_)
            | crate::Error::Invalid(_)) => PoolError::Metadata(e),
            e => self.inner.metadata_failed(&mut meta, e),
        })?;
        let (mut name, size, snapshot_of) = volume(&meta);
        while meta.config.volumes.contains_key(&name) {
            name.push('_');
        }
        let ids = meta.md.device_ids();
        let id =
            ids.iter().copied().find(|d| !meta.config.volumes.values().any(|v| v.dev_id == d.0));
        let id = id.ok_or_else(|| PoolError::Invalid("the new device has no id".into()))?;
        let v = VolumeConfig {
            dev_id: id.0,
            size_bytes: size,
            read_only: false,
            snapshot_of,
            origin_deleted: false,
        };
        self.add_volume(meta, &name, v)?;
        Ok(name)
    }
}
