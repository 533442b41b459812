//! `thin_rmap`: which thin blocks map the given data block regions.

use std::io::Write;

use anyhow::{Context, Result};
use thinly_engine::fsck::rmap::{rmap, Region};

use super::live;
use crate::cli::RmapArgs;
use crate::exit;
use crate::files::open_input;

pub fn run(a: &RmapArgs) -> Result<u8> {
    let regions = a.regions.iter().map(|r| Region::parse(r)).collect::<Result<Vec<_>, _>>()?;
    live::may_read("thin_rmap", &a.input, a.force, false)?;
    let dev = open_input(&a.input, false)?;
    let text =
        rmap(dev, &regions).with_context(|| format!("reverse mapping {}", a.input.display()))?;
    std::io::stdout().lock().write_all(text.as_bytes()).context("writing the reverse map")?;
    Ok(exit::SUCCESS)
}
