//! `thin_check`: prints what 0.9.0 prints (progress lines and problems on stderr,
//! `TRANSACTION_ID=` and `METADATA_FREE_BLOCKS=` on stdout), exit 0 when the metadata
//! passes. `--clear-needs-check-flag` and `--auto-repair` both mend leaked blocks before
//! clearing needs_check (1.x), so a pool whose metadata only leaks activates under LVM.

use std::io::Write;

use anyhow::{bail, Context, Result};
use thinly_engine::fsck::check::{auto_repair, check, clear_needs_check, CheckOptions};

use super::live;
use crate::cli::CheckArgs;
use crate::exit;
use crate::files::{open_input, Progress};

pub fn run(a: &CheckArgs) -> Result<u8> {
    let repairs = a.clear_needs_check || a.auto_repair;
    let overridden = a.override_mapping_root.is_some() || a.override_details_root.is_some();
    if repairs && overridden {
        bail!("cannot perform repair outside the actual metadata");
    }
    if repairs {
        live::may_write("thin_check", &a.input)?;
    }
    live::may_read("thin_check", &a.input, a.force, a.metadata_snap)?;
    let dev = open_input(&a.input, repairs)?;
    let opts = CheckOptions {
        super_block_only: a.super_block_only,
        skip_mappings: a.skip_mappings,
        metadata_snap: a.metadata_snap,
        override_mapping_root: a.override_mapping_root,
        override_details_root: a.override_details_root,
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
    if !a.quiet && !report.metadata_snap_unusable {
        if let Some(sb) = &report.superblock {
            let mut figures = format!("TRANSACTION_ID={}\n", sb.trans_id);
            if let Some(free) = report.metadata_free_blocks() {
                figures.push_str(&format!("METADATA_FREE_BLOCKS={free}\n"));
            }
            std::io::stdout().write_all(figures.as_bytes()).context("printing the figures")?;
        }
    }
    if !a.quiet {
        for p in &report.problems {
            let grade = if p.fatal { "" } else { " (non-fatal)" };
            eprintln!("{p}{grade}");
        }
    }
    // 1.x: --clear-needs-check-flag (LVM's default) mends leaks as --auto-repair does.
    if repairs && !report.problems.is_empty() && !report.has_fatal() {
        let fixed = auto_repair(dev.clone(), &report).context("repairing the metadata")?;
        let again = check(dev.clone(), &opts).context("checking the repaired metadata")?;
        if !a.quiet {
            eprintln!("auto-repair: set {fixed} reference counts right");
        }
        return Ok(if again.passes(false) { exit::SUCCESS } else { exit::FAILURE });
    }
    if repairs && passes {
        clear_needs_check(&dev).context("clearing the needs_check flag")?;
    }
    Ok(if passes { exit::SUCCESS } else { exit::FAILURE })
}
