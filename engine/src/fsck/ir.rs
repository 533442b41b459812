//! The intermediate representation of a pool's thin metadata as the tools see it
//! (spec §8.1): superblock attributes, named shared runs (`<def>`), and devices whose
//! items are single mappings, range mappings or references to a shared run.
//!
//! Two shapes of the same thing:
//! - [`MetadataVisitor`]: a stream of events (superblock_b … superblock_e), the way
//!   thin-provisioning-tools' dumpers and restorers talk. Readers produce it, writers and
//!   the [`MetadataBuilder`](super::stream::MetadataBuilder) consume it, so a dump of
//!   tens of millions of mappings never needs them all in memory.
//! - [`Metadata`]: the whole pool in memory, for tests and small pools; [`Metadata::walk`]
//!   replays it as events.
//!
//! Numbers are the tools' raw integers (not the engine's newtypes): this is a text format
//! boundary, and [`Metadata::validate`] is where they are checked against the format.

use super::error::{Error, Result};
use super::stream::{Coalesce, ExpandRefs, MetadataBuilder};

/// The `<superblock>` element's attributes.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Superblock {
    /// Free text; both dumpers print `""` whatever the on-disk field holds.
    pub uuid: String,
    /// Pool `time`: the number of snapshots taken (spec §6.4).
    pub time: u32,
    pub transaction: u64,
    /// Absent in 1.x dumps unless NEEDS_CHECK is set; 0.9.0 restore stores 0 if absent.
    pub flags: Option<u32>,
    /// Metadata format version; 0.9.0 restore stores 1 if absent.
    pub version: Option<u32>,
    pub data_block_size: u32,
    pub nr_data_blocks: u64,
    /// Block of the metadata snapshot (`held_root`), if the XML names one.
    pub metadata_snap: Option<u64>,
}

/// The `<device>` element's attributes (the device-details value, spec §4.5).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Device {
    pub dev_id: u32,
    pub mapped_blocks: u64,
    pub transaction: u64,
    pub creation_time: u32,
    pub snap_time: u32,
}

/// `len` consecutive virtual blocks from `origin_begin` mapped to consecutive data blocks
/// from `data_begin`, all written at `time`. Invariant: `len >= 1`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Run {
    pub origin_begin: u64,
    pub data_begin: u64,
    pub len: u64,
    pub time: u32,
}

impl Run {
    /// One past the last virtual block (saturating; `validate` rejects overflow).
    pub fn origin_end(&self) -> u64 {
        self.origin_begin.saturating_add(self.len)
    }

    /// One past the last data block (saturating; `validate` rejects overflow).
    pub fn data_end(&self) -> u64 {
        self.data_begin.saturating_add(self.len)
    }

    /// True when `next` continues this run the way the dumpers coalesce: both block
    /// numbers advance by one and the time is equal.
    pub fn continues_with(&self, next: &Run) -> bool {
        self.time == next.time
            && self.origin_begin.checked_add(self.len) == Some(next.origin_begin)
            && self.data_begin.checked_add(self.len) == Some(next.data_begin)
    }
}

/// One item of a device, in document order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Item {
    /// `<single_mapping origin_block data_block time/>`
    Single { origin_block: u64, data_block: u64, time: u32 },
    /// `<range_mapping origin_begin data_begin length time/>`
    Range { origin_begin: u64, data_begin: u64, length: u64, time: u32 },
    /// `<ref name/>` (1.x): splices in the named shared run.
    Ref(String),
}

impl Item {
    /// The item as a run; a range and a single mapping are the same thing to a tree.
    pub fn run(&self) -> Option<Run> {
        match *self {
            Item::Single { origin_block, data_block, time } => {
                Some(Run { origin_begin: origin_block, data_begin: data_block, len: 1, time })
            }
            Item::Range { origin_begin, data_begin, length, time } => {
                Some(Run { origin_begin, data_begin, len: length, time })
            }
            Item::Ref(_) => None,
        }
    }

    /// The element the dumpers print for `run`: a single mapping when `len == 1`.
    pub fn from_run(run: &Run) -> Item {
        if run.len == 1 {
            Item::Single {
                origin_block: run.origin_begin,
                data_block: run.data_begin,
                time: run.time,
            }
        } else {
            Item::Range {
                origin_begin: run.origin_begin,
                data_begin: run.data_begin,
                length: run.len,
                time: run.time,
            }
        }
    }
}

/// A `<def name>`: runs stored once and spliced into devices by `<ref>`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SharedDef {
    pub name: String,
    pub runs: Vec<Run>,
}

/// A `<device>` and its items.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ThinDevice {
    pub details: Device,
    pub items: Vec<Item>,
}

/// A whole pool's metadata in memory.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Metadata {
    pub superblock: Superblock,
    pub defs: Vec<SharedDef>,
    pub devices: Vec<ThinDevice>,
}

/// Receiver of the metadata event stream, in this grammar:
/// `superblock_b (def_shared_b map* def_shared_e)* (device_b (map | ref_shared)* device_e)*
/// superblock_e eof`. An error from any method stops the producer, which returns it.
pub trait MetadataVisitor {
    fn superblock_b(&mut self, sb: &Superblock) -> Result<()>;
    fn superblock_e(&mut self) -> Result<()>;
    /// Starts a named shared run; only `map` may follow until `def_shared_e`.
    fn def_shared_b(&mut self, name: &str) -> Result<()>;
    fn def_shared_e(&mut self) -> Result<()>;
    fn device_b(&mut self, device: &Device) -> Result<()>;
    fn device_e(&mut self) -> Result<()>;
    fn map(&mut self, run: &Run) -> Result<()>;
    /// Splices the named shared run into the current device.
    fn ref_shared(&mut self, name: &str) -> Result<()>;
    /// The input is finished; writers flush here.
    fn eof(&mut self) -> Result<()> {
        Ok(())
    }
}

impl<V: MetadataVisitor + ?Sized> MetadataVisitor for &mut V {
    fn superblock_b(&mut self, sb: &Superblock) -> Result<()> {
        (**self).superblock_b(sb)
    }
    fn superblock_e(&mut self) -> Result<()> {
        (**self).superblock_e()
    }
    fn def_shared_b(&mut self, name: &str) -> Result<()> {
        (**self).def_shared_b(name)
    }
    fn def_shared_e(&mut self) -> Result<()> {
        (**self).def_shared_e()
    }
    fn device_b(&mut self, device: &Device) -> Result<()> {
        (**self).device_b(device)
    }
    fn device_e(&mut self) -> Result<()> {
        (**self).device_e()
    }
    fn map(&mut self, run: &Run) -> Result<()> {
        (**self).map(run)
    }
    fn ref_shared(&mut self, name: &str) -> Result<()> {
        (**self).ref_shared(name)
    }
    fn eof(&mut self) -> Result<()> {
        (**self).eof()
    }
}

impl Metadata {
    /// Replays the whole IR as events, ending with `eof`.
    pub fn walk<V: MetadataVisitor>(&self, v: &mut V) -> Result<()> {
        v.superblock_b(&self.superblock)?;
        for def in &self.defs {
            v.def_shared_b(&def.name)?;
            for run in &def.runs {
                v.map(run)?;
            }
            v.def_shared_e()?;
        }
        for dev in &self.devices {
            v.device_b(&dev.details)?;
            for item in &dev.items {
                match item {
                    Item::Ref(name) => v.ref_shared(name)?,
                    other => {
                        if let Some(run) = other.run() {
                            v.map(&run)?;
                        }
                    }
                }
            }
            v.device_e()?;
        }
        v.superblock_e()?;
        v.eof()
    }

    /// Number of mapped virtual blocks over all devices (refs expanded).
    pub fn nr_mappings(&self) -> u64 {
        let def_len = |name: &str| -> u64 {
            self.defs
                .iter()
                .find(|d| d.name == name)
                .map_or(0, |d| d.runs.iter().map(|r| r.len).sum())
        };
        self.devices
            .iter()
            .flat_map(|d| d.items.iter())
            .map(|item| match item {
                Item::Ref(name) => def_len(name),
                other => other.run().map_or(0, |r| r.len),
            })
            .sum()
    }

    /// What a 0.9.0 `thin_restore` followed by `thin_dump` makes of this IR: refs
    /// expanded, devices in dev_id order, runs in origin order and coalesced. Device
    /// details are kept as they are.
    pub fn normalised(&self) -> Result<Metadata> {
        let mut sorted = self.clone();
        sorted.devices.sort_by_key(|d| d.details.dev_id);
        let defs = std::mem::take(&mut sorted.defs);
        for dev in &mut sorted.devices {
            let mut runs = Vec::with_capacity(dev.items.len());
            for item in &dev.items {
                match item {
                    Item::Ref(name) => {
                        let def = defs
                            .iter()
                            .find(|d| &d.name == name)
                            .ok_or_else(|| Error::UndefinedRef { name: name.clone() })?;
                        runs.extend_from_slice(&def.runs);
                    }
                    other => runs.extend(other.run()),
                }
            }
            runs.sort_by_key(|r| r.origin_begin);
            dev.items = runs.iter().map(Item::from_run).collect();
        }
        let mut builder = MetadataBuilder::default();
        sorted.walk(&mut ExpandRefs::new(Coalesce::new(&mut builder)))?;
        builder.finish()
    }
}
