//! Whole-tree delete (spec §6.2): shared nodes are only decremented; a node whose last
//! reference goes releases what it references first.

use super::{read_node, value_dec, ValueKind};
use crate::error::Result;
use crate::format::node;
use crate::transaction_manager::TransactionManager;
use crate::units::MetaBlock;

/// Drops one reference to the tree rooted at `root`. O(nodes exclusively owned).
pub fn delete_tree(tm: &mut TransactionManager, root: MetaBlock, kind: ValueKind) -> Result<()> {
    if tm.ref_count(root)? > 1 {
        tm.dec(root)?;
        return Ok(());
    }
    let data = read_node(tm, root, kind)?;
    let blk = &data[..];
    let n = node::nr_entries(blk);
    if node::is_leaf(blk) {
        if kind != (ValueKind::Plain { size: kind.size() }) {
            for i in 0..n {
                value_dec(tm, kind, node::value(blk, i))?;
            }
        }
    } else {
        for i in 0..n {
            delete_tree(tm, MetaBlock(node::value_u64(blk, i)), kind)?;
        }
    }
    tm.dec(root)?;
    Ok(())
}
