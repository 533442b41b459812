//! thin_rmap as library code: which (device, virtual blocks) map each data block of the
//! given regions (their union), printed as `data B..E -> thin(D) V..W` by data block,
//! then device (0.9.0 orders ties unpredictably).

use std::fmt::Write as _;
use std::sync::Arc;

use super::dump::{read_top_level, reader, select_roots, walk_mappings_once};
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
    // Runs (data begin, device, virtual begin, length) of mappings into any region,
    // coalesced per device while virtual and data blocks both advance by one.
    let in_regions = |d: u64| regions.iter().any(|r| (r.begin..r.end).contains(&d));
    // Like 0.9.0, a subtree shared between devices counts for the first device only.
    let mut seen = std::collections::HashSet::new();
    let mut runs: Vec<(u64, u64, u64, u64)> = Vec::new();
    for (&id, &root) in &tops {
        walk_mappings_once(&mut bm, root, &mut seen, &mut |k, bt| {
            if !in_regions(bt.block) {
                return Ok(());
            }
            match runs.last_mut() {
                Some(r)
                    if r.1 == id
                        && r.2.checked_add(r.3) == Some(k)
                        && r.0.checked_add(r.3) == Some(bt.block) =>
                {
                    r.3 += 1
                }
                _ => runs.push((bt.block, id, k, 1)),
            }
            Ok(())
        })?;
    }
    // By data block; ties (several devices share a block) by device.
    runs.sort_unstable();
    let mut out = String::new();
    for (d, dev, v, len) in runs {
        let (de, ve) = (d.saturating_add(len), v.saturating_add(len));
        let _ = writeln!(out, "data {d}..{de} -> thin({dev}) {v}..{ve}");
    }
    Ok(out)
}
