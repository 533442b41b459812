//! `thin_repair`: salvages damaged metadata into a new, pre-sized output.

use anyhow::{Context, Result};
use thinly_engine::fsck::repair::repair;

use super::dump::overrides;
use super::live;
use crate::cli::RepairArgs;
use crate::exit;
use crate::files::{open_input, open_output, Progress};

pub fn run(a: &RepairArgs) -> Result<u8> {
    live::may_write("thin_repair", &a.output)?;
    live::may_read("thin_repair", &a.input, false, false)?;
    let input = open_input(&a.input, false)?;
    let output = open_output(&a.output)?;
    let (_p, input) = Progress::metadata("repairing metadata", input);
    let stats = repair(input, output, overrides(&a.overrides))
        .with_context(|| format!("repairing {} into {}", a.input.display(), a.output.display()))?;
    if !a.quiet {
        eprintln!(
            "recovered {} devices, {} mappings ({} damaged subtrees, {} reattached)",
            stats.nr_devices, stats.nr_mappings, stats.nr_damaged, stats.nr_reattached
        );
    }
    Ok(exit::SUCCESS)
}
