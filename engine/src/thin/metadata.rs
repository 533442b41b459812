//! Opening, formatting and committing thin metadata; status figures.

use super::{DETAILS, TOP};
use crate::btree;
use crate::error::{Error, Result};
use crate::format::superblock::{Superblock, SUPERBLOCK_MAGIC, SUPERBLOCK_VERSION};
use crate::format::thin::DeviceDetails;
use crate::format::BlockKind;
use crate::io::BlockDevice;
use crate::limits::{
    DEFAULT_CACHE_BYTES, MAX_DATA_BLOCK_SECTORS, MAX_METADATA_BLOCKS, MIN_DATA_BLOCK_SECTORS,
};
use crate::transaction_manager::TransactionManager;
use crate::units::{DataBlock, DevId, MetaBlock};
use std::collections::BTreeMap;
use std::sync::Arc;

/// How to open existing metadata.
#[derive(Debug, Clone, Copy)]
pub struct OpenOptions {
    /// Refuse every change; allowed even when needs_check is set.
    pub read_only: bool,
    /// Open read-write although needs_check is set: the caller is a repair tool.
    pub repair: bool,
    pub cache_bytes: usize,
}

impl Default for OpenOptions {
    fn default() -> Self {
        OpenOptions { read_only: false, repair: false, cache_bytes: DEFAULT_CACHE_BYTES }
    }
}

/// A device's details as kept in memory during a transaction.
#[derive(Debug, Clone, Copy)]
pub(crate) struct DeviceState {
    pub details: DeviceDetails,
    /// Root of the device's bottom tree: always the value its top-level leaf holds (updated
    /// by create, snapshot and every edit), so lookups skip the top-level walk.
    pub root: MetaBlock,
    /// Changed since the last commit: written into the details tree at commit.
    pub dirty: bool,
    /// `ThinMetadata::edit_clock` at the device's last mapping change (or creation): what
    /// `usage` keys a device's cached exclusive count by.
    pub last_edit: u64,
}

/// The kernel's thin-pool status figures (plus what thin_ls shows per device).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Status {
    pub transaction_id: u64,
    pub used_metadata_blocks: u64,
    pub total_metadata_blocks: u64,
    pub used_data_blocks: u64,
    pub total_data_blocks: u64,
    /// Block of the held metadata snapshot, if any.
    pub held_root: Option<u64>,
    pub needs_check: bool,
    pub read_only: bool,
    pub data_block_size_sectors: u32,
}

pub struct ThinMetadata {
    pub(crate) tm: TransactionManager,
    pub(crate) sb: Superblock,
    pub(crate) devices: BTreeMap<DevId, DeviceState>,
    pub(crate) read_only: bool,
    /// Something changed since the last commit.
    pub(crate) changed: bool,
    /// Ticks once per device creation or mapping edit (see `DeviceState::last_edit`).
    pub(crate) edit_clock: u64,
    /// Exclusive-block counts by device, with the epoch each was computed at (`usage`).
    pub(crate) usage: super::usage::UsageCache,
}

fn check_data_block_size(sectors: u32) -> Result<()> {
    if !(MIN_DATA_BLOCK_SECTORS..=MAX_DATA_BLOCK_SECTORS).contains(&sectors)
        || !sectors.is_multiple_of(128)
    {
        return Err(Error::Invalid(format!(
            "data block size {sectors} sectors: must be a multiple of 128 between \
             {MIN_DATA_BLOCK_SECTORS} and {MAX_DATA_BLOCK_SECTORS}"
        )));
    }
    Ok(())
}

/// Reads and validates the superblock of a metadata device.
pub(crate) fn read_superblock(dev: &Arc<dyn BlockDevice>) -> Result<Superblock> {
    if dev.nr_blocks() == 0 {
        return Err(Error::BadSuperblock("the metadata device is empty".into()));
    }
    let mut raw = [0u8; crate::limits::META_BLOCK_SIZE];
    dev.read_block(0, &mut raw).map_err(|e| Error::io("reading the superblock", e))?;
    if raw.iter().all(|&b| b == 0) {
        return Err(Error::BadSuperblock(
            "block 0 is all zeros: the metadata is not formatted".into(),
        ));
    }
    crate::format::checksum::verify(&raw, MetaBlock(0), BlockKind::Superblock).map_err(|e| {
        Error::BadSuperblock(format!("not dm-thin metadata, or a damaged superblock: {e}"))
    })?;
    Ok(Superblock::decode(&raw))
}

impl ThinMetadata {
    /// Formats `dev` as empty pool metadata for `nr_data_blocks` blocks of
    /// `data_block_size_sectors`, and commits.
    pub fn format(
        dev: Arc<dyn BlockDevice>,
        data_block_size_sectors: u32,
        nr_data_blocks: u64,
        cache_bytes: usize,
    ) -> Result<Self> {
        check_data_block_size(data_block_size_sectors)?;
        let nr_meta = dev.nr_blocks().min(MAX_METADATA_BLOCKS);
        let mut tm = TransactionManager::format(dev, nr_data_blocks, cache_bytes)?;
        let top = btree::empty_tree(&mut tm, TOP)?;
        let details = btree::empty_tree(&mut tm, DETAILS)?;
        let sb = Superblock {
            magic: SUPERBLOCK_MAGIC,
            version: SUPERBLOCK_VERSION,
            data_mapping_root: top,
            device_details_root: details,
            data_block_size_sectors,
            metadata_block_size_sectors: 8,
            metadata_nr_blocks: nr_meta,
            ..Superblock::default()
        };
        let mut md = ThinMetadata {
            tm,
            sb,
            devices: BTreeMap::new(),
            read_only: false,
            changed: true,
            edit_clock: 0,
            usage: Default::default(),
        };
        md.commit()?;
        Ok(md)
    }

    /// Opens metadata written by thinly, thin_restore or the kernel.
    pub fn open(dev: Arc<dyn BlockDevice>, opts: OpenOptions) -> Result<Self> {
        let sb = read_superblock(&dev)?;
        sb.validate(!opts.read_only)?;
        if sb.needs_check() && !opts.read_only && !opts.repair {
            return Err(Error::NeedsCheck);
        }
        check_data_block_size(sb.data_block_size_sectors)
            .map_err(|e| Error::BadSuperblock(e.to_string()))?;
        let tm = TransactionManager::open(dev, &sb, opts.cache_bytes)?;
        let mut md = ThinMetadata {
            tm,
            sb,
            devices: BTreeMap::new(),
            read_only: opts.read_only,
            changed: false,
            edit_clock: 0,
            usage: Default::default(),
        };
        md.devices = md.load_devices()?;
        Ok(md)
    }

    fn load_devices(&mut self) -> Result<BTreeMap<DevId, DeviceState>> {
        let mut details = BTreeMap::new();
        btree::for_each(
            &mut self.tm,
            self.sb.device_details_root,
            DETAILS,
            0,
            u64::MAX,
            &mut |k, v| {
                details.insert(DevId(k), DeviceDetails::decode(v));
                Ok(())
            },
        )?;
        // Every device of the mapping tree needs details (and vice versa) to be usable.
        let mut devices = BTreeMap::new();
        let mut nr_top = 0;
        btree::for_each(&mut self.tm, self.sb.data_mapping_root, TOP, 0, u64::MAX, &mut |k, v| {
            nr_top += 1;
            let root = MetaBlock(crate::format::le_u64(v, 0));
            if let Some(d) = details.get(&DevId(k)) {
                devices.insert(
                    DevId(k),
                    DeviceState { details: *d, root, dirty: false, last_edit: 0 },
                );
            }
            Ok(())
        })?;
        if devices.len() != details.len() || nr_top != details.len() {
            return Err(Error::corrupt(
                self.sb.device_details_root,
                "device details",
                "the details tree and the mapping tree list different devices",
            ));
        }
        Ok(devices)
    }

    /// Every change starts here: refused when read-only or poisoned; remembered otherwise.
    pub(crate) fn begin_change(&mut self) -> Result<()> {
        self.check_writable()?;
        self.changed = true;
        Ok(())
    }

    /// Has anything changed since the last commit?
    pub fn has_changes(&self) -> bool {
        self.changed
    }

    pub(crate) fn check_writable(&self) -> Result<()> {
        if self.read_only {
            return Err(Error::ReadOnly);
        }
        if self.tm.is_poisoned() {
            return Err(Error::Poisoned);
        }
        Ok(())
    }

    /// Commits: device details into the details tree, then the transaction (spec §6.5).
    /// Returns the data blocks the transaction freed (reusable from now on).
    pub fn commit(&mut self) -> Result<Vec<DataBlock>> {
        self.check_writable()?;
        let dirty: Vec<(DevId, DeviceDetails)> =
            self.devices.iter().filter(|(_, d)| d.dirty).map(|(id, d)| (*id, d.details)).collect();
        for (id, details) in dirty {
            let root = self.sb.device_details_root;
            self.sb.device_details_root =
                btree::insert(&mut self.tm, root, DETAILS, id.0, &details.to_bytes())?.0;
        }
        let freed = self.tm.commit(&mut self.sb)?;
        for d in self.devices.values_mut() {
            d.dirty = false;
        }
        self.changed = false;
        Ok(freed.into_iter().map(DataBlock).collect())
    }

    /// Drops everything since the last commit by reloading the committed state.
    pub fn abort(&mut self) -> Result<()> {
        let bm = self.tm.block_manager();
        let (dev, cache_bytes) = (bm.device().clone(), bm.cache_bytes());
        // `repair`: the failure path aborts, then sets needs_check; a later abort must still open.
        let opts = OpenOptions { read_only: self.read_only, repair: true, cache_bytes };
        *self = Self::open(dev, opts)?;
        Ok(())
    }

    pub fn data_block_size_sectors(&self) -> u32 {
        self.sb.data_block_size_sectors
    }

    pub fn time(&self) -> u32 {
        self.sb.time
    }

    pub fn transaction_id(&self) -> u64 {
        self.sb.trans_id
    }

    pub fn is_read_only(&self) -> bool {
        self.read_only
    }

    pub fn nr_data_blocks(&self) -> u64 {
        self.tm.data_sm().nr_blocks()
    }

    pub fn nr_free_data_blocks(&self) -> u64 {
        self.tm.data_sm().nr_free()
    }

    /// Data blocks that can be allocated before the next commit (blocks freed in this
    /// transaction become available only after it).
    pub fn nr_allocatable_data_blocks(&self) -> u64 {
        self.tm.data_sm().nr_allocatable()
    }

    pub fn status(&self) -> Status {
        let meta = self.tm.metadata_sm();
        let data = self.tm.data_sm();
        Status {
            transaction_id: self.sb.trans_id,
            used_metadata_blocks: meta.nr_allocated(),
            total_metadata_blocks: meta.nr_blocks(),
            used_data_blocks: data.nr_allocated(),
            total_data_blocks: data.nr_blocks(),
            held_root: (self.sb.held_root.0 != 0).then_some(self.sb.held_root.0),
            needs_check: self.sb.needs_check(),
            read_only: self.read_only,
            data_block_size_sectors: self.sb.data_block_size_sectors,
        }
    }

    /// Sets the needs_check flag and writes it at once (as the kernel does after a metadata
    /// failure). From now on the metadata opens read-write only after a repair.
    pub fn set_needs_check(&mut self) -> Result<()> {
        self.sb.flags |= crate::format::superblock::FLAG_NEEDS_CHECK;
        self.commit().map(drop)
    }

    /// Allocates a data block (count 1) for a new mapping.
    pub fn alloc_data_block(&mut self) -> Result<DataBlock> {
        self.begin_change()?;
        self.tm.data_sm_mut().alloc().map(DataBlock)
    }

    /// Sets a reference count directly (repair tools only: the caller knows the right count).
    pub(crate) fn set_ref_count(&mut self, data: bool, block: u64, count: u32) -> Result<()> {
        self.begin_change()?;
        if data {
            self.tm.data_sm_mut().set(block, count)
        } else {
            self.tm.metadata_sm_mut().set(block, count)
        }
    }

    /// Clears needs_check; it is written with the next commit.
    pub fn clear_needs_check(&mut self) {
        self.sb.flags &= !crate::format::superblock::FLAG_NEEDS_CHECK;
        self.changed = true;
    }

    /// Allocates the given free data block (count 0 → 1), e.g. one held out of a commit.
    pub fn take_data_block(&mut self, b: DataBlock) -> Result<()> {
        self.begin_change()?;
        let sm = self.tm.data_sm_mut();
        if sm.get(b.0)? != 0 {
            return Err(Error::RefCount {
                space: "data",
                block: b.0,
                reason: "taking a block that is in use".into(),
            });
        }
        sm.set(b.0, 1)
    }

    /// Gives back a data block from `alloc_data_block` that was never mapped.
    pub fn release_data_block(&mut self, b: DataBlock) -> Result<()> {
        self.begin_change()?;
        self.tm.data_sm_mut().dec(b.0).map(drop)
    }

    /// Runs (first block, count) of free data blocks.
    pub fn free_data_runs(&self) -> Vec<(DataBlock, u64)> {
        self.tm.data_sm().free_runs().into_iter().map(|(b, n)| (DataBlock(b), n)).collect()
    }

    /// Reference count of a data block (number of distinct leaves mapping it).
    pub fn data_block_ref_count(&self, b: DataBlock) -> Result<u32> {
        self.tm.data_sm().get(b.0)
    }

    /// Grows the data space map to `nr_blocks` (spec §6.8); refuses to shrink.
    pub fn resize_data(&mut self, nr_blocks: u64) -> Result<()> {
        self.begin_change()?;
        self.tm.extend_data(nr_blocks)
    }

    /// Grows the metadata space map to the device's current size (the caller grew it).
    pub fn resize_metadata(&mut self) -> Result<()> {
        self.begin_change()?;
        let n = self.tm.block_manager().nr_blocks();
        self.tm.extend_metadata(n)
    }

    /// Internal access for the checker and the tools.
    pub fn superblock(&self) -> &Superblock {
        &self.sb
    }

    pub fn transaction_manager(&mut self) -> &mut TransactionManager {
        &mut self.tm
    }
}
