//! `thin_trim`: discards the data blocks that no thin device maps, on an inactive pool:
//! hole-punched in a data file, BLKDISCARD on a block device. `--dry-run` only lists them.

use std::io::Write;

use anyhow::{Context, Result};
use thinly_engine::fsck::trim::unused_ranges;
use thinly_engine::io::{DataDevice, FileData, IoMode};

use super::live;
use crate::cli::TrimArgs;
use crate::exit;
use crate::files::open_input;

pub fn run(a: &TrimArgs) -> Result<u8> {
    live::may_write("thin_trim", &a.metadata_dev)?;
    let dev = open_input(&a.metadata_dev, false)?;
    std::fs::metadata(&a.data_dev)
        .with_context(|| format!("Couldn't find data device '{}'", a.data_dev.display()))?;
    let (block_size, ranges) =
        unused_ranges(dev).with_context(|| format!("reading {}", a.metadata_dev.display()))?;
    let sectors = u64::from(block_size);
    let mut out = std::io::stdout().lock();
    if a.dry_run {
        for (b, e) in ranges {
            writeln!(
                out,
                "discard sectors {}..{} (data blocks {b}..{e})",
                b * sectors,
                e * sectors
            )
            .context("writing")?;
        }
        return Ok(exit::SUCCESS);
    }
    let data = FileData::open(&a.data_dev, IoMode::Posix)
        .with_context(|| format!("opening the data device {}", a.data_dev.display()))?;
    let bytes = sectors * 512;
    for (b, e) in &ranges {
        data.punch_hole(b * bytes, (e - b) * bytes).with_context(|| {
            format!("discarding data blocks {b}..{e} of {}", a.data_dev.display())
        })?;
    }
    data.sync().context("syncing the data device")?;
    Ok(exit::SUCCESS)
}
