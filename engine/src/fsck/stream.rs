//! Building blocks for event streams ([`MetadataVisitor`]): the in-memory builder, and two
//! adapters that make a stream look like what the 0.9.0 dumper prints after a restore —
//! [`ExpandRefs`] (splice `<def>` runs into devices) and [`Coalesce`] (merge runs whose
//! virtual and data blocks both continue with equal time).
//!
//! Memory: `Coalesce` holds one run; `ExpandRefs` holds every `<def>`'s runs (bounded by
//! [`MAX_DEF_RUNS`](super::MAX_DEF_RUNS)); `MetadataBuilder` holds everything.

use std::collections::HashMap;

use super::error::{Error, Result};
use super::ir::{Device, Item, Metadata, MetadataVisitor, Run, SharedDef, Superblock, ThinDevice};
use super::MAX_DEF_RUNS;

/// Collects a stream into a [`Metadata`]. Checks only the grammar; use
/// [`Metadata::validate`] for the meaning.
#[derive(Debug, Default)]
pub struct MetadataBuilder {
    superblock: Option<Superblock>,
    defs: Vec<SharedDef>,
    devices: Vec<ThinDevice>,
    open: Open,
    done: bool,
}

#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
enum Open {
    #[default]
    Nothing,
    Def,
    Device,
}

fn sequence<T>(event: &'static str, reason: &'static str) -> Result<T> {
    Err(Error::Sequence { event, reason })
}

impl MetadataBuilder {
    /// The collected metadata; fails if the stream stopped before `superblock_e`.
    pub fn finish(self) -> Result<Metadata> {
        match (self.superblock, self.done) {
            (Some(superblock), true) => {
                Ok(Metadata { superblock, defs: self.defs, devices: self.devices })
            }
            _ => sequence("end of input", "the superblock was never closed"),
        }
    }

    fn in_superblock(&self, event: &'static str) -> Result<()> {
        if self.superblock.is_none() || self.done {
            return sequence(event, "outside the superblock");
        }
        if self.open != Open::Nothing {
            return sequence(event, "inside a device or def");
        }
        Ok(())
    }
}

impl MetadataVisitor for MetadataBuilder {
    fn superblock_b(&mut self, sb: &Superblock) -> Result<()> {
        if self.superblock.is_some() {
            return sequence("superblock", "a second superblock");
        }
        self.superblock = Some(sb.clone());
        Ok(())
    }

    fn superblock_e(&mut self) -> Result<()> {
        self.in_superblock("superblock end")?;
        self.done = true;
        Ok(())
    }

    fn def_shared_b(&mut self, name: &str) -> Result<()> {
        self.in_superblock("def")?;
        if self.defs.iter().any(|d| d.name == name) {
            return Err(Error::DuplicateDef { name: name.into() });
        }
        self.defs.push(SharedDef { name: name.into(), runs: Vec::new() });
        self.open = Open::Def;
        Ok(())
    }

    fn def_shared_e(&mut self) -> Result<()> {
        if self.open != Open::Def {
            return sequence("def end", "no def is open");
        }
        self.open = Open::Nothing;
        Ok(())
    }

    fn device_b(&mut self, device: &Device) -> Result<()> {
        self.in_superblock("device")?;
        self.devices.push(ThinDevice { details: *device, items: Vec::new() });
        self.open = Open::Device;
        Ok(())
    }

    fn device_e(&mut self) -> Result<()> {
        if self.open != Open::Device {
            return sequence("device end", "no device is open");
        }
        self.open = Open::Nothing;
        Ok(())
    }

    fn map(&mut self, run: &Run) -> Result<()> {
        match self.open {
            Open::Def => match self.defs.last_mut() {
                Some(def) => def.runs.push(*run),
                None => return sequence("mapping", "no def is open"),
            },
            Open::Device => match self.devices.last_mut() {
                Some(dev) => dev.items.push(Item::from_run(run)),
                None => return sequence("mapping", "no device is open"),
            },
            Open::Nothing => return sequence("mapping", "outside a device or def"),
        }
        Ok(())
    }

    fn ref_shared(&mut self, name: &str) -> Result<()> {
        match (self.open, self.devices.last_mut()) {
            (Open::Device, Some(dev)) => {
                if !self.defs.iter().any(|d| d.name == name) {
                    return Err(Error::UndefinedRef { name: name.into() });
                }
                dev.items.push(Item::Ref(name.into()));
                Ok(())
            }
            _ => sequence("ref", "outside a device"),
        }
    }
}

/// Merges consecutive runs the way the dumpers do (see [`Run::continues_with`]) and
/// passes everything else through. A run never continues across a device, def or ref.
#[derive(Debug)]
pub struct Coalesce<V> {
    inner: V,
    pending: Option<Run>,
}

impl<V: MetadataVisitor> Coalesce<V> {
    pub fn new(inner: V) -> Self {
        Coalesce { inner, pending: None }
    }

    /// The wrapped visitor.
    pub fn into_inner(self) -> V {
        self.inner
    }

    fn flush(&mut self) -> Result<()> {
        match self.pending.take() {
            Some(run) => self.inner.map(&run),
            None => Ok(()),
        }
    }
}

impl<V: MetadataVisitor> MetadataVisitor for Coalesce<V> {
    fn superblock_b(&mut self, sb: &Superblock) -> Result<()> {
        self.flush()?;
        self.inner.superblock_b(sb)
    }
    fn superblock_e(&mut self) -> Result<()> {
        self.flush()?;
        self.inner.superblock_e()
    }
    fn def_shared_b(&mut self, name: &str) -> Result<()> {
        self.flush()?;
        self.inner.def_shared_b(name)
    }
    fn def_shared_e(&mut self) -> Result<()> {
        self.flush()?;
        self.inner.def_shared_e()
    }
    fn device_b(&mut self, device: &Device) -> Result<()> {
        self.flush()?;
        self.inner.device_b(device)
    }
    fn device_e(&mut self) -> Result<()> {
        self.flush()?;
        self.inner.device_e()
    }
    fn map(&mut self, run: &Run) -> Result<()> {
        match &mut self.pending {
            Some(p) if p.continues_with(run) => {
                p.len += run.len;
                Ok(())
            }
            _ => {
                self.flush()?;
                self.pending = Some(*run);
                Ok(())
            }
        }
    }
    fn ref_shared(&mut self, name: &str) -> Result<()> {
        self.flush()?;
        self.inner.ref_shared(name)
    }
    fn eof(&mut self) -> Result<()> {
        self.flush()?;
        self.inner.eof()
    }
}

/// Replaces every `ref_shared` by the runs of its `<def>` and swallows the defs, so the
/// inner visitor sees a 0.9-style stream (0.9.0 cannot express sharing in XML).
#[derive(Debug)]
pub struct ExpandRefs<V> {
    inner: V,
    defs: HashMap<String, Vec<Run>>,
    nr_def_runs: u64,
    current: Option<String>,
}

impl<V: MetadataVisitor> ExpandRefs<V> {
    pub fn new(inner: V) -> Self {
        ExpandRefs { inner, defs: HashMap::new(), nr_def_runs: 0, current: None }
    }

    /// The wrapped visitor.
    pub fn into_inner(self) -> V {
        self.inner
    }

    /// Counts a def or one of its runs against [`MAX_DEF_RUNS`].
    fn count_def_entry(&mut self) -> Result<()> {
        self.nr_def_runs += 1;
        if self.nr_def_runs > MAX_DEF_RUNS {
            return Err(Error::Invalid {
                dev_id: None,
                reason: format!("shared runs exceed the limit of {MAX_DEF_RUNS} entries"),
            });
        }
        Ok(())
    }

    /// The wrapped visitor, to bypass the expansion.
    pub fn inner_mut(&mut self) -> &mut V {
        &mut self.inner
    }
}

impl<V: MetadataVisitor> MetadataVisitor for ExpandRefs<V> {
    fn superblock_b(&mut self, sb: &Superblock) -> Result<()> {
        self.inner.superblock_b(sb)
    }
    fn superblock_e(&mut self) -> Result<()> {
        self.inner.superblock_e()
    }
    fn def_shared_b(&mut self, name: &str) -> Result<()> {
        if self.defs.contains_key(name) {
            return Err(Error::DuplicateDef { name: name.into() });
        }
        self.count_def_entry()?;
        self.defs.insert(name.into(), Vec::new());
        self.current = Some(name.into());
        Ok(())
    }
    fn def_shared_e(&mut self) -> Result<()> {
        self.current = None;
        Ok(())
    }
    fn device_b(&mut self, device: &Device) -> Result<()> {
        self.inner.device_b(device)
    }
    fn device_e(&mut self) -> Result<()> {
        self.inner.device_e()
    }
    fn map(&mut self, run: &Run) -> Result<()> {
        if self.current.is_none() {
            return self.inner.map(run);
        }
        self.count_def_entry()?;
        let current = self.current.as_deref().unwrap_or_default();
        if let Some(runs) = self.defs.get_mut(current) {
            runs.push(*run);
        }
        Ok(())
    }
    fn ref_shared(&mut self, name: &str) -> Result<()> {
        let runs = self.defs.get(name).ok_or_else(|| Error::UndefinedRef { name: name.into() })?;
        for run in runs {
            self.inner.map(run)?;
        }
        Ok(())
    }
    fn eof(&mut self) -> Result<()> {
        self.inner.eof()
    }
}

/// Joins single mappings, given in key order, into the longest runs the dumpers print
/// (both block numbers advancing by one, the same time), handing each finished run to a
/// visitor.
#[derive(Debug, Default)]
pub struct RunJoiner {
    run: Option<Run>,
}

impl RunJoiner {
    pub fn push<V: MetadataVisitor + ?Sized>(
        &mut self,
        v: &mut V,
        origin: u64,
        data: u64,
        time: u32,
    ) -> Result<()> {
        let next = Run { origin_begin: origin, data_begin: data, len: 1, time };
        match &mut self.run {
            Some(cur) if cur.continues_with(&next) => cur.len += 1,
            Some(cur) => {
                v.map(cur)?;
                *cur = next;
            }
            None => self.run = Some(next),
        }
        Ok(())
    }

    /// Hands over the last run.
    pub fn finish<V: MetadataVisitor + ?Sized>(self, v: &mut V) -> Result<()> {
        match self.run {
            Some(cur) => v.map(&cur),
            None => Ok(()),
        }
    }
}
