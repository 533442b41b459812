//! Bulk construction of a b-tree from entries given in ascending key order (restore,
//! repair): leaves are packed full, and every non-root node — including the last node of
//! each level — keeps at least max_entries / 3 entries (spec §4.4 rule 5), which is what
//! thin_check 0.9.0 demands even of bottom-level leaves.
//!
//! Finished nodes of another tree (shared leaves, `<def>` runs) can be spliced in with
//! [`TreeBuilder::push_node`]; a spliced node gains one metadata reference. A spliced
//! node that would break the minimum fill (because it is small, or because too few
//! entries precede or follow it) is copied entry by entry instead, and the copy takes
//! its own references on what the values reference.
//!
//! Reference rules: the caller owns the references that the values it `push`es hold
//! (e.g. restore increments a data block's count per mapping it pushes); the builder
//! manages the references it creates itself (node blocks, copies of spliced entries).
//! Blocks come from the transaction manager (`new_block`), so the space maps count them.
//! Memory: one leaf and a bit of pending entries, plus one `NodeRef` per finished leaf.

use super::{value_dec, value_inc, ValueKind};
use crate::error::{Error, Result};
use crate::format::node;
use crate::format::BlockKind;
use crate::transaction_manager::TransactionManager;
use crate::units::MetaBlock;

/// A finished node: its lowest key, where it lives and how many entries it holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NodeRef {
    pub key: u64,
    pub block: MetaBlock,
    pub nr_entries: usize,
}

#[derive(Debug, Clone, Copy)]
struct Built {
    node: NodeRef,
    /// Spliced from elsewhere (we hold one extra reference), rather than written here.
    shared: bool,
}

/// Builds one tree bottom-up; see the module documentation.
pub struct TreeBuilder {
    kind: ValueKind,
    value_size: usize,
    max: usize,
    min: usize,
    keys: Vec<u64>,
    values: Vec<u8>,
    leaves: Vec<Built>,
    last_key: Option<u64>,
    nr_entries: u64,
}

/// Sizes of the nodes `n` children are packed into: full nodes, the last two balanced
/// when the remainder would be under the minimum. `n <= max` gives one node.
pub fn pack_sizes(n: usize, max: usize) -> Vec<usize> {
    let min = node::min_entries(max);
    let mut sizes = Vec::with_capacity(n / max + 2);
    let mut rem = n;
    while rem > max {
        if rem >= max + min {
            sizes.push(max);
            rem -= max;
        } else {
            let a = rem / 2;
            sizes.push(a);
            sizes.push(rem - a);
            rem = 0;
        }
    }
    if rem > 0 {
        sizes.push(rem);
    }
    sizes
}

impl TreeBuilder {
    pub fn new(kind: ValueKind) -> Self {
        let value_size = kind.size();
        let max = node::max_entries(value_size);
        TreeBuilder {
            kind,
            value_size,
            max,
            min: node::min_entries(max),
            keys: Vec::with_capacity(2 * max),
            values: Vec::with_capacity(2 * max * value_size),
            leaves: Vec::new(),
            last_key: None,
            nr_entries: 0,
        }
    }

    /// Entries pushed or spliced so far.
    pub fn nr_entries(&self) -> u64 {
        self.nr_entries
    }

    fn check_order(&mut self, key: u64) -> Result<()> {
        if self.last_key.is_some_and(|l| key <= l) {
            return Err(Error::Invalid(format!(
                "b-tree builder: key {key} does not follow key {}",
                self.last_key.unwrap_or_default()
            )));
        }
        Ok(())
    }

    /// Appends one entry; `key` must be above every key so far.
    pub fn push(&mut self, tm: &mut TransactionManager, key: u64, value: &[u8]) -> Result<()> {
        assert_eq!(value.len(), self.value_size, "value of the wrong size");
        self.check_order(key)?;
        self.last_key = Some(key);
        self.keys.push(key);
        self.values.extend_from_slice(value);
        self.nr_entries += 1;
        if self.keys.len() >= self.max + self.min {
            self.emit(tm, self.max)?;
        }
        Ok(())
    }

    /// Splices a finished leaf of a tree of the same kind; its keys must follow every key
    /// so far, and `last_key` is its highest key.
    pub fn push_node(
        &mut self,
        tm: &mut TransactionManager,
        n: NodeRef,
        last_key: u64,
    ) -> Result<()> {
        self.check_order(n.key)?;
        let pending = self.keys.len();
        if n.nr_entries < self.min || (pending > 0 && pending < self.min) {
            return self.unpack(tm, n.block, true);
        }
        if pending > 0 {
            self.flush_pending(tm)?;
        }
        tm.inc(n.block)?;
        self.leaves.push(Built { node: n, shared: true });
        self.last_key = Some(last_key);
        self.nr_entries += n.nr_entries as u64;
        Ok(())
    }

    /// Copies the entries of leaf `b` into the pending entries (taking references for
    /// them when `copy`), as if pushed one by one.
    fn unpack(&mut self, tm: &mut TransactionManager, b: MetaBlock, copy: bool) -> Result<()> {
        let data = tm.read(b, BlockKind::Node)?;
        let blk = &data[..];
        if !node::is_leaf(blk) || node::value_size(blk) != self.value_size {
            return Err(Error::corrupt(b, "btree node", "spliced node is not a leaf"));
        }
        for i in 0..node::nr_entries(blk) {
            let v = node::value(blk, i);
            if copy {
                value_inc(tm, self.kind, v)?;
            }
            self.push(tm, node::key(blk, i), v)?;
        }
        Ok(())
    }

    /// Writes all pending entries as one node, or two when they do not fit in one.
    fn flush_pending(&mut self, tm: &mut TransactionManager) -> Result<()> {
        for size in pack_sizes(self.keys.len(), self.max) {
            self.emit(tm, size)?;
        }
        Ok(())
    }

    /// Writes the first `n` pending entries as a leaf.
    fn emit(&mut self, tm: &mut TransactionManager, n: usize) -> Result<()> {
        let (b, data) = tm.new_block(BlockKind::Node)?;
        node::init(&mut data[..], true, self.value_size);
        let vs = self.value_size;
        for i in 0..n {
            node::set_key(&mut data[..], i, self.keys[i]);
            node::set_value(&mut data[..], i, &self.values[i * vs..(i + 1) * vs]);
        }
        node::set_nr_entries(&mut data[..], n);
        self.leaves.push(Built {
            node: NodeRef { key: self.keys[0], block: b, nr_entries: n },
            shared: false,
        });
        self.keys.drain(..n);
        self.values.drain(..n * vs);
        Ok(())
    }

    /// Finishes the leaf level: every leaf holds ≥ min entries unless there is only one.
    /// Returns the leaves in key order (for splicing elsewhere, e.g. a `<def>`).
    pub fn finish_leaves(mut self, tm: &mut TransactionManager) -> Result<Vec<NodeRef>> {
        self.close_leaves(tm)?;
        Ok(self.leaves.iter().map(|b| b.node).collect())
    }

    fn close_leaves(&mut self, tm: &mut TransactionManager) -> Result<()> {
        let pending = self.keys.len();
        if pending > 0 && pending < self.min && !self.leaves.is_empty() {
            // Too few to stand alone: merge with the previous leaf.
            let last = self.leaves.pop().map(|b| (b.node, b.shared));
            if let Some((prev, shared)) = last {
                let keys = std::mem::take(&mut self.keys);
                let values = std::mem::take(&mut self.values);
                self.last_key = None;
                self.nr_entries -= prev.nr_entries as u64 + keys.len() as u64;
                // A leaf written here holds its values' references: move them.
                self.unpack(tm, prev.block, shared)?;
                tm.dec(prev.block)?;
                for (i, k) in keys.iter().enumerate() {
                    let vs = self.value_size;
                    self.keys.push(*k);
                    self.values.extend_from_slice(&values[i * vs..(i + 1) * vs]);
                    self.nr_entries += 1;
                }
            }
        }
        if !self.keys.is_empty() {
            self.flush_pending(tm)?;
        }
        Ok(())
    }

    /// Finishes the tree and returns its root (an empty leaf for an empty tree).
    pub fn finish(mut self, tm: &mut TransactionManager) -> Result<MetaBlock> {
        self.close_leaves(tm)?;
        let mut level: Vec<NodeRef> = self.leaves.iter().map(|b| b.node).collect();
        if level.is_empty() {
            return super::empty_tree(tm, self.kind);
        }
        while level.len() > 1 {
            level = build_internal_level(tm, &level)?;
        }
        Ok(level[0].block)
    }
}

/// One level of internal nodes over `children`.
fn build_internal_level(tm: &mut TransactionManager, children: &[NodeRef]) -> Result<Vec<NodeRef>> {
    let max = node::max_entries(node::INTERNAL_VALUE_SIZE);
    let mut out = Vec::new();
    let mut at = 0;
    for size in pack_sizes(children.len(), max) {
        let chunk = &children[at..at + size];
        at += size;
        let (b, data) = tm.new_block(BlockKind::Node)?;
        node::init(&mut data[..], false, node::INTERNAL_VALUE_SIZE);
        for (i, c) in chunk.iter().enumerate() {
            node::set_key(&mut data[..], i, c.key);
            node::set_value_u64(&mut data[..], i, c.block.0);
        }
        node::set_nr_entries(&mut data[..], size);
        out.push(NodeRef { key: chunk[0].key, block: b, nr_entries: size });
    }
    Ok(out)
}

/// Drops one reference to each of `leaves` (e.g. a `<def>`'s own, once every device that
/// splices it is built). A leaf that becomes free releases what its values reference.
pub fn release_leaves(
    tm: &mut TransactionManager,
    kind: ValueKind,
    leaves: &[NodeRef],
) -> Result<()> {
    for l in leaves {
        if tm.ref_count(l.block)? == 1 {
            let data = tm.read(l.block, BlockKind::Node)?;
            for i in 0..node::nr_entries(&data[..]) {
                value_dec(tm, kind, node::value(&data[..], i))?;
            }
        }
        tm.dec(l.block)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn packing_keeps_every_node_at_least_a_third_full() {
        for max in [126usize, 168, 252, 336] {
            let min = node::min_entries(max);
            for n in 1..(5 * max) {
                let sizes = pack_sizes(n, max);
                assert_eq!(sizes.iter().sum::<usize>(), n);
                assert!(sizes.iter().all(|&s| s <= max));
                if sizes.len() > 1 {
                    assert!(sizes.iter().all(|&s| s >= min), "n={n} max={max}: {sizes:?}");
                }
            }
        }
    }
}
