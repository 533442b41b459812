//! `thin_trim`: lists the unused data ranges of an inactive pool. Discarding them needs
//! hole punching, which this build cannot do yet (see the report in the README):
//! without `--dry-run` it says so and fails.

use std::io::Write;

use anyhow::{bail, Context, Result};
use thinly_engine::fsck::trim::unused_ranges;

use crate::cli::TrimArgs;
use crate::exit;
use crate::files::open_input;

pub fn run(a: &TrimArgs) -> Result<u8> {
    let dev = open_input(&a.metadata_dev, false)?;
    std::fs::metadata(&a.data_dev)
        .with_context(|| format!("Couldn't find data device '{}'", a.data_dev.display()))?;
    let (block_size, ranges) =
        unused_ranges(dev).with_context(|| format!("reading {}", a.metadata_dev.display()))?;
    if !a.dry_run {
        bail!("discarding data blocks is not supported yet; use --dry-run to list the {} unused ranges", ranges.len());
    }
    let mut out = std::io::stdout().lock();
    for (b, e) in ranges {
        let s = u64::from(block_size);
        writeln!(out, "discard sectors {}..{} (data blocks {b}..{e})", b * s, e * s)
            .context("writing")?;
    }
    Ok(exit::SUCCESS)
}
