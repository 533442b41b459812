//! thin_restore as library code: a [`MetadataVisitor`] that builds binary metadata from
//! the event stream (XML, a generator, or repair's salvage) with the bulk b-tree builder.
//!
//! Each device's mapping tree is built as its mappings stream in (never all in memory);
//! a `<def>` is built once into leaves that every `<ref>` splices in (metadata count of a
//! shared leaf = number of devices referencing it). Data-block counts are +1 per entry of
//! each distinct leaf (spec §5.5). `mapped_blocks` is recomputed from the mappings, as
//! 0.9.0 does; the superblock takes `flags` and `version` from the input (version 1 when
//! absent, as 0.9.0), never a `metadata_snap` (a restored image has no held root).
//! Devices may come in any order; only their (id, root, details) are kept until the end.

use std::collections::HashMap;
use std::sync::Arc;

use super::error::{Error, Result};
use super::ir::{Device, MetadataVisitor, Run, Superblock};
use crate::btree::builder::release_leaves;
use crate::btree::{NodeRef, TreeBuilder, ValueKind};
use crate::format::superblock::{Superblock as DiskSuperblock, SUPERBLOCK_MAGIC};
use crate::format::thin::{BlockTime, DeviceDetails};
use crate::io::BlockDevice;
use crate::limits::{
    MAX_DATA_BLOCK_SECTORS, MAX_DEV_ID, MAX_METADATA_BLOCKS, MAX_TIME, MIN_DATA_BLOCK_SECTORS,
    TOOLS_CACHE_BYTES,
};
use crate::thin::{BOTTOM, DETAILS};
use crate::transaction_manager::TransactionManager;
use crate::units::MetaBlock;

/// Values given on the command line that replace the input's (thin_restore and
/// thin_repair's `--transaction-id`, `--data-block-size`, `--nr-data-blocks`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Overrides {
    pub transaction_id: Option<u64>,
    pub data_block_size: Option<u32>,
    pub nr_data_blocks: Option<u64>,
}

impl Overrides {
    /// thin_restore: each given value replaces the input's.
    pub fn apply(&self, sb: &mut Superblock) {
        if let Some(t) = self.transaction_id {
            sb.transaction = t;
        }
        if let Some(s) = self.data_block_size {
            sb.data_block_size = s;
        }
        if let Some(n) = self.nr_data_blocks {
            sb.nr_data_blocks = n;
        }
    }

    /// thin_dump and thin_repair on a readable superblock, as 1.x applies them there: the
    /// data block size is replaced; the transaction id and the data block count only grow
    /// (a smaller value would contradict what the metadata proves).
    pub fn apply_to_read(&self, sb: &mut Superblock) {
        if let Some(t) = self.transaction_id {
            sb.transaction = sb.transaction.max(t);
        }
        if let Some(s) = self.data_block_size {
            sb.data_block_size = s;
        }
        if let Some(n) = self.nr_data_blocks {
            sb.nr_data_blocks = sb.nr_data_blocks.max(n);
        }
    }
}

/// What a restore wrote.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RestoreStats {
    pub nr_devices: u64,
    pub nr_mappings: u64,
    /// Metadata blocks in use after the commit.
    pub nr_metadata_blocks_used: u64,
}

struct Def {
    leaves: Vec<NodeRef>,
    last_key: u64,
}

enum Open {
    Nothing,
    Def(String, TreeBuilder),
    Device(Device, TreeBuilder),
}

/// The restoring visitor; see the module documentation.
pub struct Restorer {
    dev: Arc<dyn BlockDevice>,
    overrides: Overrides,
    cache_bytes: usize,
    tm: Option<TransactionManager>,
    sb: Option<Superblock>,
    defs: HashMap<String, Def>,
    open: Open,
    /// (dev_id, bottom root, details) of every finished device.
    devices: Vec<(u64, MetaBlock, DeviceDetails)>,
    stats: RestoreStats,
    done: bool,
}

fn sequence(event: &'static str, reason: &'static str) -> Error {
    Error::Sequence { event, reason }
}

fn invalid(dev_id: Option<u32>, reason: impl Into<String>) -> Error {
    Error::Invalid { dev_id, reason: reason.into() }
}

impl Restorer {
    /// A restorer that formats `dev` (whose size is the metadata size, capped at the
    /// format's maximum) when the superblock arrives and commits at `superblock_e`.
    pub fn new(dev: Arc<dyn BlockDevice>, overrides: Overrides) -> Self {
        Restorer {
            dev,
            overrides,
            cache_bytes: TOOLS_CACHE_BYTES,
            tm: None,
            sb: None,
            defs: HashMap::new(),
            open: Open::Nothing,
            devices: Vec::new(),
            stats: RestoreStats::default(),
            done: false,
        }
    }

    /// Statistics; complete once the stream ended.
    pub fn stats(&self) -> RestoreStats {
        self.stats
    }

    /// True once the superblock was closed and the metadata committed.
    pub fn is_done(&self) -> bool {
        self.done
    }

    fn tm(&mut self, event: &'static str) -> Result<&mut TransactionManager> {
        self.tm.as_mut().ok_or_else(|| sequence(event, "before the superblock"))
    }

    fn builder(
        &mut self,
        event: &'static str,
    ) -> Result<(&mut TransactionManager, &mut TreeBuilder)> {
        let tm = self.tm.as_mut().ok_or_else(|| sequence(event, "before the superblock"))?;
        match &mut self.open {
            Open::Def(_, b) | Open::Device(_, b) => Ok((tm, b)),
            Open::Nothing => Err(sequence(event, "outside a device or def")),
        }
    }

    fn finish_commit(&mut self) -> Result<()> {
        let sb = self.sb.clone().ok_or_else(|| sequence("superblock end", "no superblock"))?;
        let mut devices = std::mem::take(&mut self.devices);
        devices.sort_by_key(|d| d.0);
        if let Some(w) = devices.windows(2).find(|w| w[0].0 == w[1].0) {
            return Err(invalid(Some(w[0].0 as u32), "device defined twice"));
        }
        let defs = std::mem::take(&mut self.defs);
        let nr_meta = self.dev.nr_blocks().min(MAX_METADATA_BLOCKS);
        let tm = self.tm("superblock end")?;
        let mut top = TreeBuilder::new(ValueKind::Plain { size: 8 });
        let mut details = TreeBuilder::new(DETAILS);
        for (id, root, d) in &devices {
            top.push(tm, *id, &root.0.to_le_bytes())?;
            details.push(tm, *id, &d.to_bytes())?;
        }
        let top_root = top.finish(tm)?;
        let details_root = details.finish(tm)?;
        for def in defs.values() {
            release_leaves(tm, BOTTOM, &def.leaves)?;
        }
        let mut disk = DiskSuperblock {
            flags: sb.flags.unwrap_or(0),
            magic: SUPERBLOCK_MAGIC,
            version: sb.version.unwrap_or(1),
            time: sb.time,
            trans_id: sb.transaction,
            data_mapping_root: top_root,
            device_details_root: details_root,
            data_block_size_sectors: sb.data_block_size,
            metadata_block_size_sectors: 8,
            metadata_nr_blocks: nr_meta,
            ..DiskSuperblock::default()
        };
        tm.commit(&mut disk)?;
        self.stats.nr_metadata_blocks_used = tm.metadata_sm().nr_allocated();
        self.stats.nr_devices = devices.len() as u64;
        Ok(())
    }
}

fn check_superblock(sb: &Superblock) -> Result<()> {
    let s = sb.data_block_size;
    if !(MIN_DATA_BLOCK_SECTORS..=MAX_DATA_BLOCK_SECTORS).contains(&s) || !s.is_multiple_of(128) {
        return Err(invalid(
            None,
            format!("data_block_size {s}: must be a multiple of 128 sectors in [128, 2097152]"),
        ));
    }
    if sb.nr_data_blocks > crate::limits::MAX_DATA_BLOCKS {
        return Err(invalid(None, "nr_data_blocks exceeds 2^40"));
    }
    if sb.time > MAX_TIME {
        return Err(invalid(None, "time does not fit in 24 bits"));
    }
    Ok(())
}

impl MetadataVisitor for Restorer {
    fn superblock_b(&mut self, sb: &Superblock) -> Result<()> {
        if self.sb.is_some() {
            return Err(sequence("superblock", "a second superblock"));
        }
        let mut sb = sb.clone();
        self.overrides.apply(&mut sb);
        check_superblock(&sb)?;
        // Every data bitmap is a metadata block: refuse sizes whose bitmaps cannot fit
        // (this also bounds the memory the data space map takes).
        let nr_bitmaps = sb.nr_data_blocks.div_ceil(crate::limits::ENTRIES_PER_BITMAP);
        if nr_bitmaps >= self.dev.nr_blocks() {
            return Err(invalid(
                None,
                format!(
                    "{} data blocks need {nr_bitmaps} bitmap blocks, more than the {} metadata blocks of the output",
                    sb.nr_data_blocks,
                    self.dev.nr_blocks()
                ),
            ));
        }
        let tm = TransactionManager::format(self.dev.clone(), sb.nr_data_blocks, self.cache_bytes)?;
        self.tm = Some(tm);
        self.sb = Some(sb);
        Ok(())
    }

    fn superblock_e(&mut self) -> Result<()> {
        if !matches!(self.open, Open::Nothing) {
            return Err(sequence("superblock end", "inside a device or def"));
        }
        self.finish_commit()?;
        self.done = true;
        Ok(())
    }

    fn def_shared_b(&mut self, name: &str) -> Result<()> {
        self.tm("def")?;
        if !matches!(self.open, Open::Nothing) {
            return Err(sequence("def", "inside a device or def"));
        }
        if self.defs.contains_key(name) {
            return Err(Error::DuplicateDef { name: name.into() });
        }
        self.open = Open::Def(name.into(), TreeBuilder::new(BOTTOM));
        Ok(())
    }

    fn def_shared_e(&mut self) -> Result<()> {
        let Open::Def(name, b) = std::mem::replace(&mut self.open, Open::Nothing) else {
            return Err(sequence("def end", "no def is open"));
        };
        let tm = self.tm("def end")?;
        let leaves = b.finish_leaves(tm)?;
        let last_key = match leaves.last() {
            Some(l) => {
                let data = tm.read(l.block, crate::format::BlockKind::Node)?;
                let n = crate::format::node::nr_entries(&data[..]);
                crate::format::node::key(&data[..], n.saturating_sub(1))
            }
            None => 0,
        };
        self.defs.insert(name, Def { leaves, last_key });
        Ok(())
    }

    fn device_b(&mut self, device: &Device) -> Result<()> {
        self.tm("device")?;
        if !matches!(self.open, Open::Nothing) {
            return Err(sequence("device", "inside a device or def"));
        }
        if u64::from(device.dev_id) > MAX_DEV_ID {
            return Err(invalid(Some(device.dev_id), "dev_id does not fit in 24 bits"));
        }
        self.open = Open::Device(*device, TreeBuilder::new(BOTTOM));
        Ok(())
    }

    fn device_e(&mut self) -> Result<()> {
        let Open::Device(d, b) = std::mem::replace(&mut self.open, Open::Nothing) else {
            return Err(sequence("device end", "no device is open"));
        };
        let mapped = b.nr_entries();
        let tm = self.tm("device end")?;
        let root = b.finish(tm)?;
        let details = DeviceDetails {
            mapped_blocks: mapped,
            transaction_id: d.transaction,
            creation_time: d.creation_time,
            snapshotted_time: d.snap_time,
        };
        self.stats.nr_mappings += mapped;
        self.devices.push((u64::from(d.dev_id), root, details));
        Ok(())
    }

    fn map(&mut self, run: &Run) -> Result<()> {
        let nr_data = self.sb.as_ref().map_or(0, |s| s.nr_data_blocks);
        let dev_id = match &self.open {
            Open::Device(d, _) => Some(d.dev_id),
            _ => None,
        };
        if run.len == 0
            || run.origin_begin.checked_add(run.len).is_none()
            || run.data_begin.checked_add(run.len).is_none_or(|e| e > nr_data)
        {
            return Err(invalid(
                dev_id,
                format!(
                    "mapping of {} blocks from data block {} is outside the data device ({nr_data} blocks)",
                    run.len, run.data_begin
                ),
            ));
        }
        if run.time > MAX_TIME {
            return Err(invalid(dev_id, "mapping time does not fit in 24 bits"));
        }
        let (tm, b) = self.builder("mapping")?;
        for i in 0..run.len {
            let data = run.data_begin + i;
            let v = BlockTime { block: data, time: run.time }.pack();
            b.push(tm, run.origin_begin + i, &v.to_le_bytes())
                .map_err(|e| invalid(dev_id, e.to_string()))?;
            tm.data_sm_mut().inc(data)?;
        }
        Ok(())
    }

    fn ref_shared(&mut self, name: &str) -> Result<()> {
        let Some(def) = self.defs.get(name) else {
            return Err(Error::UndefinedRef { name: name.into() });
        };
        let leaves = def.leaves.clone();
        let def_last = def.last_key;
        let (tm, b) = self.builder("ref")?;
        for (i, l) in leaves.iter().enumerate() {
            let last = leaves.get(i + 1).map_or(def_last, |n| n.key.saturating_sub(1));
            b.push_node(tm, *l, last)?;
        }
        Ok(())
    }
}

/// Restores XML from `input` into `dev`.
pub fn restore_xml<R: std::io::Read>(
    input: R,
    dev: Arc<dyn BlockDevice>,
    overrides: Overrides,
) -> Result<RestoreStats> {
    let mut r = Restorer::new(dev, overrides);
    super::xml::read_xml(input, &mut r)?;
    if !r.is_done() {
        return Err(sequence("end of input", "the superblock was never closed"));
    }
    Ok(r.stats())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::format::node;
    use crate::fsck::check::{check, CheckOptions};
    use crate::fsck::dump::{dump, DumpOptions};
    use crate::fsck::ir::{Item, Metadata, SharedDef, ThinDevice};
    use crate::fsck::stream::MetadataBuilder;
    use crate::io::MemDevice;

    fn sb(nr_data_blocks: u64) -> Superblock {
        Superblock {
            time: 3,
            transaction: 9,
            flags: Some(0),
            version: Some(2),
            data_block_size: 128,
            nr_data_blocks,
            ..Superblock::default()
        }
    }

    fn device(dev_id: u32, items: Vec<Item>) -> ThinDevice {
        ThinDevice { details: Device { dev_id, snap_time: 3, ..Device::default() }, items }
    }

    fn singles(from: u64, n: u64, data: u64) -> Vec<Item> {
        (0..n)
            .map(|i| Item::Single { origin_block: from + 2 * i, data_block: data + i, time: 1 })
            .collect()
    }

    /// Restores `md` into memory, checks it with our checker and dumps it back.
    fn restore_check_dump(md: &Metadata) -> (Arc<MemDevice>, Metadata) {
        let dev = Arc::new(MemDevice::new(4096));
        let mut r = Restorer::new(dev.clone(), Overrides::default());
        md.walk(&mut r).expect("restore");
        let report = check(dev.clone(), &CheckOptions::default()).expect("check");
        assert!(report.problems.is_empty(), "{:#?}", report.problems);
        let mut b = MetadataBuilder::default();
        dump(dev.clone(), &DumpOptions::default(), &mut b).expect("dump");
        (dev, b.finish().expect("finish"))
    }

    fn with_mapped_blocks(md: &Metadata) -> Metadata {
        let mut n = md.normalised().expect("normalise");
        for d in &mut n.devices {
            d.details.mapped_blocks = d.items.iter().filter_map(Item::run).map(|r| r.len).sum();
        }
        n
    }

    #[test]
    fn every_device_size_packs_into_nodes_that_pass_the_checker() {
        let sizes = [0u64, 1, 83, 84, 252, 253, 300, 335, 336, 504, 505, 588, 589, 63_600, 64_000];
        let devices =
            sizes.iter().enumerate().map(|(i, &n)| device(i as u32, singles(0, n, 0))).collect();
        let md = Metadata { superblock: sb(70_000), defs: Vec::new(), devices };
        let (_, back) = restore_check_dump(&md);
        assert_eq!(back, with_mapped_blocks(&md));
    }

    #[test]
    fn shared_defs_are_stored_once_and_counted_per_reference() {
        let big: Vec<Run> = (0..600)
            .map(|i| Run { origin_begin: 1000 + i, data_begin: 5000 + 2 * i, len: 1, time: 0 })
            .collect();
        let small = vec![Run { origin_begin: 2000, data_begin: 100, len: 10, time: 0 }];
        let md = Metadata {
            superblock: sb(10_000),
            defs: vec![
                SharedDef { name: "big".into(), runs: big },
                SharedDef { name: "small".into(), runs: small },
                SharedDef {
                    name: "unused".into(),
                    runs: vec![Run { origin_begin: 0, data_begin: 9000, len: 300, time: 0 }],
                },
            ],
            devices: vec![
                device(1, vec![Item::Ref("big".into())]),
                device(
                    2,
                    [singles(0, 3, 20), vec![Item::Ref("big".into())], singles(1700, 5, 40)]
                        .concat(),
                ),
                device(
                    3,
                    [vec![Item::Ref("big".into())], vec![Item::Ref("small".into())]].concat(),
                ),
                device(4, vec![Item::Ref("small".into())]),
                device(5, [singles(0, 100, 200), vec![Item::Ref("big".into())]].concat()),
            ],
        };
        let (dev, back) = restore_check_dump(&md);
        assert_eq!(back, with_mapped_blocks(&md));
        // Device 1 is exactly the def: its leaves must be shared with others (count > 1).
        let mut bm = crate::fsck::dump::reader(dev);
        let roots = crate::fsck::dump::select_roots(&mut bm, None).expect("roots");
        let tops = crate::fsck::dump::read_top_level(&mut bm, roots.mapping_root).expect("top");
        let tm = TransactionManager::open(bm.device().clone(), &roots.sb, 1 << 20).expect("open");
        let root1 = tops[&1];
        let data = bm.read(root1, crate::format::BlockKind::Node).expect("root");
        assert!(!node::is_leaf(&data[..]), "600 mappings need an internal root");
        let leaf = MetaBlock(node::value_u64(&data[..], 0));
        assert!(tm.ref_count(leaf).expect("count") >= 3, "the def's first leaf is shared");
    }
}
