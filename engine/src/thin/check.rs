//! The internal checker: what thin_check 1.x verifies (spec §7), on the committed image of a
//! metadata device, each problem reported with its block and device.

use super::metadata::read_superblock;
use super::{DETAILS, TOP};
use crate::block_manager::{BlockManager, BlockMap, ReadBlocks};
use crate::btree;
use crate::error::Result;
use crate::format::node;
use crate::format::superblock::Superblock;
use crate::format::thin::DeviceDetails;
use crate::format::BlockKind;
use crate::io::BlockDevice;
use crate::limits::{DEFAULT_CACHE_BYTES, MAX_BTREE_DEPTH};
use crate::recount::{Problem, RefCounter};
use crate::space_map::disk;
use crate::units::MetaBlock;
use std::collections::BTreeMap;
use std::sync::Arc;

#[derive(Debug, Clone, Copy, Default)]
pub struct CheckOptions {
    /// Check only the superblock.
    pub super_block_only: bool,
    /// Skip the bottom-level trees and the space-map comparison.
    pub skip_mappings: bool,
    /// Check the held metadata snapshot instead of the live trees (space maps skipped).
    pub metadata_snap: bool,
}

/// What a check found.
#[derive(Debug, Clone, Default)]
pub struct Report {
    pub superblock: Option<Superblock>,
    pub problems: Vec<Problem>,
    pub nr_devices: u64,
    pub nr_mappings: u64,
}

impl Report {
    pub fn is_clean(&self) -> bool {
        self.problems.is_empty()
    }

    /// Clean but for non-fatal problems (leaks).
    pub fn has_fatal(&self) -> bool {
        self.problems.iter().any(|p| p.fatal)
    }

    fn fatal(&mut self, block: Option<MetaBlock>, device: Option<u64>, message: String) {
        self.problems.push(Problem { block, device, message, fatal: true });
    }
}

/// Checks the committed metadata on `dev`. I/O errors and an unreadable superblock are
/// reported as problems; `Err` only for failures of the checker itself.
pub fn check(dev: Arc<dyn BlockDevice>, opts: CheckOptions) -> Result<Report> {
    let mut report = Report::default();
    let sb = match read_superblock(&dev) {
        Ok(sb) => sb,
        Err(e) => {
            report.fatal(Some(MetaBlock(0)), None, e.to_string());
            return Ok(report);
        }
    };
    report.superblock = Some(sb.clone());
    if opts.super_block_only {
        return Ok(report);
    }
    let mut bm = BlockManager::new(dev, DEFAULT_CACHE_BYTES);
    let (top, details_root) = if opts.metadata_snap {
        if sb.held_root.0 == 0 {
            report.fatal(None, None, "no metadata snapshot is held".into());
            return Ok(report);
        }
        match bm.read(sb.held_root, BlockKind::Superblock) {
            Ok(b) => {
                let h = Superblock::decode(&b[..]);
                (h.data_mapping_root, h.device_details_root)
            }
            Err(e) => {
                report.fatal(e.block(), None, format!("metadata snapshot: {e}"));
                return Ok(report);
            }
        }
    } else {
        (sb.data_mapping_root, sb.device_details_root)
    };

    let mut rc = RefCounter::new();
    rc.nr_data_blocks = Some(sb.data_sm_root.nr_blocks);
    let details = read_details(&mut bm, details_root, &mut rc);
    if opts.skip_mappings {
        let mut tops = Vec::new();
        let walked = btree::for_each(&mut bm, top, TOP, 0, u64::MAX, &mut |k, _| {
            tops.push(k);
            Ok(())
        });
        if let Err(e) = walked {
            report.fatal(e.block(), None, format!("top-level mapping tree: {e}"));
        }
        compare_device_sets(&mut report, &details, &tops);
        report.problems.append(&mut rc.problems);
        report.nr_devices = details.len() as u64;
        return Ok(report);
    }
    rc.add_meta(MetaBlock(0));
    rc.add_tree(&mut bm, top, TOP);
    rc.add_tree(&mut bm, details_root, DETAILS);
    let roots: Vec<(u64, MetaBlock)> = rc.subtree_roots.clone();
    compare_device_sets(&mut report, &details, &roots.iter().map(|r| r.0).collect::<Vec<_>>());
    check_mapped_blocks(&mut bm, &mut report, &details, &roots);
    if !opts.metadata_snap {
        if sb.held_root.0 != 0 {
            count_held_snapshot(&mut bm, &mut rc, sb.held_root);
        }
        compare_space_maps(&mut bm, &mut rc, &sb);
    }
    report.problems.append(&mut rc.problems);
    report.nr_devices = details.len() as u64;
    Ok(report)
}

fn read_details<R: ReadBlocks>(
    r: &mut R,
    root: MetaBlock,
    rc: &mut RefCounter,
) -> BTreeMap<u64, DeviceDetails> {
    let mut out = BTreeMap::new();
    let walked = btree::for_each(r, root, DETAILS, 0, u64::MAX, &mut |k, v| {
        out.insert(k, DeviceDetails::decode(v));
        Ok(())
    });
    if let Err(e) = walked {
        rc.problems.push(Problem {
            block: e.block().or(Some(root)),
            device: None,
            message: format!("device details tree: {e}"),
            fatal: true,
        });
    }
    out
}

fn compare_device_sets(report: &mut Report, details: &BTreeMap<u64, DeviceDetails>, tops: &[u64]) {
    for id in tops {
        if !details.contains_key(id) {
            report.fatal(None, Some(*id), "in the mapping tree but has no device details".into());
        }
    }
    for id in details.keys() {
        if !tops.contains(id) {
            report.fatal(
                None,
                Some(*id),
                "has device details but is not in the mapping tree".into(),
            );
        }
    }
}

/// mapped_blocks must equal the number of mappings reachable from each device's root.
fn check_mapped_blocks<R: ReadBlocks>(
    r: &mut R,
    report: &mut Report,
    details: &BTreeMap<u64, DeviceDetails>,
    roots: &[(u64, MetaBlock)],
) {
    let mut memo: BlockMap<u64> = BlockMap::default();
    for &(dev, root) in roots {
        match count_entries(r, root, &mut memo, 0) {
            Ok(n) => {
                report.nr_mappings += n;
                if let Some(d) = details.get(&dev) {
                    if d.mapped_blocks != n {
                        report.fatal(
                            None,
                            Some(dev),
                            format!(
                                "mapped_blocks is {} but the device maps {n} blocks",
                                d.mapped_blocks
                            ),
                        );
                    }
                }
            }
            Err(e) => report.fatal(e.block(), Some(dev), format!("counting mappings: {e}")),
        }
    }
}

/// Leaf entries below `b`, each node counted once however many devices share it.
fn count_entries<R: ReadBlocks>(
    r: &mut R,
    b: MetaBlock,
    memo: &mut BlockMap<u64>,
    depth: usize,
) -> Result<u64> {
    if let Some(&n) = memo.get(&b.0) {
        return Ok(n);
    }
    if depth >= MAX_BTREE_DEPTH {
        return Err(crate::error::Error::corrupt(
            b,
            "btree node",
            "tree deeper than any valid tree",
        ));
    }
    let data = r.read_block(b, BlockKind::Node)?;
    let n = node::nr_entries(&data[..]);
    let total = if node::is_leaf(&data[..]) {
        n as u64
    } else {
        let children: Vec<u64> = (0..n).map(|i| node::value_u64(&data[..], i)).collect();
        drop(data);
        let mut t = 0;
        for c in children {
            t += count_entries(r, MetaBlock(c), memo, depth + 1)?;
        }
        t
    };
    memo.insert(b.0, total);
    Ok(total)
}

fn count_held_snapshot(bm: &mut BlockManager, rc: &mut RefCounter, held: MetaBlock) {
    rc.add_meta(held);
    match bm.read(held, BlockKind::Superblock) {
        Ok(b) => {
            let h = Superblock::decode(&b[..]);
            rc.add_tree(bm, h.data_mapping_root, TOP);
            rc.add_tree(bm, h.device_details_root, DETAILS);
        }
        Err(e) => rc.problems.push(Problem {
            block: Some(held),
            device: None,
            message: format!("metadata snapshot: {e}"),
            fatal: true,
        }),
    }
}

fn compare_space_maps(bm: &mut BlockManager, rc: &mut RefCounter, sb: &Superblock) {
    rc.current_device = None;
    rc.add_space_maps(bm, sb);
    match disk::load(bm, sb) {
        Ok((meta, data, _)) => {
            rc.compare(&meta, false);
            rc.compare(&data, true);
        }
        Err(e) => rc.problems.push(Problem {
            block: e.block(),
            device: None,
            message: format!("space maps: {e}"),
            fatal: true,
        }),
    }
}
