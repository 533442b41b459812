//! The differences between two trees of one kind, in key order, skipping the subtrees
//! they share.
//!
//! Copy-on-write trees share nodes: a node reachable from both trees by the same block
//! number holds the same entries in both (a change to a shared node shadows it to a new
//! block first). So when both walks reach the same block at the same point of the key
//! order, the whole subtree is identical and `diff` steps over it without reading it:
//! the cost grows with the parts of the trees that differ, not with their size. This is
//! thin_delta's notion of a delta, computed the way a snapshot engine can afford it on a
//! live pool.
//!
//! Contract: `diff` reports every key in `[begin, end)` present in either tree exactly
//! once and in increasing order, as `LeftOnly`, `RightOnly` or `Both` (the visitor decides
//! whether two values differ), except keys inside skipped shared subtrees
//! (`Shared::Skip`), which are reported as one `Shared` item per subtree. With
//! `Shared::Walk` nothing is skipped (thin_delta's output needs the keys of identical
//! ranges too). It reads only; callers hold whatever lock keeps both trees still.
//!
//! How: one cursor per tree (a stack of nodes with a position in each). Each step peeks
//! at both cursors' next item — a child subtree with a lower bound on its keys, a leaf
//! entry, or the end — and either skips a common subtree, descends into the taller
//! subtree (a shared node sits at the same height above the leaves in both trees), or
//! reports the smaller key. Descending is always correct; the order of descents only
//! decides how much sharing is found.

use std::ops::ControlFlow;
use std::sync::Arc;

use super::{read_node, ValueKind};
use crate::block_manager::ReadBlocks;
use crate::error::{Error, Result};
use crate::format::node;
use crate::io::Block;
use crate::limits::MAX_BTREE_DEPTH;
use crate::units::MetaBlock;

/// Whether `diff` steps over subtrees both trees share.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Shared {
    /// Report a shared subtree as one `DiffItem::Shared`, unread.
    Skip,
    /// Walk shared subtrees too, reporting their entries as `Both`.
    Walk,
}

/// One step of a diff.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DiffItem<'a> {
    /// `key` is only in the left tree.
    LeftOnly { key: u64, value: &'a [u8] },
    /// `key` is only in the right tree.
    RightOnly { key: u64, value: &'a [u8] },
    /// `key` is in both trees (the values may still differ).
    Both { key: u64, left: &'a [u8], right: &'a [u8] },
    /// A subtree both trees hold: identical entries, not read. Its keys are ≥ `lo`.
    Shared { block: MetaBlock, lo: u64 },
}

/// The visitor `diff` calls; `Break` stops the diff.
pub type DiffVisitor<'a> = dyn FnMut(DiffItem) -> Result<ControlFlow<()>> + 'a;

/// Reports the differences between the trees at `left` and `right` over keys
/// `[begin, end)` (see the module contract). Node reads: those of the differing parts,
/// plus O(depth) per shared subtree met.
#[allow(clippy::too_many_arguments)]
pub fn diff<R: ReadBlocks + ?Sized>(
    tm: &mut R,
    left: MetaBlock,
    right: MetaBlock,
    kind: ValueKind,
    begin: u64,
    end: u64,
    shared: Shared,
    f: &mut DiffVisitor,
) -> Result<ControlFlow<()>> {
    let mut l = Cursor::open(tm, left, kind, begin, end)?;
    let mut r = Cursor::open(tm, right, kind, begin, end)?;
    loop {
        let (a, b) = (l.peek()?, r.peek()?);
        let step = match (&a, &b) {
            (Peek::End, Peek::End) => return Ok(ControlFlow::Continue(())),
            (Peek::Child(x), Peek::Child(y)) if x.block == y.block && shared == Shared::Skip => {
                l.skip();
                r.skip();
                f(DiffItem::Shared { block: x.block, lo: x.lo.max(y.lo) })?
            }
            (Peek::Child(x), Peek::Child(y)) => {
                if x.height >= y.height {
                    l.descend(tm, kind)?;
                }
                if y.height >= x.height {
                    r.descend(tm, kind)?;
                }
                ControlFlow::Continue(())
            }
            (Peek::Child(x), Peek::Entry(e)) if e.key < x.lo => {
                let item = DiffItem::RightOnly { key: e.key, value: e.value() };
                let flow = f(item)?;
                r.skip();
                flow
            }
            (Peek::Entry(e), Peek::Child(y)) if e.key < y.lo => {
                let flow = f(DiffItem::LeftOnly { key: e.key, value: e.value() })?;
                l.skip();
                flow
            }
            (Peek::Child(_), _) => {
                l.descend(tm, kind)?;
                ControlFlow::Continue(())
            }
            (_, Peek::Child(_)) => {
                r.descend(tm, kind)?;
                ControlFlow::Continue(())
            }
            (Peek::Entry(x), Peek::Entry(y)) => entries(x, y, &mut l, &mut r, f)?,
            (Peek::Entry(x), Peek::End) => {
                let flow = f(DiffItem::LeftOnly { key: x.key, value: x.value() })?;
                l.skip();
                flow
            }
            (Peek::End, Peek::Entry(y)) => {
                let flow = f(DiffItem::RightOnly { key: y.key, value: y.value() })?;
                r.skip();
                flow
            }
        };
        if step.is_break() {
            return Ok(ControlFlow::Break(()));
        }
    }
}

/// Two leaf entries: the smaller key goes first; equal keys go together.
fn entries(
    x: &EntryAt,
    y: &EntryAt,
    l: &mut Cursor,
    r: &mut Cursor,
    f: &mut DiffVisitor,
) -> Result<ControlFlow<()>> {
    let flow = if x.key < y.key {
        let flow = f(DiffItem::LeftOnly { key: x.key, value: x.value() })?;
        l.skip();
        flow
    } else if y.key < x.key {
        let flow = f(DiffItem::RightOnly { key: y.key, value: y.value() })?;
        r.skip();
        flow
    } else {
        let flow = f(DiffItem::Both { key: x.key, left: x.value(), right: y.value() })?;
        l.skip();
        r.skip();
        flow
    };
    Ok(flow)
}

/// A child subtree a cursor stands before.
struct ChildAt {
    block: MetaBlock,
    /// Every key of the subtree is ≥ this (its parent's key for it).
    lo: u64,
    /// Levels above the leaves (a leaf is 0).
    height: usize,
}

/// A leaf entry a cursor stands before.
struct EntryAt {
    key: u64,
    node: Arc<Block>,
    index: usize,
}

impl EntryAt {
    fn value(&self) -> &[u8] {
        node::value(&self.node[..], self.index)
    }
}

enum Peek {
    Child(ChildAt),
    Entry(EntryAt),
    End,
}

struct Frame {
    node: Arc<Block>,
    block: MetaBlock,
    index: usize,
    height: usize,
}

/// A position in one tree: the path of nodes from the root, each with the index of the
/// next entry to visit. Keys before the position have all been reported.
struct Cursor {
    stack: Vec<Frame>,
    begin: u64,
    end: u64,
    /// The last leaf key stepped over: keys must keep increasing (else the tree is corrupt).
    last_key: Option<u64>,
}

impl Cursor {
    fn open<R: ReadBlocks + ?Sized>(
        tm: &mut R,
        root: MetaBlock,
        kind: ValueKind,
        begin: u64,
        end: u64,
    ) -> Result<Cursor> {
        let height = tree_height(tm, root, kind)?;
        let mut c = Cursor { stack: Vec::new(), begin, end, last_key: None };
        c.push(tm, root, kind, height)?;
        Ok(c)
    }

    fn push<R: ReadBlocks + ?Sized>(
        &mut self,
        tm: &mut R,
        b: MetaBlock,
        kind: ValueKind,
        height: usize,
    ) -> Result<()> {
        if self.stack.len() >= MAX_BTREE_DEPTH {
            return Err(Error::corrupt(b, "btree node", "tree deeper than any valid tree"));
        }
        let node = read_node(tm, b, kind)?;
        let index = node::lower_bound(&node[..], self.begin).unwrap_or(0);
        self.stack.push(Frame { node, block: b, index, height });
        Ok(())
    }

    /// The next item at or after the position, popping exhausted nodes.
    fn peek(&mut self) -> Result<Peek> {
        while let Some(top) = self.stack.last_mut() {
            let blk = &top.node[..];
            if top.index >= node::nr_entries(blk) {
                self.stack.pop();
                continue;
            }
            let key = node::key(blk, top.index);
            if key >= self.end {
                self.stack.clear();
                break;
            }
            if node::is_leaf(blk) {
                if key < self.begin {
                    top.index += 1;
                    continue;
                }
                if self.last_key.is_some_and(|last| key <= last) {
                    let why = format!("key {key} is out of order");
                    return Err(Error::corrupt(top.block, "btree node", why));
                }
                return Ok(Peek::Entry(EntryAt { key, node: top.node.clone(), index: top.index }));
            }
            let block = MetaBlock(node::value_u64(blk, top.index));
            if block == top.block {
                return Err(Error::corrupt(block, "btree node", "a node is its own child"));
            }
            let height = top.height.saturating_sub(1);
            return Ok(Peek::Child(ChildAt { block, lo: key, height }));
        }
        Ok(Peek::End)
    }

    /// Steps over the item `peek` returned.
    fn skip(&mut self) {
        if let Some(top) = self.stack.last_mut() {
            if node::is_leaf(&top.node[..]) {
                self.last_key = Some(node::key(&top.node[..], top.index));
            }
            top.index += 1;
        }
    }

    /// Enters the child `peek` returned (which must be a child).
    fn descend<R: ReadBlocks + ?Sized>(&mut self, tm: &mut R, kind: ValueKind) -> Result<()> {
        let Some(top) = self.stack.last_mut() else {
            return Ok(());
        };
        let blk = &top.node[..];
        let child = MetaBlock(node::value_u64(blk, top.index));
        let height = top.height.saturating_sub(1);
        top.index += 1;
        self.push(tm, child, kind, height)
    }
}

/// Levels above the leaves of the tree at `root` (all leaves sit at one depth).
fn tree_height<R: ReadBlocks + ?Sized>(
    tm: &mut R,
    root: MetaBlock,
    kind: ValueKind,
) -> Result<usize> {
    let mut b = root;
    for height in 0..MAX_BTREE_DEPTH {
        let data = read_node(tm, b, kind)?;
        if node::is_leaf(&data[..]) || node::nr_entries(&data[..]) == 0 {
            return Ok(height);
        }
        b = MetaBlock(node::value_u64(&data[..], 0));
    }
    Err(Error::corrupt(root, "btree node", "tree deeper than any valid tree (a cycle?)"))
}
