//! `thin_metadata_size`: parses 1.x's options (see `cli`), has the engine's
//! `fsck::metadata_size` validate, estimate and render, prints the line.

use std::io::Write;

use anyhow::Result;
use thinly_engine::fsck::metadata_size::{Estimate, Format};

use crate::cli::MetadataSizeArgs;
use crate::exit;

pub fn run(a: &MetadataSizeArgs) -> Result<u8> {
    let format = match a.numeric_only.as_deref() {
        None => Format::Full,
        Some("short") => Format::ShortUnits,
        Some("long") => Format::LongUnits,
        Some(_) => Format::NumericOnly,
    };
    let e = Estimate {
        block_bytes: a.block_size,
        pool_bytes: a.pool_size,
        max_thins: a.max_thins,
        unit: a.unit,
        format,
    };
    e.validate()?;
    // A closed pipe is not worth a word (see `exit::fail`), and the status is the same.
    std::io::stdout().write_all(e.render().as_bytes())?;
    Ok(exit::SUCCESS)
}
