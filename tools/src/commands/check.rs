//! `thin_check`: prints what 0.9.0 prints (progress lines and problems on stderr,
//! `TRANSACTION_ID=` and `METADATA_FREE_BLOCKS=` on stdout), exit 0 when the metadata
//! passes.

use anyhow::{Context, Result};
use thinly_engine::fsck::check::{auto_repair, check, clear_needs_check, CheckOptions};

use crate::cli::CheckArgs;
use crate::exit;
use crate::files::{open_input, Progress};

pub fn run(a: &CheckArgs) -> Result<u8> {
    let dev = open_input(&a.input, a.clear_needs_check || a.auto_repair)?;
    let opts = CheckOptions {
        super_block_only: a.super_block_only,
        skip_mappings: a.skip_mappings,
        metadata_snap: a.metadata_snap,
    };
    if !a.quiet {
        // 0.9.0's progress lines (stderr), so logs look the same.
        eprintln!("examining superblock");
        if !a.super_block_only {
            eprintln!("examining devices tree\nexamining mapping tree");
            if !a.skip_mappings && !a.metadata_snap {
                eprintln!("checking space map counts");
            }
        }
    }
    let report = {
        let (_p, counted) = Progress::metadata("checking metadata", dev.clone());
        check(counted, &opts).with_context(|| format!("checking {}", a.input.display()))?
    };
    let passes = report.passes(a.ignore_non_fatal_errors);
    if !a.quiet {
        if let Some(sb) = &report.superblock {
            println!("TRANSACTION_ID={}", sb.trans_id);
            if let Some(free) = report.metadata_free_blocks() {
                println!("METADATA_FREE_BLOCKS={free}");
            }
        }
        for p in &report.problems {
            let grade = if p.fatal { "" } else { " (non-fatal)" };
            eprintln!("{p}{grade}");
        }
    }
    if a.auto_repair && !report.problems.is_empty() && !report.has_fatal() {
        let fixed = auto_repair(dev.clone(), &report).context("repairing the metadata")?;
        let again = check(dev.clone(), &opts).context("checking the repaired metadata")?;
        if !a.quiet {
            eprintln!("auto-repair: set {fixed} reference counts right");
        }
        return Ok(if again.passes(false) { exit::SUCCESS } else { exit::FAILURE });
    }
    if (a.clear_needs_check || a.auto_repair) && passes {
        clear_needs_check(&dev).context("clearing the needs_check flag")?;
    }
    Ok(if passes { exit::SUCCESS } else { exit::FAILURE })
}
