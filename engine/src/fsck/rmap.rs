//! thin_rmap as library code: which (device, virtual blocks) map each data block of the
//! given regions, printed as `data B..E -> thin(D) V..W`, regions in the order given,
//! then by data block and device.

use std::fmt::Write as _;
use std::sync::Arc;

use super::dump::{read_top_level, reader, select_roots, walk_mappings};
use super::error::{Error, Result};
use crate::io::BlockDevice;

/// `[begin, end)` of data blocks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Region {
    pub begin: u64,
    pub end: u64,
}

impl Region {
    /// Parses `BEGIN..END` (END excluded, must be above BEGIN).
    pub fn parse(s: &str) -> Result<Region> {
        let bad = |why: &str| Error::Unusable(format!("badly formed region ({why}): '{s}'"));
        let (b, e) = s.split_once("..").ok_or_else(|| bad("expected BEGIN..END"))?;
        let begin = b.trim().parse().map_err(|_| bad("BEGIN is not a number"))?;
        let end = e.trim().parse().map_err(|_| bad("END is not a number"))?;
        if end <= begin {
            return Err(bad("end <= begin"));
        }
        Ok(Region { begin, end })
    }
}

/// The reverse map of `regions`, as thin_rmap prints it.
pub fn rmap(dev: Arc<dyn BlockDevice>, regions: &[Region]) -> Result<String> {
    let mut bm = reader(dev);
    let roots = select_roots(&mut bm, None)?;
    let tops = read_top_level(&mut bm, roots.mapping_root)?;
    // (region, data block, device, virtual block) of every mapping in a region.
    let mut hits: Vec<(usize, u64, u64, u64)> = Vec::new();
    for (&id, &root) in &tops {
        walk_mappings(&mut bm, root, &mut |k, bt| {
            for (i, r) in regions.iter().enumerate() {
                if (r.begin..r.end).contains(&bt.block) {
                    hits.push((i, bt.block, id, k));
                }
            }
            Ok(())
        })?;
    }
    hits.sort_unstable();
    let mut out = String::new();
    let mut i = 0;
    while i < hits.len() {
        let (reg, d0, dev, v0) = hits[i];
        let mut len = 1;
        while i + len < hits.len() && hits[i + len] == (reg, d0 + len as u64, dev, v0 + len as u64) {
            len += 1;
        }
        let l = len as u64;
        let _ = writeln!(out, "data {d0}..{} -> thin({dev}) {v0}..{}", d0 + l, v0 + l);
        i += len;
    }
    Ok(out)
}
