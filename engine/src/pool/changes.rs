//! Changed ranges between two volumes on a live pool (incremental backup): the bytes of a
//! volume whose data blocks differ from another volume's, at data-block granularity, and
//! which volumes it makes sense to compare.
//!
//! Each call works on one consistent view: it holds the metadata mutex (after waiting for
//! parked mappings of either volume, as block_status does), so it sees the current
//! transaction, committed or not, with no write half-applied. It is bounded: at most
//! `max_ranges` ranges, and `complete_to_bytes` says where the answer stops being final
//! so the caller can continue from there in another call (between calls the volumes may
//! change; a backup diffs read-only snapshots).
//!
//! Shared ancestry: the pool records for each snapshot the volume it was taken of
//! (`snapshot_of`). Following those links from a volume leads to its *line root*: the
//! first volume that is no snapshot, or the name a deleted origin had. Two different
//! volumes share ancestry when their line roots are the same: an older snapshot of the
//! same volume, the volume a snapshot was taken of (at any distance), a snapshot of a
//! snapshot, or a sibling. Only such volumes share data blocks, so only for them is the
//! diff the set of blocks written since (for unrelated volumes it would be everything
//! mapped in either).

use super::{Pool, PoolError, Result};
use crate::units::{DevId, VirtBlock};

/// Changed byte ranges within a queried range.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ChangedRanges {
    /// (offset, length) in bytes, in order, non-empty, not adjacent, inside the query.
    pub ranges: Vec<(u64, u64)>,
    /// Bytes before this offset are described (unchanged unless in `ranges`); the end of
    /// the query unless the call stopped at `max_ranges`.
    pub complete_to_bytes: u64,
}

impl Pool {
    /// The bytes of `[offset, offset + len)` whose data blocks differ between volumes
    /// `target` and `base` (mapped in one only, or to different data blocks); at most
    /// `max_ranges` (≥ 1) ranges. Block-granular: a changed block is changed whole, clipped
    /// to the query.
    pub fn changed_ranges(
        &self,
        target: &str,
        base: &str,
        offset: u64,
        len: u64,
        max_ranges: usize,
    ) -> Result<ChangedRanges> {
        let (t, b) = (self.state_of(target)?, self.state_of(base)?);
        let end = offset
            .checked_add(len)
            .ok_or_else(|| PoolError::Invalid(format!("range {offset}+{len} overflows")))?;
        if len == 0 {
            return Ok(ChangedRanges { ranges: Vec::new(), complete_to_bytes: offset });
        }
        let bs = self.inner.block_size;
        let (first, last) = (offset / bs, end.div_ceil(bs));
        let changes = {
            let mut meta = self.inner.settled(self.inner.meta(), None);
            let r = meta.md.changed_blocks(
                DevId(t.dev),
                DevId(b.dev),
                VirtBlock(first),
                VirtBlock(last),
                max_ranges,
            );
            r.map_err(|e| self.inner.metadata_failed(&mut meta, e))?
        };
        let clip = |v: u64| v.saturating_mul(bs).clamp(offset, end);
        let ranges = changes
            .runs
            .iter()
            .map(|&(v, n)| (clip(v), clip(v + n)))
            .filter(|(s, e)| e > s)
            .map(|(s, e)| (s, e - s))
            .collect();
        Ok(ChangedRanges { ranges, complete_to_bytes: clip(changes.complete_to) })
    }

    /// The thin device id of volume `name` (a name deleted and created anew gets a new one).
    pub fn volume_dev_id(&self, name: &str) -> Result<DevId> {
        Ok(DevId(self.state_of(name)?.dev))
    }

    /// The volumes sharing ancestry with `name` (see the module doc), by name, without
    /// `name` itself.
    pub fn related_volumes(&self, name: &str) -> Result<Vec<String>> {
        let vols = self.list();
        let configs: std::collections::BTreeMap<&str, Option<&str>> =
            vols.iter().map(|(n, v)| (n.as_str(), v.snapshot_of.as_deref())).collect();
        if !configs.contains_key(name) {
            return Err(PoolError::NoVolume(name.to_string()));
        }
        let line_root = |n: &str| line_root(&configs, n);
        let root = line_root(name);
        Ok(configs
            .keys()
            .filter(|&&n| n != name && line_root(n) == root)
            .map(|n| n.to_string())
            .collect())
    }
}

/// Follows `snapshot_of` links from `name` to the first volume that is no snapshot, or to
/// the name of an origin that no longer exists.
fn line_root(configs: &std::collections::BTreeMap<&str, Option<&str>>, name: &str) -> String {
    let mut n = name;
    // At most one step per volume: a cycle of names cannot loop forever.
    for _ in 0..=configs.len() {
        match configs.get(n) {
            Some(Some(origin)) => n = origin,
            _ => break,
        }
    }
    n.to_string()
}
