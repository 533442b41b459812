//! `thin_restore`: XML (0.9 or 1.x dialect) into an existing, pre-sized metadata file.

use anyhow::{Context, Result};
use thinly_engine::fsck::restore::restore_xml;

use super::dump::overrides;
use super::live;
use crate::cli::RestoreArgs;
use crate::exit;
use crate::files::{open_output, open_text_input, Progress};

pub fn run(a: &RestoreArgs) -> Result<u8> {
    let input = open_text_input(&a.input)?;
    live::may_write("thin_restore", &a.output)?;
    let dev = open_output(&a.output)?;
    let total_bytes = input.metadata().map_or(0, |m| m.len());
    let (_p, input) = Progress::reading("restoring metadata", input, total_bytes);
    let reader = std::io::BufReader::with_capacity(1 << 20, input);
    restore_xml(reader, dev, overrides(&a.overrides))
        .with_context(|| format!("restoring {} to {}", a.input.display(), a.output.display()))?;
    Ok(exit::SUCCESS)
}
