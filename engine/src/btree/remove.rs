//! Remove (spec §6.2, with the stricter fill rule): before descending into a child, make sure
//! it holds more than the minimum (max/3) entries, by merging it with a sibling or taking
//! entries from one; then removing one entry below can never leave a node underfull.
//! An internal root left with a single child is replaced by that child.

use super::{lookup, read_node, shadow_node, value_dec, ValueKind};
use crate::error::{Error, Result};
use crate::format::node;
use crate::format::BlockKind;
use crate::limits::MAX_BTREE_DEPTH;
use crate::transaction_manager::TransactionManager;
use crate::units::MetaBlock;

/// Removes `key` if present, dropping its value's references. Returns the new root and
/// whether the key was there. An absent key changes nothing (no block is shadowed).
pub fn remove(
    tm: &mut TransactionManager,
    root: MetaBlock,
    kind: ValueKind,
    key: u64,
) -> Result<(MetaBlock, bool)> {
    let mut probe = [0u8; 32];
    if !lookup(tm, root, kind, key, &mut probe[..kind.size()])? {
        return Ok((root, false));
    }
    let root = shadow_node(tm, root, kind)?;
    let mut b = root;
    let mut depth = 0;
    loop {
        depth += 1;
        if depth > MAX_BTREE_DEPTH {
            return Err(Error::corrupt(root, "btree node", "tree deeper than any valid tree"));
        }
        let data = read_node(tm, b, kind)?;
        let blk = &data[..];
        let missing =
            || Error::corrupt(b, "btree node", format!("key {key} vanished during remove"));
        if node::is_leaf(blk) {
            let i = node::find(blk, key).ok_or_else(missing)?;
            let old = node::value(blk, i).to_vec();
            drop(data);
            node::remove_at(tm.get_mut(b, BlockKind::Node)?, i);
            value_dec(tm, kind, &old)?;
            break;
        }
        let i = node::lower_bound(blk, key).ok_or_else(missing)?;
        drop(data);
        let i = rebalance_for_descent(tm, b, i, kind, key)?;
        b = MetaBlock(node::value_u64(&tm.read(b, BlockKind::Node)?[..], i));
    }
    collapse_root(tm, root).map(|r| (r, true))
}

/// While the root is internal with one child, the child becomes the root.
fn collapse_root(tm: &mut TransactionManager, mut root: MetaBlock) -> Result<MetaBlock> {
    loop {
        let data = tm.read(root, BlockKind::Node)?;
        if node::is_leaf(&data[..]) || node::nr_entries(&data[..]) != 1 {
            return Ok(root);
        }
        let child = MetaBlock(node::value_u64(&data[..], 0));
        drop(data);
        // The root is ours (count 1); its one reference to the child moves to the caller.
        tm.dec(root)?;
        root = child;
    }
}

/// Shadows child `i` of `parent` and gives it more than the minimum number of entries,
/// merging with or borrowing from a sibling. Returns the index of the child covering `key`.
fn rebalance_for_descent(
    tm: &mut TransactionManager,
    parent: MetaBlock,
    i: usize,
    kind: ValueKind,
    key: u64,
) -> Result<usize> {
    let nr_children = node::nr_entries(&tm.read(parent, BlockKind::Node)?[..]);
    let c = shadow_child(tm, parent, i, kind)?;
    let cdata = tm.read(c, BlockKind::Node)?;
    let min = node::min_entries(node::max_entries_of(&cdata[..]));
    if node::nr_entries(&cdata[..]) > min || nr_children == 1 {
        return Ok(i);
    }
    drop(cdata);
    let (li, ri) = if i + 1 < nr_children { (i, i + 1) } else { (i - 1, i) };
    let sibling = if li == i { ri } else { li };
    shadow_child(tm, parent, sibling, kind)?;
    let p = tm.read(parent, BlockKind::Node)?;
    let (l, r) = (MetaBlock(node::value_u64(&p[..], li)), MetaBlock(node::value_u64(&p[..], ri)));
    drop(p);
    let rdata = tm.read(r, BlockKind::Node)?;
    let nl = node::nr_entries(&tm.read(l, BlockKind::Node)?[..]);
    let nr = node::nr_entries(&rdata[..]);
    let total = nl + nr;
    if total <= 2 * min + 1 {
        node::append_from(tm.get_mut(l, BlockKind::Node)?, &rdata[..], 0, nr);
        drop(rdata);
        node::remove_at(tm.get_mut(parent, BlockKind::Node)?, ri);
        // r's entries now live in l: r's references moved with them.
        tm.dec(r)?;
        return Ok(li);
    }
    let target_l = total / 2;
    if nl > target_l {
        let ldata = tm.read(l, BlockKind::Node)?;
        drop(rdata);
        node::prepend_from(tm.get_mut(r, BlockKind::Node)?, &ldata[..], target_l, nl);
        drop(ldata);
        node::truncate(tm.get_mut(l, BlockKind::Node)?, target_l);
    } else {
        let k = target_l - nl;
        node::append_from(tm.get_mut(l, BlockKind::Node)?, &rdata[..], 0, k);
        drop(rdata);
        node::drop_front(tm.get_mut(r, BlockKind::Node)?, k);
    }
    let first_r = node::key(&tm.read(r, BlockKind::Node)?[..], 0);
    node::set_key(tm.get_mut(parent, BlockKind::Node)?, ri, first_r);
    Ok(if key >= first_r { ri } else { li })
}

/// Shadows child `i` of `parent` (which is ours) and updates the parent's pointer.
fn shadow_child(
    tm: &mut TransactionManager,
    parent: MetaBlock,
    i: usize,
    kind: ValueKind,
) -> Result<MetaBlock> {
    let child = MetaBlock(node::value_u64(&tm.read(parent, BlockKind::Node)?[..], i));
    let shadow = shadow_node(tm, child, kind)?;
    if shadow != child {
        node::set_value_u64(tm.get_mut(parent, BlockKind::Node)?, i, shadow.0);
    }
    Ok(shadow)
}
