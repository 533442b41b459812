//! thin_trim as library code: the data blocks no mapping references (count 0 in the data
//! space map), as ranges to discard.

use std::sync::Arc;

use super::dump::{read_superblock, reader};
use super::error::Result;
use crate::io::BlockDevice;

/// `[begin, end)` ranges of unused data blocks, in order.
pub fn unused_ranges(dev: Arc<dyn BlockDevice>) -> Result<(u32, Vec<(u64, u64)>)> {
    let mut bm = reader(dev);
    let sb = read_superblock(&bm)?;
    let (_, data, _) = crate::space_map::disk::load(&mut bm, &sb)?;
    let mut out = Vec::new();
    let mut start = None;
    for b in 0..data.nr_blocks() {
        let free = data.get(b)? == 0;
        match (free, start) {
            (true, None) => start = Some(b),
            (false, Some(s)) => {
                out.push((s, b));
                start = None;
            }
            _ => {}
        }
    }
    if let Some(s) = start {
        out.push((s, data.nr_blocks()));
    }
    Ok((sb.data_block_size_sectors, out))
}
