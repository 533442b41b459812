//! thin_repair (and `thin_dump --repair`) as library code: salvage every mapping that
//! survives in an undamaged leaf and emit a consistent event stream, which
//! [`Restorer`](super::restore::Restorer) turns into fresh metadata (new trees, new space
//! maps) or a writer prints.
//!
//! How: (1) scan every block and keep the valid b-tree nodes (checksum, self block
//! number, header shape, increasing keys) — only blocks the metadata space map marks in
//! use when that map is readable, so stale nodes of old transactions are ignored;
//! (2) walk the superblock's trees tolerantly: a damaged node loses its subtree, whose key
//! range is remembered; (3) valid nodes no valid node references ("orphans") are put back:
//! bottom-level orphans into every device whose missing key range holds them, or, when
//! the top-level tree is lost, each orphan tree becomes a device (matched to a surviving
//! details entry by its mapping count, else given a new id); a lost superblock is
//! rebuilt as 1.x rebuilds it (`--data-block-size` required; see `recovered_superblock`)
//! and a device whose details entry is lost gets details that make every block it maps
//! count as shared (see `device_details`), so that no write after the repair can land
//! on a block a snapshot may still hold. Each device's leaves are then read in key
//! order and their entries emitted, dropping any key not above the previous one.
//! Memory: a few words per valid node and per leaf of each device, never the mappings.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;

use super::dump::ir_device;
use super::error::{Error, Result};
use super::ir::{MetadataVisitor, Superblock};
use super::restore::Overrides;
use super::stream::RunJoiner;
use crate::block_manager::BlockManager;
use crate::format::checksum;
use crate::format::node::{self, NodeHeader};
use crate::format::superblock::Superblock as DiskSuperblock;
use crate::format::thin::{BlockTime, DeviceDetails};
use crate::format::BlockKind;
use crate::io::BlockDevice;
use crate::limits::{
    MAX_BTREE_DEPTH, MAX_DATA_BLOCK_SECTORS, MAX_DEV_ID, MIN_DATA_BLOCK_SECTORS, TOOLS_CACHE_BYTES,
};
use crate::units::MetaBlock;

/// What to salvage and the values to use where the metadata lost them.
#[derive(Debug, Clone, Copy, Default)]
pub struct SalvageOptions {
    pub overrides: Overrides,
    pub dev_id: Option<u32>,
    pub skip_mappings: bool,
}

/// What a salvage found.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SalvageStats {
    pub nr_devices: u64,
    pub nr_mappings: u64,
    pub nr_valid_nodes: u64,
    /// Subtrees of the devices' trees lost to damage (before orphans were put back).
    pub nr_damaged: u64,
    /// Orphan subtrees put back.
    pub nr_reattached: u64,
    pub superblock_ok: bool,
}

/// A valid node found by the scan.
#[derive(Debug, Clone, Copy)]
struct Found {
    is_leaf: bool,
    value_size: usize,
    nr_entries: usize,
    first_key: u64,
    last_key: u64,
}

struct Salvager {
    bm: BlockManager,
    nodes: HashMap<u64, Found>,
    stats: SalvageStats,
}

/// Per device: its leaves as (first key, block), and the key ranges it lost.
#[derive(Default)]
struct DeviceTree {
    leaves: Vec<(u64, u64)>,
    lost: Vec<(u64, Option<u64>)>,
}

fn valid_node(raw: &[u8], b: u64) -> Option<Found> {
    checksum::verify(raw, MetaBlock(b), BlockKind::Node).ok()?;
    let h = NodeHeader::check(raw, MetaBlock(b)).ok()?;
    if h.max_entries != node::max_entries(h.value_size) || (!h.is_leaf && h.nr_entries == 0) {
        return None;
    }
    for i in 1..h.nr_entries {
        if node::key(raw, i) <= node::key(raw, i - 1) {
            return None;
        }
    }
    let n = h.nr_entries;
    Some(Found {
        is_leaf: h.is_leaf,
        value_size: h.value_size,
        nr_entries: n,
        first_key: if n > 0 { node::key(raw, 0) } else { 0 },
        last_key: if n > 0 { node::key(raw, n - 1) } else { 0 },
    })
}

impl Salvager {
    fn scan(dev: Arc<dyn BlockDevice>, in_use: Option<&dyn Fn(u64) -> bool>) -> Self {
        let bm = BlockManager::new(dev.clone(), TOOLS_CACHE_BYTES);
        let mut nodes = HashMap::new();
        let mut raw = [0u8; crate::limits::META_BLOCK_SIZE];
        for b in 1..dev.nr_blocks() {
            if in_use.is_some_and(|f| !f(b)) || dev.read_block(b, &mut raw).is_err() {
                continue;
            }
            if let Some(f) = valid_node(&raw, b) {
                nodes.insert(b, f);
            }
        }
        let stats = SalvageStats { nr_valid_nodes: nodes.len() as u64, ..SalvageStats::default() };
        Salvager { bm, nodes, stats }
    }

    fn node_data(&mut self, b: u64) -> Option<Arc<crate::io::Block>> {
        if !self.nodes.contains_key(&b) {
            return None;
        }
        self.bm.read(MetaBlock(b), BlockKind::Node).ok()
    }

    /// Children referenced by valid internal nodes (and subtree roots by top leaves).
    fn referenced(&mut self) -> HashSet<u64> {
        let mut out = HashSet::new();
        let internals: Vec<u64> =
            self.nodes.iter().filter(|(_, f)| !f.is_leaf).map(|(b, _)| *b).collect();
        for b in internals {
            if let Some(d) = self.node_data(b) {
                for i in 0..node::nr_entries(&d[..]) {
                    out.insert(node::value_u64(&d[..], i));
                }
            }
        }
        out
    }

    /// Leaves of the tree at `b` whose leaf values have `value_size`, tolerating damage:
    /// lost subtrees are recorded as key ranges.
    fn collect(
        &mut self,
        b: u64,
        value_size: usize,
        keys: (u64, Option<u64>),
        depth: usize,
        t: &mut DeviceTree,
    ) {
        let ok = self.nodes.get(&b).copied().filter(|f| {
            (!f.is_leaf || f.value_size == value_size)
                && f.first_key >= keys.0
                && keys.1.is_none_or(|hi| f.nr_entries == 0 || f.last_key < hi)
        });
        let (Some(f), true) = (ok, depth < MAX_BTREE_DEPTH) else {
            t.lost.push(keys);
            return;
        };
        if f.is_leaf {
            if f.nr_entries > 0 {
                t.leaves.push((f.first_key, b));
            }
            return;
        }
        let Some(d) = self.node_data(b) else {
            t.lost.push(keys);
            return;
        };
        let n = node::nr_entries(&d[..]);
        let kids: Vec<(u64, u64, Option<u64>)> = (0..n)
            .map(|i| {
                let hi = if i + 1 < n { Some(node::key(&d[..], i + 1)) } else { keys.1 };
                (node::value_u64(&d[..], i), node::key(&d[..], i), hi)
            })
            .collect();
        for (c, lo, hi) in kids {
            self.collect(c, value_size, (lo, hi), depth + 1, t);
        }
    }

    /// Every (key, value) of the 8-byte or 24-byte leaves of the tree at `root`.
    fn entries(&mut self, root: u64, value_size: usize) -> Vec<(u64, Vec<u8>)> {
        let mut t = DeviceTree::default();
        self.collect(root, value_size, (0, None), 0, &mut t);
        let mut out = Vec::new();
        for (_, leaf) in t.leaves {
            if let Some(d) = self.node_data(leaf) {
                for i in 0..node::nr_entries(&d[..]) {
                    out.push((node::key(&d[..], i), node::value(&d[..], i).to_vec()));
                }
            }
        }
        out.sort_by_key(|e| e.0);
        out.dedup_by_key(|e| e.0);
        out
    }

    /// Does the tree at `b` look like a top-level mapping tree (keys fit a device id,
    /// values are metadata blocks, most of them roots of valid 8-byte trees)?
    fn is_top_level(&mut self, b: u64) -> bool {
        let entries = self.entries(b, 8);
        let nr_blocks = self.bm.nr_blocks();
        let mut valid = 0;
        for (k, v) in &entries {
            let r = u64::from_le_bytes(v[..8].try_into().unwrap_or([0xff; 8]));
            if *k > MAX_DEV_ID || r >= nr_blocks {
                return false;
            }
            if self.nodes.get(&r).is_some_and(|f| !f.is_leaf || f.value_size == 8) {
                valid += 1;
            }
        }
        !entries.is_empty() && 2 * valid >= entries.len()
    }
}

/// Reads the superblock and, if it is usable, a predicate "metadata block in use".
fn superblock_and_usage(dev: &Arc<dyn BlockDevice>) -> (Option<DiskSuperblock>, Option<Vec<bool>>) {
    let mut bm = BlockManager::new(dev.clone(), TOOLS_CACHE_BYTES);
    let Ok(raw) = bm.read_validated(MetaBlock(0), BlockKind::Superblock) else {
        return (None, None);
    };
    let sb = DiskSuperblock::decode(&raw[..]);
    if sb.magic != crate::format::superblock::SUPERBLOCK_MAGIC {
        return (None, None);
    }
    let usage = crate::space_map::disk::load(&mut bm, &sb).ok().map(|(meta, _, _)| {
        (0..dev.nr_blocks()).map(|b| meta.get(b).map_or(true, |c| c > 0)).collect::<Vec<bool>>()
    });
    (Some(sb), usage)
}

/// Salvages `dev` into `v` (ending with `eof`); see the module documentation.
pub fn salvage<V: MetadataVisitor + ?Sized>(
    dev: Arc<dyn BlockDevice>,
    opts: &SalvageOptions,
    v: &mut V,
) -> Result<SalvageStats> {
    let (sb, usage) = superblock_and_usage(&dev);
    let filter = usage.as_ref().map(|u| move |b: u64| u.get(b as usize).copied().unwrap_or(false));
    let mut s = Salvager::scan(dev.clone(), filter.as_ref().map(|f| f as &dyn Fn(u64) -> bool));
    s.stats.superblock_ok = sb.is_some();
    if sb.is_none() && s.nodes.is_empty() {
        return Err(Error::Unusable(
            "no valid superblock and no valid b-tree node: nothing to repair".into(),
        ));
    }
    let referenced = s.referenced();

    // The top-level tree: the superblock's if it still looks like one, else the largest
    // unreferenced candidate.
    let mut top = sb.as_ref().map(|sb| sb.data_mapping_root.0).filter(|&r| s.is_top_level(r));
    if top.is_none() {
        let mut cands: Vec<u64> = s
            .nodes
            .iter()
            .filter(|(b, f)| f.value_size == 8 && !referenced.contains(b) && f.nr_entries > 0)
            .map(|(b, _)| *b)
            .collect();
        cands.sort_unstable();
        let mut best: Option<(usize, u64)> = None;
        for c in cands {
            if s.is_top_level(c) {
                let n = s.entries(c, 8).len();
                if best.is_none_or(|(m, _)| n >= m) {
                    best = Some((n, c));
                }
            }
        }
        top = best.map(|b| b.1);
    }
    let mut roots: BTreeMap<u64, u64> = BTreeMap::new();
    if let Some(t) = top {
        for (k, val) in s.entries(t, 8) {
            roots.insert(k, u64::from_le_bytes(val[..8].try_into().unwrap_or([0; 8])));
        }
    }

    // Device details: the superblock's tree, else the largest unreferenced 24-byte tree.
    let mut details: BTreeMap<u64, DeviceDetails> = BTreeMap::new();
    let mut droot =
        sb.as_ref().map(|sb| sb.device_details_root.0).filter(|r| s.nodes.contains_key(r));
    if droot.is_none() {
        droot = s
            .nodes
            .iter()
            .filter(|(b, f)| f.value_size == 24 && !referenced.contains(b))
            .max_by_key(|(b, f)| (f.nr_entries, **b))
            .map(|(b, _)| *b);
    }
    if let Some(d) = droot {
        for (k, val) in s.entries(d, 24) {
            details.insert(k, DeviceDetails::decode(&val));
        }
    }

    // Each device's leaves, and what it lost.
    let mut root_set: HashSet<u64> = roots.values().copied().collect();
    let mut trees: BTreeMap<u64, DeviceTree> = BTreeMap::new();
    for (&id, &root) in &roots {
        let mut t = DeviceTree::default();
        s.collect(root, 8, (0, None), 0, &mut t);
        trees.insert(id, t);
    }
    s.stats.nr_damaged = trees.values().map(|t| t.lost.len() as u64).sum();
    // Orphans: unreferenced mapping subtrees that are not a device root nor the top level.
    let mut orphans: Vec<u64> = s
        .nodes
        .iter()
        .filter(|(b, f)| {
            (f.value_size == 8 || !f.is_leaf)
                && f.nr_entries > 0
                && !referenced.contains(b)
                && Some(**b) != top
        })
        .map(|(b, _)| *b)
        .collect();
    orphans.sort_unstable();
    let (tops, orphans): (Vec<u64>, Vec<u64>) =
        orphans.into_iter().partition(|&o| s.is_top_level(o));
    if top.is_some() {
        // Pieces of a damaged top-level tree: their devices come back too.
        let mut added = false;
        for t in tops {
            for (k, val) in s.entries(t, 8) {
                let r = u64::from_le_bytes(val[..8].try_into().unwrap_or([0; 8]));
                root_set.insert(r);
                if let std::collections::btree_map::Entry::Vacant(e) = trees.entry(k) {
                    let mut dt = DeviceTree::default();
                    s.collect(r, 8, (0, None), 0, &mut dt);
                    e.insert(dt);
                    added = true;
                }
            }
        }
        if added {
            s.stats.nr_reattached += 1;
        }
    }
    for o in orphans.into_iter().filter(|o| !root_set.contains(o)) {
        let mut t = DeviceTree::default();
        s.collect(o, 8, (0, None), 0, &mut t);
        let (Some(first), Some(last)) =
            (t.leaves.iter().map(|l| l.0).min(), t.leaves.iter().map(|l| l.0).max())
        else {
            continue;
        };
        let mut placed = false;
        for dt in trees.values_mut() {
            let fits = dt.lost.iter().any(|&(lo, hi)| first >= lo && hi.is_none_or(|h| last < h));
            if fits {
                dt.leaves.extend_from_slice(&t.leaves);
                placed = true;
            }
        }
        if placed {
            s.stats.nr_reattached += 1;
        } else if top.is_none() {
            // No top-level tree: the orphan is a whole device.
            let n = count_entries(&mut s, &t.leaves);
            let id = details
                .iter()
                .find(|(id, d)| d.mapped_blocks == n && !trees.contains_key(id))
                .map(|(id, _)| *id)
                .unwrap_or_else(|| trees.keys().chain(details.keys()).max().map_or(0, |m| m + 1));
            trees.insert(id, t);
            s.stats.nr_reattached += 1;
        }
    }
    emit(&mut s, sb.as_ref(), &details, trees, opts, v)?;
    Ok(s.stats)
}

/// Entries in `leaves` with strictly increasing keys, read in first-key order.
fn for_each_entry(
    s: &mut Salvager,
    leaves: &[(u64, u64)],
    f: &mut dyn FnMut(u64, u64) -> Result<()>,
) -> Result<()> {
    let mut last: Option<u64> = None;
    for &(_, leaf) in leaves {
        let Some(d) = s.node_data(leaf) else { continue };
        for i in 0..node::nr_entries(&d[..]) {
            let k = node::key(&d[..], i);
            if last.is_some_and(|l| k <= l) {
                continue;
            }
            last = Some(k);
            f(k, node::value_u64(&d[..], i))?;
        }
    }
    Ok(())
}

fn count_entries(s: &mut Salvager, leaves: &[(u64, u64)]) -> u64 {
    let mut sorted = leaves.to_vec();
    sorted.sort_unstable();
    let mut n = 0;
    let _ = for_each_entry(s, &sorted, &mut |_, _| {
        n += 1;
        Ok(())
    });
    n
}

/// What the salvaged mappings say, read before anything is emitted.
#[derive(Default)]
struct MappingFacts {
    /// Mappings per device.
    counts: BTreeMap<u64, u64>,
    max_data: Option<u64>,
    max_time: Option<u32>,
}

fn mapping_facts(s: &mut Salvager, trees: &mut BTreeMap<u64, DeviceTree>) -> Result<MappingFacts> {
    let mut f = MappingFacts::default();
    for (id, t) in trees.iter_mut() {
        t.leaves.sort_unstable();
        t.leaves.dedup();
        let mut n = 0u64;
        let (mut max_data, mut max_time) = (f.max_data, f.max_time);
        for_each_entry(s, &t.leaves, &mut |_, val| {
            let bt = BlockTime::unpack(val);
            max_data = max_data.max(Some(bt.block));
            max_time = max_time.max(Some(bt.time));
            n += 1;
            Ok(())
        })?;
        (f.max_data, f.max_time) = (max_data, max_time);
        f.counts.insert(*id, n);
    }
    Ok(f)
}

/// The data block sizes dm-thin accepts: multiples of 128 sectors from 128 to 2 097 152.
pub fn valid_data_block_size(sectors: u32) -> bool {
    (MIN_DATA_BLOCK_SECTORS..=MAX_DATA_BLOCK_SECTORS).contains(&sectors)
        && sectors.is_multiple_of(MIN_DATA_BLOCK_SECTORS)
}

/// The superblock to emit. A readable superblock is kept, with the overrides applied as
/// 1.x applies them. A lost one is rebuilt as 1.x does: the data block size must be
/// given (nothing left proves it), the transaction id is one past the highest device
/// transaction, the data block count covers the highest mapped block; an override of
/// either wins only when larger. When any device lost its details, the time moves one
/// past the highest mapping time so that the details rebuilt for it (see
/// [`device_details`]) make every block it maps count as shared.
fn recovered_superblock(
    sb: Option<&DiskSuperblock>,
    details: &BTreeMap<u64, DeviceDetails>,
    trees: &BTreeMap<u64, DeviceTree>,
    facts: &MappingFacts,
    o: &Overrides,
) -> Result<Superblock> {
    if let Some(bs) = o.data_block_size.filter(|&bs| !valid_data_block_size(bs)) {
        return Err(Error::Unusable(format!("invalid data block size {bs}")));
    }
    let highest_data = facts.max_data.map_or(0, |m| m + 1);
    let mut ir = match sb {
        Some(sb) => {
            let mut ir = Superblock {
                uuid: String::new(),
                time: sb.time,
                transaction: sb.trans_id,
                flags: Some(0),
                version: Some(sb.version),
                data_block_size: sb.data_block_size_sectors,
                nr_data_blocks: sb.data_sm_root.nr_blocks.max(highest_data),
                metadata_snap: None,
            };
            o.apply_to_read(&mut ir);
            ir
        }
        None => {
            let Some(data_block_size) = o.data_block_size else {
                return Err(Error::Unusable(
                    "data block size needs to be provided due to corruption in the superblock"
                        .into(),
                ));
            };
            let tid = details.values().map(|d| d.transaction_id + 1).max().unwrap_or(0);
            Superblock {
                uuid: String::new(),
                time: details
                    .values()
                    .map(|d| d.snapshotted_time.max(d.creation_time))
                    .chain(facts.max_time)
                    .max()
                    .unwrap_or(0),
                transaction: o.transaction_id.filter(|&t| t > tid).unwrap_or(tid),
                flags: Some(0),
                version: Some(2),
                data_block_size,
                nr_data_blocks: o
                    .nr_data_blocks
                    .filter(|&n| n > highest_data)
                    .unwrap_or(highest_data),
                metadata_snap: None,
            }
        }
    };
    if trees.keys().any(|id| !details.contains_key(id)) {
        let past_mappings = facts.max_time.map_or(0, |t| t.saturating_add(1));
        ir.time = ir.time.max(past_mappings);
    }
    Ok(ir)
}

/// A device's details: the surviving entry, else rebuilt so that the kernel's sharing
/// test (a mapping is shared when its time is before the device's snapshotted_time)
/// holds for every block the device maps — a lost entry may have belonged to a
/// snapshot or an origin, and treating a shared block as exclusive would let a write
/// land on a snapshot's data. Rebuilt: transaction 0, creation_time 0, snapshotted_time
/// the superblock time (one past every mapping time, see [`recovered_superblock`]).
fn device_details(
    details: &BTreeMap<u64, DeviceDetails>,
    id: u64,
    mapped_blocks: u64,
    sb_time: u32,
) -> DeviceDetails {
    let mut d = details.get(&id).copied().unwrap_or(DeviceDetails {
        mapped_blocks: 0,
        transaction_id: 0,
        creation_time: 0,
        snapshotted_time: sb_time,
    });
    d.mapped_blocks = mapped_blocks;
    d
}

fn emit<V: MetadataVisitor + ?Sized>(
    s: &mut Salvager,
    sb: Option<&DiskSuperblock>,
    details: &BTreeMap<u64, DeviceDetails>,
    mut trees: BTreeMap<u64, DeviceTree>,
    opts: &SalvageOptions,
    v: &mut V,
) -> Result<()> {
    let facts = mapping_facts(s, &mut trees)?;
    let ir = recovered_superblock(sb, details, &trees, &facts, &opts.overrides)?;
    v.superblock_b(&ir)?;
    for (id, t) in &trees {
        if opts.dev_id.is_some_and(|want| u64::from(want) != *id) {
            continue;
        }
        let n = facts.counts.get(id).copied().unwrap_or(0);
        let d = device_details(details, *id, n, ir.time);
        v.device_b(&ir_device(*id, &d))?;
        if !opts.skip_mappings {
            let mut runs = RunJoiner::default();
            for_each_entry(s, &t.leaves, &mut |k, val| {
                let bt = BlockTime::unpack(val);
                runs.push(v, k, bt.block, bt.time)
            })?;
            runs.finish(v)?;
            s.stats.nr_mappings += d.mapped_blocks;
        }
        v.device_e()?;
        s.stats.nr_devices += 1;
    }
    v.superblock_e()?;
    v.eof()
}

/// thin_repair: salvages `input` and restores the result into `output`.
pub fn repair(
    input: Arc<dyn BlockDevice>,
    output: Arc<dyn BlockDevice>,
    overrides: Overrides,
) -> Result<SalvageStats> {
    // The salvage applies the overrides (as 1.x does on a read or rebuilt superblock).
    let mut r = super::restore::Restorer::new(output, Overrides::default());
    let opts = SalvageOptions { overrides, ..SalvageOptions::default() };
    let stats = salvage(input, &opts, &mut r)?;
    if !r.is_done() {
        return Err(Error::Unusable("repair produced no metadata".into()));
    }
    Ok(stats)
}
