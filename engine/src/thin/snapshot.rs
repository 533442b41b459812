//! Metadata snapshots (spec §6.7): a superblock copy that holds the mapping and details
//! trees as they were at a commit, read-only, while the live metadata keeps changing.

use super::metadata::ThinMetadata;
use super::{BOTTOM, DETAILS, TOP};
use crate::btree;
use crate::error::{Error, Result};
use crate::format::superblock::{SmRoot, Superblock};
use crate::format::thin::{BlockTime, DeviceDetails};
use crate::format::BlockKind;
use crate::units::{DataBlock, DevId, MetaBlock, VirtBlock};
use std::collections::BTreeMap;

/// The roots a held metadata snapshot names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HeldSnapshot {
    pub block: MetaBlock,
    pub data_mapping_root: MetaBlock,
    pub device_details_root: MetaBlock,
    pub time: u32,
    pub trans_id: u64,
}

impl ThinMetadata {
    /// Commits, then takes a metadata snapshot of that commit, and commits again so the
    /// snapshot is durable. Only one can be held.
    pub fn reserve_metadata_snap(&mut self) -> Result<MetaBlock> {
        self.check_writable()?;
        if self.sb.held_root.0 != 0 {
            return Err(Error::MetadataSnapExists(self.sb.held_root));
        }
        self.begin_change()?;
        self.commit()?;
        let mut copy = self.sb.clone();
        copy.data_sm_root = SmRoot::default();
        copy.metadata_sm_root = SmRoot::default();
        copy.held_root = MetaBlock(0);
        let (h, block) = self.tm.new_block(BlockKind::Superblock)?;
        copy.encode(&mut block[..]);
        self.tm.inc(copy.data_mapping_root)?;
        self.tm.inc(copy.device_details_root)?;
        self.sb.held_root = h;
        self.commit()?;
        Ok(h)
    }

    /// Drops the held metadata snapshot, freeing what only it referenced.
    pub fn release_metadata_snap(&mut self) -> Result<()> {
        self.check_writable()?;
        let h = self.held_snapshot()?.ok_or(Error::NoMetadataSnap)?;
        self.begin_change()?;
        btree::delete_tree(&mut self.tm, h.data_mapping_root, TOP)?;
        btree::delete_tree(&mut self.tm, h.device_details_root, DETAILS)?;
        self.tm.dec(h.block)?;
        self.sb.held_root = MetaBlock(0);
        self.commit().map(drop)
    }

    /// The held metadata snapshot, if any.
    pub fn held_snapshot(&mut self) -> Result<Option<HeldSnapshot>> {
        let b = self.sb.held_root;
        if b.0 == 0 {
            return Ok(None);
        }
        let data = self.tm.read(b, BlockKind::Superblock)?;
        let s = Superblock::decode(&data[..]);
        Ok(Some(HeldSnapshot {
            block: b,
            data_mapping_root: s.data_mapping_root,
            device_details_root: s.device_details_root,
            time: s.time,
            trans_id: s.trans_id,
        }))
    }

    /// The devices of a held snapshot with their details.
    pub fn snapshot_devices(&mut self, h: &HeldSnapshot) -> Result<BTreeMap<DevId, DeviceDetails>> {
        let mut out = BTreeMap::new();
        btree::for_each(&mut self.tm, h.device_details_root, DETAILS, 0, u64::MAX, &mut |k, v| {
            out.insert(DevId(k), DeviceDetails::decode(v));
            Ok(())
        })?;
        Ok(out)
    }

    /// The mappings of `dev` in a held snapshot, as (virtual block, data block, time).
    pub fn snapshot_mappings(
        &mut self,
        h: &HeldSnapshot,
        dev: DevId,
    ) -> Result<Vec<(VirtBlock, DataBlock, u32)>> {
        let root = btree::lookup_u64(&mut self.tm, h.data_mapping_root, TOP, dev.0)?
            .map(MetaBlock)
            .ok_or(Error::UnknownDevice(dev))?;
        let mut out = Vec::new();
        btree::for_each(&mut self.tm, root, BOTTOM, 0, u64::MAX, &mut |k, v| {
            let bt = BlockTime::unpack(crate::format::le_u64(v, 0));
            out.push((VirtBlock(k), DataBlock(bt.block), bt.time));
            Ok(())
        })?;
        Ok(out)
    }
}
