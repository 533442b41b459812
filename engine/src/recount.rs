//! Recount: walk everything reachable from a superblock, recompute every metadata and data
//! reference count (spec §5.5, §10), check every node's shape (§4.4), and compare with what
//! the space maps say. The internal checker and the tests are built on it.

use crate::block_manager::ReadBlocks;
use crate::btree::{walk_nodes, ValueKind};
use crate::error::Result;
use crate::format::node;
use crate::format::space_map::decode_index_block;
use crate::format::superblock::Superblock;
use crate::format::thin::BlockTime;
use crate::format::BlockKind;
use crate::limits::ENTRIES_PER_BITMAP;
use crate::space_map::disk::{load_data_index, INDEX_ENTRY, REF_COUNT};
use crate::space_map::SpaceMap;
use crate::units::MetaBlock;
use std::collections::{BTreeMap, HashSet};
use std::fmt;

/// One thing found wrong, with where.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    pub block: Option<MetaBlock>,
    /// The thin device whose tree the problem was found in.
    pub device: Option<u64>,
    pub message: String,
    /// Leaks are not fatal (thin_check grades them so); everything else is.
    pub fatal: bool,
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if let Some(d) = self.device {
            write!(f, "device {d}: ")?;
        }
        match self.block {
            Some(b) => write!(f, "block {b}: {}", self.message),
            None => f.write_str(&self.message),
        }
    }
}

/// Reference counts computed by walking, plus the structural problems seen on the way.
#[derive(Default)]
pub struct RefCounter {
    pub meta: BTreeMap<u64, u32>,
    pub data: BTreeMap<u64, u32>,
    seen: HashSet<u64>,
    pub problems: Vec<Problem>,
    /// Data blocks at or past this are reported (the data space map's size).
    pub nr_data_blocks: Option<u64>,
    /// The device whose bottom tree is being walked (for attributing problems).
    pub current_device: Option<u64>,
    /// Bottom-level roots met in top-level leaves: (device id, root).
    pub subtree_roots: Vec<(u64, MetaBlock)>,
}

impl RefCounter {
    pub fn new() -> Self {
        Self::default()
    }

    fn problem(&mut self, block: Option<MetaBlock>, message: impl Into<String>) {
        let device = self.current_device;
        self.problems.push(Problem { block, device, message: message.into(), fatal: true });
    }

    /// Counts one reference to a metadata block that is not a tree node.
    pub fn add_meta(&mut self, b: MetaBlock) {
        *self.meta.entry(b.0).or_default() += 1;
    }

    /// Counts one reference to the tree at `root` and, the first time the walk meets a node,
    /// everything it references. Structural problems are recorded, not returned.
    pub fn add_tree<R: ReadBlocks + ?Sized>(
        &mut self,
        r: &mut R,
        root: MetaBlock,
        kind: ValueKind,
    ) {
        let mut subtrees = Vec::new();
        let mut leaf_depth = None;
        let res = walk_nodes(r, root, &mut |v| {
            *self.meta.entry(v.block.0).or_default() += 1;
            if !self.seen.insert(v.block.0) {
                return Ok(false);
            }
            self.check_node(v, kind, &mut leaf_depth);
            if node::is_leaf(v.data) {
                for i in 0..node::nr_entries(v.data) {
                    let val = node::value(v.data, i);
                    match kind {
                        ValueKind::BlockTime => {
                            let bt = BlockTime::unpack(le8(val));
                            if self.nr_data_blocks.is_some_and(|n| bt.block >= n) {
                                self.problem(
                                    Some(v.block),
                                    format!(
                                        "mapping to data block {} beyond the data device",
                                        bt.block
                                    ),
                                );
                            }
                            *self.data.entry(bt.block).or_default() += 1;
                        }
                        ValueKind::SubtreeRoot => {
                            subtrees.push((node::key(v.data, i), MetaBlock(le8(val))))
                        }
                        ValueKind::Plain { .. } => {}
                    }
                }
            }
            Ok(true)
        });
        if let Err(e) = res {
            self.problem(e.block().or(Some(root)), format!("tree walk failed: {e}"));
        }
        let outer = self.current_device;
        for (dev, s) in subtrees {
            self.subtree_roots.push((dev, s));
            self.current_device = Some(dev);
            self.add_tree(r, s, ValueKind::BlockTime);
        }
        self.current_device = outer;
    }

    fn check_node(
        &mut self,
        v: &crate::btree::NodeVisit,
        kind: ValueKind,
        leaf_depth: &mut Option<usize>,
    ) {
        let b = Some(v.block);
        let d = v.data;
        let (n, max, vs) = (node::nr_entries(d), node::max_entries_of(d), node::value_size(d));
        let leaf = node::is_leaf(d);
        let expect_vs = if leaf { kind.size() } else { node::INTERNAL_VALUE_SIZE };
        if vs != expect_vs {
            self.problem(b, format!("value_size {vs}, expected {expect_vs}"));
        }
        if max % 3 != 0 || max != node::max_entries(vs) {
            self.problem(b, format!("max_entries {max} (expected {})", node::max_entries(vs)));
        }
        if !v.is_root && n < node::min_entries(max) {
            self.problem(
                b,
                format!("too few entries: {n}, expected at least {}", node::min_entries(max)),
            );
        }
        if !leaf && n == 0 {
            self.problem(b, "internal node with no entries");
        }
        for i in 0..n {
            let k = node::key(d, i);
            if i > 0 && k <= node::key(d, i - 1) {
                self.problem(b, format!("keys out of order at entry {i}"));
            }
            if k < v.lo || v.hi.is_some_and(|h| k >= h) {
                self.problem(
                    b,
                    format!("key {k} outside the range its parent gives [{}, {:?})", v.lo, v.hi),
                );
            }
        }
        if leaf {
            match *leaf_depth {
                None => *leaf_depth = Some(v.depth),
                Some(x) if x != v.depth => {
                    self.problem(b, format!("leaf at depth {} where others are at {x}", v.depth))
                }
                _ => {}
            }
        }
    }

    /// Counts the space maps' own blocks: index block / index tree, bitmaps, overflow trees.
    pub fn add_space_maps<R: ReadBlocks + ?Sized>(&mut self, r: &mut R, sb: &Superblock) {
        let m = sb.metadata_sm_root;
        self.add_meta(m.bitmap_root);
        match r.read_block(m.bitmap_root, BlockKind::Index) {
            Ok(index) => {
                let n = m.nr_blocks.div_ceil(ENTRIES_PER_BITMAP) as usize;
                for e in decode_index_block(&index[..], n.min(255)) {
                    self.add_meta(MetaBlock(e.blocknr));
                }
            }
            Err(e) => self
                .problem(e.block().or(Some(m.bitmap_root)), format!("metadata index block: {e}")),
        }
        self.add_tree(r, m.ref_count_root, REF_COUNT);
        let d = sb.data_sm_root;
        self.add_tree(r, d.bitmap_root, INDEX_ENTRY);
        match load_data_index(r, d.bitmap_root) {
            Ok(entries) => entries.iter().for_each(|e| self.add_meta(MetaBlock(e.blocknr))),
            Err(e) => {
                self.problem(e.block().or(Some(d.bitmap_root)), format!("data index tree: {e}"))
            }
        }
        self.add_tree(r, d.ref_count_root, REF_COUNT);
    }

    /// Compares the computed counts with a space map; every difference is a problem.
    pub fn compare(&mut self, sm: &SpaceMap, data: bool) {
        let computed = if data { &self.data } else { &self.meta };
        let mut diffs = Vec::new();
        for (b, got) in sm.iter_counts() {
            let want = computed.get(&b).copied().unwrap_or(0);
            if want != got {
                diffs.push(format!(
                    "{} block {b}: space map says {got}, references {want}",
                    sm.space()
                ));
            }
        }
        for (&b, &want) in computed {
            if b >= sm.nr_blocks() {
                diffs.push(format!(
                    "{} block {b} is referenced but beyond the space map",
                    sm.space()
                ));
            } else if sm.get(b).ok() == Some(0) {
                diffs
                    .push(format!("{} block {b}: space map says 0, references {want}", sm.space()));
            }
        }
        for d in diffs {
            self.problem(None, d);
        }
    }
}

fn le8(v: &[u8]) -> u64 {
    let mut a = [0u8; 8];
    a.copy_from_slice(&v[..8]);
    u64::from_le_bytes(a)
}

/// Recounts a committed image whose superblock references `mapping_kind` trees from
/// `data_mapping_root` and a details tree of `details_kind`. Returns the problems found.
pub fn recount_superblock<R: ReadBlocks + ?Sized>(
    r: &mut R,
    sb: &Superblock,
    mapping_kind: ValueKind,
    details_kind: ValueKind,
    meta_sm: &SpaceMap,
    data_sm: &SpaceMap,
) -> Result<Vec<Problem>> {
    recount_with(r, sb, mapping_kind, details_kind, meta_sm, data_sm).map(|rc| rc.problems)
}

/// As `recount_superblock`, returning the whole counter (computed counts and problems).
pub fn recount_with<R: ReadBlocks + ?Sized>(
    r: &mut R,
    sb: &Superblock,
    mapping_kind: ValueKind,
    details_kind: ValueKind,
    meta_sm: &SpaceMap,
    data_sm: &SpaceMap,
) -> Result<RefCounter> {
    let mut rc = RefCounter::new();
    rc.nr_data_blocks = Some(sb.data_sm_root.nr_blocks);
    rc.add_meta(MetaBlock(0));
    rc.add_tree(r, sb.data_mapping_root, mapping_kind);
    rc.add_tree(r, sb.device_details_root, details_kind);
    if sb.held_root.0 != 0 {
        rc.add_meta(sb.held_root);
        let held = r.read_block(sb.held_root, BlockKind::Superblock)?;
        let h = Superblock::decode(&held[..]);
        rc.add_tree(r, h.data_mapping_root, mapping_kind);
        rc.add_tree(r, h.device_details_root, details_kind);
    }
    rc.add_space_maps(r, sb);
    rc.compare(meta_sm, false);
    rc.compare(data_sm, true);
    Ok(rc)
}

/// Loads the committed state of a metadata device afresh (superblock, space maps from disk)
/// and recounts it. Trees are interpreted as the thin metadata's: a two-level mapping tree
/// and a details tree of `details_kind` values.
pub fn check_device(
    dev: std::sync::Arc<dyn crate::io::BlockDevice>,
    details_kind: ValueKind,
) -> Result<Vec<Problem>> {
    recount_device(dev, details_kind).map(|rc| rc.problems)
}

/// As `check_device`, returning the whole counter.
pub fn recount_device(
    dev: std::sync::Arc<dyn crate::io::BlockDevice>,
    details_kind: ValueKind,
) -> Result<RefCounter> {
    let mut bm = crate::block_manager::BlockManager::new(dev, crate::limits::DEFAULT_CACHE_BYTES);
    let sb = Superblock::decode(&bm.read_validated(MetaBlock(0), BlockKind::Superblock)?[..]);
    let (meta_sm, data_sm, _) = crate::space_map::disk::load(&mut bm, &sb)?;
    recount_with(&mut bm, &sb, ValueKind::SubtreeRoot, details_kind, &meta_sm, &data_sm)
}
