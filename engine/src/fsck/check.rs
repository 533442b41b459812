//! thin_check as library code: every check of spec §7, each problem reported with the
//! block, the device and the key range it concerns, graded fatal or non-fatal as
//! thin_check grades it (a block whose space-map count is higher than its references is
//! a non-fatal leak; anything else is fatal).
//!
//! One pass over everything reachable from the superblock (and the metadata snapshot):
//! each distinct node is read once (straight from the device, no cache), its shape checked
//! (§4.4), and its references counted into flat arrays (metadata blocks, data blocks);
//! then the two space maps are decoded and compared entry by entry. Memory: 4 bytes per
//! metadata block plus 1 byte per data block (counts ≥ 255 spill into a map).

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::sync::Arc;

use super::error::{Error, Result};
use crate::block_manager::BlockManager;
use crate::format::node::{self, NodeHeader};
use crate::format::space_map::{
    decode_bitmap, decode_index_block, get_entry, IndexEntry, BITMAP_WORDS,
};
use crate::format::superblock::{SmRoot, Superblock, FLAG_NEEDS_CHECK};
use crate::format::thin::{BlockTime, DeviceDetails};
use crate::format::BlockKind;
use crate::io::{Block, BlockDevice};
use crate::limits::{ENTRIES_PER_BITMAP, MAX_BTREE_DEPTH, MAX_METADATA_BITMAPS};
use crate::units::MetaBlock;

/// What to check (thin_check's options).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CheckOptions {
    /// `--super-block-only`
    pub super_block_only: bool,
    /// `--skip-mappings`: no bottom-level trees, no space-map comparison.
    pub skip_mappings: bool,
    /// `-m`: check the metadata snapshot's trees instead (space maps skipped).
    pub metadata_snap: bool,
    /// `--override-mapping-root`: the top-level mapping tree to check instead of the
    /// superblock's (not with `metadata_snap`).
    pub override_mapping_root: Option<u64>,
    /// `--override-details-root`: the device details tree to check instead.
    pub override_details_root: Option<u64>,
}

/// One thing found wrong.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    pub block: Option<u64>,
    pub device: Option<u64>,
    /// Keys the node at `block` must hold, `[lo, hi)` (hi `None`: unbounded).
    pub keys: Option<(u64, Option<u64>)>,
    pub message: String,
    pub fatal: bool,
    /// For a count higher than the references (non-fatal): the count it should have.
    pub fix: Option<CountFix>,
}

/// A space-map count that `auto_repair` can set right.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CountFix {
    /// The data space map (else the metadata one).
    pub data: bool,
    pub block: u64,
    pub count: u32,
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if let Some(b) = self.block {
            write!(f, "block {b}: ")?;
        }
        f.write_str(&self.message)?;
        if let Some(d) = self.device {
            write!(f, " (device {d}")?;
            match self.keys {
                Some((lo, Some(hi))) => write!(f, ", keys [{lo}, {hi}))")?,
                Some((lo, None)) => write!(f, ", keys [{lo}, ..))")?,
                None => f.write_str(")")?,
            }
        } else if let Some((lo, hi)) = self.keys {
            match hi {
                Some(hi) => write!(f, " (keys [{lo}, {hi}))")?,
                None => write!(f, " (keys [{lo}, ..))")?,
            }
        }
        Ok(())
    }
}

/// What a check found.
#[derive(Debug, Clone, Default)]
pub struct CheckReport {
    /// The superblock, when its checksum was right.
    pub superblock: Option<Superblock>,
    pub problems: Vec<Problem>,
    pub nr_devices: u64,
    pub nr_mappings: u64,
    /// `-m` found no usable metadata snapshot (none held, or its superblock unreadable):
    /// 1.x then fails before printing the pool's figures.
    pub metadata_snap_unusable: bool,
}

impl CheckReport {
    pub fn has_fatal(&self) -> bool {
        self.problems.iter().any(|p| p.fatal)
    }

    /// Whether the metadata passes: no problem at all, or only non-fatal ones when
    /// `ignore_non_fatal`.
    pub fn passes(&self, ignore_non_fatal: bool) -> bool {
        if ignore_non_fatal {
            !self.has_fatal()
        } else {
            self.problems.is_empty()
        }
    }

    /// `METADATA_FREE_BLOCKS` as thin_check prints it (from the superblock's figures).
    pub fn metadata_free_blocks(&self) -> Option<u64> {
        self.superblock.as_ref().map(|sb| {
            let m = sb.metadata_sm_root;
            m.nr_blocks.saturating_sub(m.nr_allocated)
        })
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Tree {
    /// Top level of the mapping tree: values are bottom-level roots.
    Top,
    /// A bottom-level tree: values are block_time.
    Bottom,
    Details,
    /// Data space-map index tree: values are index entries referencing bitmaps.
    DataIndex,
    RefCount,
}

impl Tree {
    fn value_size(self) -> usize {
        match self {
            Tree::Top | Tree::Bottom => 8,
            Tree::Details => 24,
            Tree::DataIndex => 16,
            Tree::RefCount => 4,
        }
    }

    fn name(self) -> &'static str {
        match self {
            Tree::Top => "top-level mapping tree",
            Tree::Bottom => "mapping tree",
            Tree::Details => "device details tree",
            Tree::DataIndex => "data space map index tree",
            Tree::RefCount => "space map reference count tree",
        }
    }
}

/// Data block reference counts: a byte per block, the rare larger counts in a map.
struct DataCounts {
    small: Vec<u8>,
    big: HashMap<u64, u32>,
}

/// Data devices larger than this are counted in a map only (the dense array is
/// allocated zeroed, so untouched pages cost nothing; 1 GiB of address space at most).
pub const MAX_DENSE_DATA_BLOCKS: u64 = 1 << 30;

impl DataCounts {
    fn new(nr_blocks: u64) -> Self {
        let dense = if nr_blocks <= MAX_DENSE_DATA_BLOCKS { nr_blocks as usize } else { 0 };
        DataCounts { small: vec![0; dense], big: HashMap::new() }
    }

    fn inc(&mut self, b: u64) {
        match self.small.get_mut(b as usize) {
            Some(c) if *c < u8::MAX => *c += 1,
            _ => *self.big.entry(b).or_insert(u8::MAX as u32) += 1,
        }
    }

    fn get(&self, b: u64) -> u32 {
        match self.small.get(b as usize) {
            Some(&c) if c < u8::MAX => c as u32,
            Some(_) => self.big.get(&b).copied().unwrap_or(u8::MAX as u32) - 1,
            None => self.big.get(&b).copied().map_or(0, |c| c - u8::MAX as u32),
        }
    }
}

struct Checker<'a> {
    bm: &'a BlockManager,
    nr_meta: u64,
    meta: Vec<u32>,
    seen: Vec<u64>,
    data: DataCounts,
    nr_data_blocks: u64,
    problems: Vec<Problem>,
    device: Option<u64>,
    /// Leaf entries below each bottom-level node (shared nodes are walked once).
    entries_below: HashMap<u64, u64>,
    /// Walking the held metadata snapshot's trees: count references, compare nothing.
    counting_only: bool,
}

impl<'a> Checker<'a> {
    fn new(bm: &'a BlockManager, nr_data_blocks: u64) -> Self {
        let nr_meta = bm.nr_blocks();
        Checker {
            bm,
            nr_meta,
            meta: vec![0; nr_meta as usize],
            seen: vec![0; nr_meta.div_ceil(64) as usize],
            data: DataCounts::new(nr_data_blocks),
            nr_data_blocks,
            problems: Vec::new(),
            device: None,
            entries_below: HashMap::new(),
            counting_only: false,
        }
    }

    fn problem(&mut self, block: Option<u64>, keys: Option<(u64, Option<u64>)>, message: String) {
        self.problems.push(Problem {
            block,
            device: self.device,
            keys,
            message,
            fatal: true,
            fix: None,
        });
    }

    /// Counts one reference to a metadata block; false if it lies outside the device.
    fn add_meta(&mut self, b: u64, what: &str) -> bool {
        match self.meta.get_mut(b as usize) {
            Some(c) => {
                *c = c.saturating_add(1);
                true
            }
            None => {
                let msg = format!(
                    "{what} at block {b} is beyond the metadata device ({} blocks)",
                    self.nr_meta
                );
                self.problem(None, None, msg);
                false
            }
        }
    }

    fn first_visit(&mut self, b: u64) -> bool {
        let (w, bit) = ((b / 64) as usize, b % 64);
        let fresh = self.seen[w] & (1 << bit) == 0;
        self.seen[w] |= 1 << bit;
        fresh
    }

    fn read(&mut self, b: u64, kind: BlockKind) -> std::result::Result<Box<Block>, String> {
        self.bm.read_validated(MetaBlock(b), kind).map_err(|e| e.to_string())
    }

    /// Walks the tree at `root`; returns the number of leaf entries below it.
    fn tree(&mut self, root: u64, tree: Tree, subtrees: &mut Vec<(u64, u64)>) -> u64 {
        let mut leaf_depth = None;
        self.node(root, tree, 0, (0, None), &mut leaf_depth, subtrees)
    }

    fn node(
        &mut self,
        b: u64,
        tree: Tree,
        depth: usize,
        keys: (u64, Option<u64>),
        leaf_depth: &mut Option<usize>,
        subtrees: &mut Vec<(u64, u64)>,
    ) -> u64 {
        if !self.add_meta(b, tree.name()) {
            return 0;
        }
        if !self.first_visit(b) {
            return self.entries_below.get(&b).copied().unwrap_or(0);
        }
        if depth >= MAX_BTREE_DEPTH {
            self.problem(Some(b), Some(keys), format!("{}: too deep (a cycle?)", tree.name()));
            return 0;
        }
        let data = match self.read(b, BlockKind::Node) {
            Ok(d) => d,
            Err(e) => {
                self.problem(Some(b), Some(keys), format!("{}: {e}", tree.name()));
                return 0;
            }
        };
        let blk = &data[..];
        let h = NodeHeader::decode(blk);
        self.check_shape(b, tree, &h, depth, keys, blk);
        if h.is_leaf {
            if leaf_depth.is_some_and(|d| d != depth) {
                self.problem(Some(b), Some(keys), "leaves at different depths".into());
            }
            *leaf_depth = Some(depth);
            if h.value_size == tree.value_size() {
                self.leaf_values(b, tree, blk, h.nr_entries, subtrees);
            }
            let n = h.nr_entries as u64;
            if tree == Tree::Bottom {
                self.entries_below.insert(b, n);
            }
            return n;
        }
        let mut total = 0;
        for i in 0..h.nr_entries {
            let hi = if i + 1 < h.nr_entries { Some(node::key(blk, i + 1)) } else { keys.1 };
            let child = node::value_u64(blk, i);
            total +=
                self.node(child, tree, depth + 1, (node::key(blk, i), hi), leaf_depth, subtrees);
        }
        if tree == Tree::Bottom {
            self.entries_below.insert(b, total);
        }
        total
    }

    fn check_shape(
        &mut self,
        b: u64,
        tree: Tree,
        h: &NodeHeader,
        depth: usize,
        keys: (u64, Option<u64>),
        blk: &[u8],
    ) {
        let name = tree.name();
        let want_vs = if h.is_leaf { tree.value_size() } else { node::INTERNAL_VALUE_SIZE };
        let mut bad = Vec::new();
        if h.value_size != want_vs {
            bad.push(format!("value_size {} (expected {want_vs})", h.value_size));
        }
        if !h.max_entries.is_multiple_of(3) || h.max_entries != node::max_entries(h.value_size) {
            bad.push(format!(
                "max_entries {} (expected {})",
                h.max_entries,
                node::max_entries(h.value_size)
            ));
        }
        let min = node::min_entries(h.max_entries);
        if depth > 0 && h.nr_entries < min {
            bad.push(format!("too few entries: {}, expected at least {min}", h.nr_entries));
        }
        if !h.is_leaf && h.nr_entries == 0 {
            bad.push("internal node with no entries".into());
        }
        for i in 0..h.nr_entries {
            let k = node::key(blk, i);
            if i > 0 && k <= node::key(blk, i - 1) {
                bad.push(format!("keys out of order at entry {i} (key {k})"));
                break;
            }
            if k < keys.0 || keys.1.is_some_and(|hi| k >= hi) {
                bad.push(format!("key {k} outside the range its parent gives"));
                break;
            }
        }
        for m in bad {
            self.problem(Some(b), Some(keys), format!("{name}: {m}"));
        }
    }

    fn leaf_values(
        &mut self,
        b: u64,
        tree: Tree,
        blk: &[u8],
        n: usize,
        subtrees: &mut Vec<(u64, u64)>,
    ) {
        match tree {
            Tree::Bottom => {
                for i in 0..n {
                    let bt = BlockTime::unpack(node::value_u64(blk, i));
                    if bt.block >= self.nr_data_blocks {
                        let msg = format!(
                            "virtual block {} maps to data block {}, beyond the data device ({} blocks)",
                            node::key(blk, i),
                            bt.block,
                            self.nr_data_blocks
                        );
                        self.problem(Some(b), None, msg);
                    } else {
                        self.data.inc(bt.block);
                    }
                }
            }
            Tree::Top => {
                for i in 0..n {
                    subtrees.push((node::key(blk, i), node::value_u64(blk, i)));
                }
            }
            Tree::DataIndex => {
                for i in 0..n {
                    let e = IndexEntry::decode(node::value(blk, i));
                    self.add_meta(e.blocknr, "data space map bitmap");
                }
            }
            Tree::Details | Tree::RefCount => {}
        }
    }

    /// Walks a two-level mapping tree and a details tree; returns details and roots. Each
    /// distinct node is walked once, so the device comparisons only hold for the first
    /// trees walked: `count_held` (whose trees share nodes with the live ones) sets
    /// `counting_only` to only count the snapshot's references.
    fn mapping_trees(
        &mut self,
        top: u64,
        details_root: u64,
        walk_bottom: bool,
        report: &mut CheckReport,
    ) -> (BTreeMap<u64, DeviceDetails>, Vec<(u64, u64)>) {
        let details = self.details(details_root);
        let mut roots = Vec::new();
        self.tree(top, Tree::Top, &mut roots);
        if self.counting_only {
            for &(id, root) in &roots {
                self.device = Some(id);
                self.tree(root, Tree::Bottom, &mut Vec::new());
            }
            self.device = None;
            return (details, roots);
        }
        for (id, _) in &roots {
            if !details.contains_key(id) {
                self.device = Some(*id);
                self.problem(None, None, "in the mapping tree but has no device details".into());
            }
        }
        for id in details.keys() {
            if !roots.iter().any(|r| r.0 == *id) {
                self.device = Some(*id);
                self.problem(
                    None,
                    None,
                    "has device details but is not in the mapping tree".into(),
                );
            }
        }
        self.device = None;
        if walk_bottom {
            for &(id, root) in &roots {
                self.device = Some(id);
                let n = self.tree(root, Tree::Bottom, &mut Vec::new());
                report.nr_mappings += n;
                if let Some(d) = details.get(&id) {
                    if d.mapped_blocks != n {
                        let msg = format!(
                            "mapped_blocks is {} but the device maps {n} blocks",
                            d.mapped_blocks
                        );
                        self.problem(None, None, msg);
                    }
                }
            }
            self.device = None;
        }
        (details, roots)
    }

    fn details(&mut self, root: u64) -> BTreeMap<u64, DeviceDetails> {
        let mut out = BTreeMap::new();
        let before = self.problems.len();
        self.tree(root, Tree::Details, &mut Vec::new());
        if self.problems.len() == before {
            let mut bm_details = BTreeMap::new();
            let mut r = BlockManager::new(self.bm.device().clone(), 1 << 20);
            let walked = crate::btree::for_each(
                &mut r,
                MetaBlock(root),
                crate::thin::DETAILS,
                0,
                u64::MAX,
                &mut |k, v| {
                    bm_details.insert(k, DeviceDetails::decode(v));
                    Ok(())
                },
            );
            if walked.is_ok() {
                out = bm_details;
            }
        }
        out
    }
}

/// Checks the metadata on `dev`. `Err` only when the check itself cannot run.
pub fn check(dev: Arc<dyn BlockDevice>, opts: &CheckOptions) -> Result<CheckReport> {
    let bm = BlockManager::new(dev, 1 << 20);
    let mut report = CheckReport::default();
    let sb = match bm.read_validated(MetaBlock(0), BlockKind::Superblock) {
        Ok(raw) => Superblock::decode(&raw[..]),
        Err(e) => {
            report.problems.push(Problem {
                block: Some(0),
                device: None,
                keys: None,
                message: format!("superblock: {e}"),
                fatal: true,
                fix: None,
            });
            return Ok(report);
        }
    };
    report.superblock = Some(sb.clone());
    if opts.super_block_only {
        return Ok(report);
    }
    let mut c = Checker::new(&bm, sb.data_sm_root.nr_blocks);
    if opts.metadata_snap {
        check_snapshot(&mut c, &sb, opts, &mut report);
    } else {
        c.add_meta(0, "superblock");
        let (details, _) = c.mapping_trees(
            opts.override_mapping_root.unwrap_or(sb.data_mapping_root.0),
            opts.override_details_root.unwrap_or(sb.device_details_root.0),
            !opts.skip_mappings,
            &mut report,
        );
        report.nr_devices = details.len() as u64;
        if sb.held_root.0 != 0 {
            count_held(&mut c, &sb, &mut report);
        }
        if !opts.skip_mappings {
            space_maps(&mut c, &sb);
        }
    }
    report.problems.append(&mut c.problems);
    Ok(report)
}

fn check_snapshot(c: &mut Checker, sb: &Superblock, opts: &CheckOptions, report: &mut CheckReport) {
    let h = sb.held_root.0;
    if h == 0 {
        c.problem(None, None, "no metadata snapshot is held".into());
        report.metadata_snap_unusable = true;
        return;
    }
    match c.read(h, BlockKind::Superblock) {
        Ok(raw) => {
            let s = Superblock::decode(&raw[..]);
            let (details, _) = c.mapping_trees(
                s.data_mapping_root.0,
                s.device_details_root.0,
                !opts.skip_mappings,
                report,
            );
            report.nr_devices = details.len() as u64;
        }
        Err(e) => {
            c.problem(Some(h), None, format!("metadata snapshot: {e}"));
            report.metadata_snap_unusable = true;
        }
    }
}

fn count_held(c: &mut Checker, sb: &Superblock, report: &mut CheckReport) {
    let h = sb.held_root.0;
    if !c.add_meta(h, "metadata snapshot") {
        return;
    }
    match c.read(h, BlockKind::Superblock) {
        Ok(raw) => {
            let s = Superblock::decode(&raw[..]);
            let mut scratch = CheckReport::default();
            c.counting_only = true;
            c.mapping_trees(s.data_mapping_root.0, s.device_details_root.0, true, &mut scratch);
            c.counting_only = false;
            let _ = report;
        }
        Err(e) => c.problem(Some(h), None, format!("metadata snapshot: {e}")),
    }
}

/// Loads a space map's bitmaps (counting their blocks and trees) and compares.
fn space_maps(c: &mut Checker, sb: &Superblock) {
    let m = sb.metadata_sm_root;
    let meta_bitmaps = metadata_index(c, &m);
    let meta_overflow = ref_counts(c, m.ref_count_root.0, "metadata");
    let d = sb.data_sm_root;
    let mut idx = Vec::new();
    let before = c.problems.len();
    c.tree(d.bitmap_root.0, Tree::DataIndex, &mut Vec::new());
    if c.problems.len() == before {
        let mut r = BlockManager::new(c.bm.device().clone(), 1 << 20);
        match crate::space_map::disk::load_data_index(&mut r, d.bitmap_root) {
            Ok(e) => idx = e,
            Err(e) => c.problem(e.block().map(|b| b.0), None, format!("data space map index: {e}")),
        }
    }
    let data_overflow = ref_counts(c, d.ref_count_root.0, "data");
    if idx.len() as u64 != d.nr_blocks.div_ceil(ENTRIES_PER_BITMAP) && c.problems.len() == before {
        c.problem(
            Some(d.bitmap_root.0),
            None,
            format!("data space map: {} bitmaps for {} blocks", idx.len(), d.nr_blocks),
        );
    }
    if let Some(bitmaps) = meta_bitmaps {
        compare(c, "metadata", &bitmaps, &meta_overflow, m.nr_blocks, &|c, b| {
            c.meta.get(b as usize).copied().unwrap_or(0)
        });
        if m.nr_blocks < c.nr_meta {
            for b in m.nr_blocks..c.nr_meta {
                if c.meta[b as usize] > 0 {
                    c.problem(
                        Some(b),
                        None,
                        "metadata block in use but beyond the space map".into(),
                    );
                }
            }
        }
    }
    compare(c, "data", &idx, &data_overflow, d.nr_blocks, &|c, b| c.data.get(b));
}

fn metadata_index(c: &mut Checker, m: &SmRoot) -> Option<Vec<IndexEntry>> {
    let n = m.nr_blocks.div_ceil(ENTRIES_PER_BITMAP);
    if n > MAX_METADATA_BITMAPS || m.nr_blocks > c.nr_meta {
        c.problem(
            Some(0),
            None,
            format!("metadata space map of {} blocks does not fit the device", m.nr_blocks),
        );
        return None;
    }
    let root = m.bitmap_root.0;
    if !c.add_meta(root, "metadata space map index") {
        return None;
    }
    match c.read(root, BlockKind::Index) {
        Ok(raw) => {
            let entries = decode_index_block(&raw[..], n as usize);
            for e in &entries {
                c.add_meta(e.blocknr, "metadata space map bitmap");
            }
            Some(entries)
        }
        Err(e) => {
            c.problem(Some(root), None, format!("metadata space map index: {e}"));
            None
        }
    }
}

fn ref_counts(c: &mut Checker, root: u64, space: &str) -> HashMap<u64, u32> {
    let before = c.problems.len();
    c.tree(root, Tree::RefCount, &mut Vec::new());
    let mut out = HashMap::new();
    if c.problems.len() == before {
        let mut r = BlockManager::new(c.bm.device().clone(), 1 << 20);
        match crate::space_map::disk::load_ref_counts(&mut r, MetaBlock(root)) {
            Ok(m) => out.extend(m),
            Err(e) => c.problem(
                e.block().map(|b| b.0),
                None,
                format!("{space} reference count tree: {e}"),
            ),
        }
    }
    out
}

/// Compares a space map's counts with the references counted.
fn compare(
    c: &mut Checker,
    space: &str,
    index: &[IndexEntry],
    overflow: &HashMap<u64, u32>,
    nr_blocks: u64,
    want: &dyn Fn(&Checker, u64) -> u32,
) {
    let mut words = Box::new([0u64; BITMAP_WORDS]);
    let mut found = Vec::new();
    for (i, e) in index.iter().enumerate() {
        match c.read(e.blocknr, BlockKind::Bitmap) {
            Ok(raw) => decode_bitmap(&raw[..], &mut words),
            Err(err) => {
                c.problem(Some(e.blocknr), None, format!("{space} space map bitmap {i}: {err}"));
                continue;
            }
        }
        let base = i as u64 * ENTRIES_PER_BITMAP;
        let end = (base + ENTRIES_PER_BITMAP).min(nr_blocks);
        for b in base..end {
            let entry = get_entry(&words, (b - base) as usize);
            let got = match entry {
                3 => match overflow.get(&b) {
                    Some(&n) => n,
                    None => {
                        found.push((
                            b,
                            format!("{space} block {b}: count ≥ 3 but no reference count entry"),
                            true,
                            None,
                        ));
                        continue;
                    }
                },
                v => v as u32,
            };
            let w = want(c, b);
            if got != w {
                let leak = got > w;
                let msg = if w == 0 {
                    format!(
                        "{space} block {b} is leaked: space map says {got}, nothing references it"
                    )
                } else {
                    format!("{space} block {b}: space map says {got}, references {w}")
                };
                found.push((b, msg, !leak, leak.then_some(w)));
            }
        }
    }
    for (b, msg, fatal, fixed) in found {
        let data = space != "metadata";
        c.problems.push(Problem {
            block: (!data).then_some(b),
            device: None,
            keys: None,
            message: msg,
            fatal,
            fix: fixed.map(|count| CountFix { data, block: b, count }),
        });
    }
}

/// Clears the superblock's NEEDS_CHECK flag in place (after a clean check).
pub fn clear_needs_check(dev: &Arc<dyn BlockDevice>) -> Result<bool> {
    let mut bm = BlockManager::new(dev.clone(), 1 << 20);
    let raw = bm.read_validated(MetaBlock(0), BlockKind::Superblock)?;
    let mut sb = Superblock::decode(&raw[..]);
    if sb.flags & FLAG_NEEDS_CHECK == 0 {
        return Ok(false);
    }
    sb.flags &= !FLAG_NEEDS_CHECK;
    let mut block = *raw;
    sb.encode(&mut block);
    bm.write_superblock(&block)?;
    Ok(true)
}

/// Repairs what 1.x's `--auto-repair` repairs: counts higher than the references (leaked
/// blocks) are set to the references, and needs_check is cleared, in one commit through the
/// transaction manager. Refuses metadata with any fatal problem. Returns the counts fixed.
pub fn auto_repair(dev: Arc<dyn BlockDevice>, report: &CheckReport) -> Result<usize> {
    if report.has_fatal() {
        return Err(Error::Unusable("fatal problems need thin_repair, not --auto-repair".into()));
    }
    let fixes: Vec<CountFix> = report.problems.iter().filter_map(|p| p.fix).collect();
    let opts = crate::thin::OpenOptions { repair: true, ..Default::default() };
    let mut md = crate::thin::ThinMetadata::open(dev, opts)?;
    for f in &fixes {
        md.set_ref_count(f.data, f.block, f.count)?;
    }
    md.clear_needs_check();
    md.commit()?;
    Ok(fixes.len())
}
