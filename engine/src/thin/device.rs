//! Device operations: the pool messages create_thin, create_snap, delete and
//! set_transaction_id (spec §6.3).

use super::metadata::{DeviceState, ThinMetadata};
use super::{BOTTOM, DETAILS, TOP};
use crate::btree;
use crate::error::{Error, Result};
use crate::format::node;
use crate::format::thin::DeviceDetails;
use crate::format::BlockKind;
use crate::limits::{MAX_DEV_ID, MAX_TIME};
use crate::units::{DevId, MetaBlock};

impl ThinMetadata {
    fn check_new_id(&self, id: DevId) -> Result<()> {
        if id.0 > MAX_DEV_ID {
            return Err(Error::Invalid(format!(
                "device id {id} is larger than {MAX_DEV_ID} (24 bits)"
            )));
        }
        if self.devices.contains_key(&id) {
            return Err(Error::DeviceExists(id));
        }
        Ok(())
    }

    pub(crate) fn device(&self, id: DevId) -> Result<&DeviceState> {
        self.devices.get(&id).ok_or(Error::UnknownDevice(id))
    }

    pub(crate) fn device_mut(&mut self, id: DevId) -> Result<&mut DeviceState> {
        let d = self.devices.get_mut(&id).ok_or(Error::UnknownDevice(id))?;
        d.dirty = true;
        Ok(d)
    }

    /// The root of a device's bottom-level tree.
    pub(crate) fn device_root(&mut self, id: DevId) -> Result<MetaBlock> {
        Ok(self.device(id)?.root)
    }

    /// Creates an empty thin device.
    pub fn create_thin(&mut self, id: DevId) -> Result<()> {
        // A refused change leaves the transaction as it was: checks first.
        self.check_writable()?;
        self.check_new_id(id)?;
        self.begin_change()?;
        let root = btree::empty_tree(&mut self.tm, BOTTOM)?;
        self.insert_top(id, root)?;
        let details = DeviceDetails {
            mapped_blocks: 0,
            transaction_id: self.sb.trans_id,
            creation_time: self.sb.time,
            snapshotted_time: self.sb.time,
        };
        let last_edit = self.tick_edit_clock();
        self.devices.insert(id, DeviceState { details, root, dirty: true, last_edit });
        Ok(())
    }

    /// Creates `id` as a snapshot of `origin`: O(1), sharing the origin's whole bottom tree.
    pub fn create_snap(&mut self, id: DevId, origin: DevId) -> Result<()> {
        self.check_writable()?;
        self.check_new_id(id)?;
        let origin_details = self.device(origin)?.details;
        if self.sb.time >= MAX_TIME {
            return Err(Error::Invalid(format!(
                "the pool has taken {} snapshots, the most its 24-bit time stamps allow",
                self.sb.time
            )));
        }
        self.begin_change()?;
        let root = self.device_root(origin)?;
        self.tm.inc(root)?;
        self.insert_top(id, root)?;
        self.sb.time += 1;
        let time = self.sb.time;
        self.device_mut(origin)?.details.snapshotted_time = time;
        let details = DeviceDetails {
            mapped_blocks: origin_details.mapped_blocks,
            transaction_id: self.sb.trans_id,
            creation_time: time,
            snapshotted_time: time,
        };
        let last_edit = self.tick_edit_clock();
        self.devices.insert(id, DeviceState { details, root, dirty: true, last_edit });
        Ok(())
    }

    fn insert_top(&mut self, id: DevId, root: MetaBlock) -> Result<()> {
        let top = self.sb.data_mapping_root;
        self.sb.data_mapping_root =
            btree::insert(&mut self.tm, top, TOP, id.0, &root.0.to_le_bytes())?.0;
        Ok(())
    }

    /// Deletes a device, freeing the metadata and data blocks no other device references.
    pub fn delete(&mut self, id: DevId) -> Result<()> {
        self.check_writable()?;
        self.device(id)?;
        self.begin_change()?;
        let top = self.sb.data_mapping_root;
        self.sb.data_mapping_root = btree::remove(&mut self.tm, top, TOP, id.0)?.0;
        let details = self.sb.device_details_root;
        self.sb.device_details_root = btree::remove(&mut self.tm, details, DETAILS, id.0)?.0;
        self.devices.remove(&id);
        self.usage.forget(id);
        Ok(())
    }

    /// Sets the userspace transaction id to `new` if it is `old` now.
    /// A wrong `old` is refused before anything changes (the kernel's
    /// `set_transaction_id` message). Nothing else in thinly changes the id.
    pub fn set_transaction_id(&mut self, old: u64, new: u64) -> Result<()> {
        self.check_writable()?;
        if self.sb.trans_id != old {
            return Err(Error::TransactionId { expected: old, actual: self.sb.trans_id });
        }
        self.begin_change()?;
        self.sb.trans_id = new;
        Ok(())
    }

    /// Every device id, ascending.
    pub fn device_ids(&self) -> Vec<DevId> {
        self.devices.keys().copied().collect()
    }

    pub fn device_exists(&self, id: DevId) -> bool {
        self.devices.contains_key(&id)
    }

    pub fn device_details(&self, id: DevId) -> Result<DeviceDetails> {
        Ok(self.device(id)?.details)
    }

    /// Edits device `id`'s bottom tree with `f`, shadowing the top level's path first (the
    /// kernel's two-level insert order), and stores the new root in place.
    pub(crate) fn edit_device<T>(
        &mut self,
        id: DevId,
        f: impl FnOnce(
            &mut crate::transaction_manager::TransactionManager,
            MetaBlock,
        ) -> Result<(MetaBlock, T)>,
    ) -> Result<T> {
        let (top, at) = btree::shadow_path(&mut self.tm, self.sb.data_mapping_root, TOP, id.0)?;
        self.sb.data_mapping_root = top;
        let (leaf, i) = at.ok_or(Error::UnknownDevice(id))?;
        let old = MetaBlock(node::value_u64(&self.tm.read(leaf, BlockKind::Node)?[..], i));
        let last_edit = self.tick_edit_clock();
        if let Some(d) = self.devices.get_mut(&id) {
            d.last_edit = last_edit;
        }
        let (new, out) = f(&mut self.tm, old)?;
        if new != old {
            node::set_value_u64(self.tm.get_mut(leaf, BlockKind::Node)?, i, new.0);
            if let Some(d) = self.devices.get_mut(&id) {
                d.root = new;
            }
        }
        Ok(out)
    }
}
