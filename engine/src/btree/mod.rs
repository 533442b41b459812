//! Copy-on-write b-trees in the dm-thin node format (spec §4, §6.1, §6.2).
//!
//! A tree is named by its root block; every function that changes a tree returns the new
//! root (the root is shadowed on the first change in a transaction). Trees share subtrees:
//! a node's reference count says how many parents (or devices) hold it, and shadowing a
//! shared node increments what its copy references, as `ValueKind` says:
//! - `BlockTime`: bottom-level mapping leaves reference data blocks;
//! - `SubtreeRoot`: top-level mapping leaves reference bottom-level trees;
//! - `Plain`: details, index entries and reference counts reference nothing counted.
//!
//! Invariants kept by insert and remove: keys strictly increase within a node and across
//! leaves; every non-root node holds at least max_entries / 3 entries; all leaves sit at one
//! depth; a parent key is ≤ its child's first key.
//!
//! Callers: the space maps' own trees (`space_map::disk`) and the thin metadata.

pub mod builder;
mod delete;
mod diff;
mod insert;
mod remove;
mod walk;

pub use builder::{NodeRef, TreeBuilder};
pub use delete::delete_tree;
pub use diff::{diff, DiffItem, DiffVisitor, Shared};
pub use insert::{insert, shadow_path};
pub use remove::remove;
pub use walk::{for_each, lookup, lookup_depth, lookup_u64, walk, walk_nodes, NodeVisit, Visitor};

use crate::error::{Error, Result};
use crate::format::node;
use crate::format::thin::BlockTime;
use crate::format::BlockKind;
use crate::transaction_manager::TransactionManager;
use crate::units::MetaBlock;

/// What the values of a tree's leaves are, and what they reference.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ValueKind {
    /// Values of `size` bytes that reference nothing the space maps count.
    Plain { size: usize },
    /// Bottom-level mapping values (block_time): each references a data block.
    BlockTime,
    /// Top-level mapping values: each is the root of a bottom-level tree.
    SubtreeRoot,
}

impl ValueKind {
    pub const fn size(self) -> usize {
        match self {
            ValueKind::Plain { size } => size,
            ValueKind::BlockTime | ValueKind::SubtreeRoot => 8,
        }
    }

    /// The kind of the trees a value of this kind points to, if any.
    pub fn child(self) -> Option<ValueKind> {
        match self {
            ValueKind::SubtreeRoot => Some(ValueKind::BlockTime),
            _ => None,
        }
    }
}

fn le8(v: &[u8]) -> u64 {
    let mut a = [0u8; 8];
    a.copy_from_slice(&v[..8]);
    u64::from_le_bytes(a)
}

/// Takes a reference on what one value references.
pub(crate) fn value_inc(tm: &mut TransactionManager, kind: ValueKind, v: &[u8]) -> Result<()> {
    match kind {
        ValueKind::Plain { .. } => Ok(()),
        ValueKind::BlockTime => tm.data_sm.inc(BlockTime::unpack(le8(v)).block),
        ValueKind::SubtreeRoot => tm.inc(MetaBlock(le8(v))),
    }
}

/// Drops the reference one value holds; a subtree whose count reaches zero is deleted.
pub(crate) fn value_dec(tm: &mut TransactionManager, kind: ValueKind, v: &[u8]) -> Result<()> {
    match kind {
        ValueKind::Plain { .. } => Ok(()),
        ValueKind::BlockTime => tm.data_sm.dec(BlockTime::unpack(le8(v)).block).map(|_| ()),
        ValueKind::SubtreeRoot => delete_tree(tm, MetaBlock(le8(v)), ValueKind::BlockTime),
    }
}

/// Do two values reference the same thing (so an overwrite needs no dec)?
fn same_referent(kind: ValueKind, a: &[u8], b: &[u8]) -> bool {
    match kind {
        ValueKind::Plain { .. } => true,
        ValueKind::BlockTime => BlockTime::unpack(le8(a)).block == BlockTime::unpack(le8(b)).block,
        ValueKind::SubtreeRoot => le8(a) == le8(b),
    }
}

/// A new empty tree: a leaf root with no entries.
pub fn empty_tree(tm: &mut TransactionManager, kind: ValueKind) -> Result<MetaBlock> {
    let (b, data) = tm.new_block(BlockKind::Node)?;
    node::init(&mut data[..], true, kind.size());
    Ok(b)
}

/// Shadows node `b` of a tree of `kind`, applying the inc_children rule when it was shared.
pub(crate) fn shadow_node(
    tm: &mut TransactionManager,
    b: MetaBlock,
    kind: ValueKind,
) -> Result<MetaBlock> {
    let (n, was_shared) = tm.shadow(b, BlockKind::Node)?;
    if was_shared {
        inc_children(tm, n, kind)?;
    }
    Ok(n)
}

fn inc_children(tm: &mut TransactionManager, b: MetaBlock, kind: ValueKind) -> Result<()> {
    let data = tm.read(b, BlockKind::Node)?;
    let n = node::nr_entries(&data[..]);
    if !node::is_leaf(&data[..]) {
        for i in 0..n {
            tm.inc(MetaBlock(node::value_u64(&data[..], i)))?;
        }
    } else if kind != (ValueKind::Plain { size: kind.size() }) {
        for i in 0..n {
            value_inc(tm, kind, node::value(&data[..], i))?;
        }
    }
    Ok(())
}

/// Reads a node and checks that its leaf values have the tree's size.
pub(crate) fn read_node<R: crate::block_manager::ReadBlocks + ?Sized>(
    tm: &mut R,
    b: MetaBlock,
    kind: ValueKind,
) -> Result<std::sync::Arc<crate::io::Block>> {
    let data = tm.read_block(b, BlockKind::Node)?;
    if node::is_leaf(&data[..]) && node::value_size(&data[..]) != kind.size() {
        return Err(Error::corrupt(
            b,
            "btree node",
            format!(
                "leaf value_size {} where {} was expected",
                node::value_size(&data[..]),
                kind.size()
            ),
        ));
    }
    Ok(data)
}
