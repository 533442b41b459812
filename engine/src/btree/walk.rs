//! Read-only traversal: point lookup, ordered range walk, and a node visitor for checkers.

use super::{read_node, ValueKind};
use crate::block_manager::ReadBlocks;
use crate::error::{Error, Result};
use crate::format::node;
use crate::limits::MAX_BTREE_DEPTH;
use crate::units::MetaBlock;
use std::ops::ControlFlow;

/// The visitor `walk` calls with each (key, value); `Break` stops the walk.
pub type Visitor<'a> = dyn FnMut(u64, &[u8]) -> Result<ControlFlow<()>> + 'a;

/// Looks `key` up; copies its value into `out` (which must be the value size).
/// O(depth) node reads, each a cache hit for hot trees.
pub fn lookup<R: ReadBlocks + ?Sized>(
    tm: &mut R,
    root: MetaBlock,
    kind: ValueKind,
    key: u64,
    out: &mut [u8],
) -> Result<bool> {
    lookup_depth(tm, root, kind, key, out).map(|(found, _)| found)
}

/// `lookup` that also says how many nodes it read (the depth it reached: 1 for a tree that
/// is one leaf), for the pool's statistics.
pub fn lookup_depth<R: ReadBlocks + ?Sized>(
    tm: &mut R,
    root: MetaBlock,
    kind: ValueKind,
    key: u64,
    out: &mut [u8],
) -> Result<(bool, usize)> {
    let mut b = root;
    for depth in 1..=MAX_BTREE_DEPTH {
        let data = read_node(tm, b, kind)?;
        let blk = &data[..];
        let Some(i) = node::lower_bound(blk, key) else {
            return Ok((false, depth));
        };
        if node::is_leaf(blk) {
            if node::key(blk, i) != key {
                return Ok((false, depth));
            }
            out.copy_from_slice(node::value(blk, i));
            return Ok((true, depth));
        }
        b = MetaBlock(node::value_u64(blk, i));
    }
    Err(Error::corrupt(root, "btree node", "tree deeper than any valid tree (a cycle?)"))
}

/// Lookup for trees with 8-byte values.
pub fn lookup_u64<R: ReadBlocks + ?Sized>(
    tm: &mut R,
    root: MetaBlock,
    kind: ValueKind,
    key: u64,
) -> Result<Option<u64>> {
    let mut out = [0u8; 8];
    Ok(lookup(tm, root, kind, key, &mut out)?.then(|| u64::from_le_bytes(out)))
}

/// Calls `f(key, value)` for every entry with `begin ≤ key < end`, in key order, until it
/// returns `Break`.
pub fn walk<R: ReadBlocks + ?Sized>(
    tm: &mut R,
    root: MetaBlock,
    kind: ValueKind,
    begin: u64,
    end: u64,
    f: &mut Visitor,
) -> Result<ControlFlow<()>> {
    walk_rec(tm, root, kind, begin, end, f, 0)
}

fn walk_rec<R: ReadBlocks + ?Sized>(
    tm: &mut R,
    b: MetaBlock,
    kind: ValueKind,
    begin: u64,
    end: u64,
    f: &mut Visitor,
    depth: usize,
) -> Result<ControlFlow<()>> {
    if depth >= MAX_BTREE_DEPTH {
        return Err(Error::corrupt(b, "btree node", "tree deeper than any valid tree (a cycle?)"));
    }
    let data = read_node(tm, b, kind)?;
    let blk = &data[..];
    let n = node::nr_entries(blk);
    let first = node::lower_bound(blk, begin).unwrap_or(0);
    if node::is_leaf(blk) {
        for i in first..n {
            let k = node::key(blk, i);
            if k >= end {
                break;
            }
            if k >= begin && f(k, node::value(blk, i))?.is_break() {
                return Ok(ControlFlow::Break(()));
            }
        }
        return Ok(ControlFlow::Continue(()));
    }
    for i in first..n {
        if node::key(blk, i) >= end {
            break;
        }
        let child = MetaBlock(node::value_u64(blk, i));
        if walk_rec(tm, child, kind, begin, end, f, depth + 1)?.is_break() {
            return Ok(ControlFlow::Break(()));
        }
    }
    Ok(ControlFlow::Continue(()))
}

/// What a node visitor sees.
pub struct NodeVisit<'a> {
    pub block: MetaBlock,
    pub data: &'a [u8],
    pub depth: usize,
    pub is_root: bool,
    /// Keys of this node must lie in [lo, hi) (hi = None: unbounded).
    pub lo: u64,
    pub hi: Option<u64>,
}

/// Visits every node of a tree, parents before children. `f` returns whether to descend
/// into the node's children (false for a node already seen through another parent).
pub fn walk_nodes<R: ReadBlocks + ?Sized>(
    tm: &mut R,
    root: MetaBlock,
    f: &mut dyn FnMut(&NodeVisit) -> Result<bool>,
) -> Result<()> {
    nodes_rec(tm, root, 0, 0, None, f)
}

fn nodes_rec<R: ReadBlocks + ?Sized>(
    tm: &mut R,
    b: MetaBlock,
    depth: usize,
    lo: u64,
    hi: Option<u64>,
    f: &mut dyn FnMut(&NodeVisit) -> Result<bool>,
) -> Result<()> {
    if depth >= MAX_BTREE_DEPTH {
        return Err(Error::corrupt(b, "btree node", "tree deeper than any valid tree (a cycle?)"));
    }
    let data = tm.read_block(b, crate::format::BlockKind::Node)?;
    let blk = &data[..];
    let visit = NodeVisit { block: b, data: blk, depth, is_root: depth == 0, lo, hi };
    if !f(&visit)? || node::is_leaf(blk) {
        return Ok(());
    }
    let n = node::nr_entries(blk);
    for i in 0..n {
        let child_hi = if i + 1 < n { Some(node::key(blk, i + 1)) } else { hi };
        nodes_rec(
            tm,
            MetaBlock(node::value_u64(blk, i)),
            depth + 1,
            node::key(blk, i),
            child_hi,
            f,
        )?;
    }
    Ok(())
}

/// Calls `f(key, value)` for every entry with `begin ≤ key < end`, in key order.
pub fn for_each<R: ReadBlocks + ?Sized>(
    tm: &mut R,
    root: MetaBlock,
    kind: ValueKind,
    begin: u64,
    end: u64,
    f: &mut dyn FnMut(u64, &[u8]) -> Result<()>,
) -> Result<()> {
    walk(tm, root, kind, begin, end, &mut |k, v| f(k, v).map(|()| ControlFlow::Continue(())))
        .map(drop)
}
