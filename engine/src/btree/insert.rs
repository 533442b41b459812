//! Insert (spec §6.2): walk down from the root, shadowing each node on the path; a full node
//! is split before we descend into it, so a parent always has room for one more child.

use super::{read_node, same_referent, shadow_node, value_dec, ValueKind};
use crate::error::{Error, Result};
use crate::format::node;
use crate::format::BlockKind;
use crate::io::Block;
use crate::limits::MAX_BTREE_DEPTH;
use crate::transaction_manager::TransactionManager;
use crate::units::MetaBlock;
use std::sync::Arc;

/// Inserts or overwrites `key`. Returns the new root and whether the key is new.
///
/// A new value's references are the caller's (e.g. the data block was allocated with count
/// 1); an overwritten value's references are dropped unless it references the same thing.
pub fn insert(
    tm: &mut TransactionManager,
    root: MetaBlock,
    kind: ValueKind,
    key: u64,
    value: &[u8],
) -> Result<(MetaBlock, bool)> {
    assert_eq!(value.len(), kind.size(), "value of the wrong size for this tree");
    let root = shadow_node(tm, root, kind)?;
    let mut data = read_node(tm, root, kind)?;
    if needs_split(&data[..], key) {
        drop(data);
        split_beneath(tm, root)?;
        data = read_node(tm, root, kind)?;
    }
    let mut b = root;
    for _ in 0..MAX_BTREE_DEPTH {
        if node::is_leaf(&data[..]) {
            let is_new = insert_into_leaf(tm, b, data, kind, key, value)?;
            return Ok((root, is_new));
        }
        let (i, lower) = match node::lower_bound(&data[..], key) {
            Some(i) => (i, false),
            None => (0, true),
        };
        let child = MetaBlock(node::value_u64(&data[..], i));
        drop(data);
        if lower {
            // Smaller than every key: lower keys[0] so the parent key stays ≤ the child.
            node::set_key(tm.get_mut(b, BlockKind::Node)?, 0, key);
        }
        let (next, next_data) = prepare_child(tm, b, i, child, kind, key)?;
        b = next;
        data = next_data;
    }
    Err(Error::corrupt(root, "btree node", "tree deeper than any valid tree"))
}

/// Shadows `child` (entry `i` of `parent`, which is ours), splitting it if full. Returns the
/// node that now covers `key`, with its contents.
fn prepare_child(
    tm: &mut TransactionManager,
    parent: MetaBlock,
    i: usize,
    child: MetaBlock,
    kind: ValueKind,
    key: u64,
) -> Result<(MetaBlock, Arc<Block>)> {
    let shadow = shadow_node(tm, child, kind)?;
    if shadow != child {
        node::set_value_u64(tm.get_mut(parent, BlockKind::Node)?, i, shadow.0);
    }
    let data = read_node(tm, shadow, kind)?;
    if !needs_split(&data[..], key) {
        return Ok((shadow, data));
    }
    drop(data);
    let right = split_off_right(tm, shadow)?;
    let right_key = node::key(&tm.read(right, BlockKind::Node)?[..], 0);
    let p = tm.get_mut(parent, BlockKind::Node)?;
    node::insert_at(&mut p[..], i + 1, right_key, &right.0.to_le_bytes());
    let next = if key >= right_key { right } else { shadow };
    Ok((next, read_node(tm, next, kind)?))
}

/// A full node must be split before descending, unless it is a leaf that already holds
/// the key (an overwrite needs no room).
fn needs_split(blk: &[u8], key: u64) -> bool {
    node::nr_entries(blk) >= node::max_entries_of(blk)
        && !(node::is_leaf(blk) && node::find(blk, key).is_some())
}

/// Moves the upper half of full node `b` into a new right sibling; returns the sibling.
fn split_off_right(tm: &mut TransactionManager, b: MetaBlock) -> Result<MetaBlock> {
    let src = tm.read(b, BlockKind::Node)?;
    let n = node::nr_entries(&src[..]);
    let is_leaf = node::is_leaf(&src[..]);
    let vs = node::value_size(&src[..]);
    let half = n / 2;
    let (right, r) = tm.new_block(BlockKind::Node)?;
    node::init(&mut r[..], is_leaf, vs);
    node::append_from(&mut r[..], &src[..], half, n);
    drop(src);
    node::truncate(tm.get_mut(b, BlockKind::Node)?, half);
    Ok(right)
}

/// The root is full: move its entries into two new children and make it an internal node
/// with two entries (the root keeps its block, so parents need no update).
fn split_beneath(tm: &mut TransactionManager, root: MetaBlock) -> Result<()> {
    let src = tm.read(root, BlockKind::Node)?;
    let n = node::nr_entries(&src[..]);
    let is_leaf = node::is_leaf(&src[..]);
    let vs = node::value_size(&src[..]);
    let half = n / 2;
    let mut children = [MetaBlock(0); 2];
    let mut keys = [0u64; 2];
    for (c, (from, to)) in [(0, half), (half, n)].into_iter().enumerate() {
        let (b, d) = tm.new_block(BlockKind::Node)?;
        node::init(&mut d[..], is_leaf, vs);
        node::append_from(&mut d[..], &src[..], from, to);
        children[c] = b;
        keys[c] = node::key(&src[..], from);
    }
    drop(src);
    let r = tm.get_mut(root, BlockKind::Node)?;
    node::init(&mut r[..], false, node::INTERNAL_VALUE_SIZE);
    for c in 0..2 {
        node::insert_at(&mut r[..], c, keys[c], &children[c].0.to_le_bytes());
    }
    Ok(())
}

fn insert_into_leaf(
    tm: &mut TransactionManager,
    leaf: MetaBlock,
    data: Arc<Block>,
    kind: ValueKind,
    key: u64,
    value: &[u8],
) -> Result<bool> {
    let pos = node::lower_bound(&data[..], key);
    if let Some(i) = pos.filter(|&i| node::key(&data[..], i) == key) {
        let old: Vec<u8> = node::value(&data[..], i).to_vec();
        drop(data);
        node::set_value(tm.get_mut(leaf, BlockKind::Node)?, i, value);
        if !same_referent(kind, &old, value) {
            value_dec(tm, kind, &old)?;
        }
        return Ok(false);
    }
    drop(data);
    let at = pos.map_or(0, |i| i + 1);
    node::insert_at(tm.get_mut(leaf, BlockKind::Node)?, at, key, value);
    Ok(true)
}

/// Makes the path from `root` to the leaf holding `key` exclusive to this transaction
/// (shadowing top-down, with inc_children for shared nodes), without changing any entry.
/// Returns the new root, the leaf and the key's index in it, or `None` (and the unchanged
/// root) if the key is absent.
///
/// This is how a two-level tree is edited: shadow the top level's path first, then edit
/// the subtree the leaf value names, then store the subtree's new root into the leaf in
/// place — the reference moved, so nothing is decremented.
pub fn shadow_path(
    tm: &mut TransactionManager,
    root: MetaBlock,
    kind: ValueKind,
    key: u64,
) -> Result<(MetaBlock, Option<(MetaBlock, usize)>)> {
    let mut probe = [0u8; 32];
    if !super::lookup(tm, root, kind, key, &mut probe[..kind.size()])? {
        return Ok((root, None));
    }
    let root = shadow_node(tm, root, kind)?;
    let mut b = root;
    for _ in 0..MAX_BTREE_DEPTH {
        let data = read_node(tm, b, kind)?;
        let blk = &data[..];
        let missing = || Error::corrupt(b, "btree node", format!("key {key} vanished"));
        let i = node::lower_bound(blk, key).ok_or_else(missing)?;
        if node::is_leaf(blk) {
            return Ok((root, Some((b, i))));
        }
        let child = MetaBlock(node::value_u64(blk, i));
        drop(data);
        let shadow = shadow_node(tm, child, kind)?;
        if shadow != child {
            node::set_value_u64(tm.get_mut(b, BlockKind::Node)?, i, shadow.0);
        }
        b = shadow;
    }
    Err(Error::corrupt(root, "btree node", "tree deeper than any valid tree"))
}
