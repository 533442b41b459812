//! `thin_ls`: one row per device, the columns `-o/--format` asks for. The metadata is
//! checked first (as `thin_check` would check it): a listing of damaged metadata fails
//! with thin_check's status instead of printing a partial or wrong table.

use std::io::Write;

use anyhow::{Context, Result};
use thinly_engine::fsck::check::{check, CheckOptions};
use thinly_engine::fsck::ls::{list, render, Field, DEFAULT_FIELDS};

use super::live;
use crate::cli::LsArgs;
use crate::exit;
use crate::files::open_input;

pub fn run(a: &LsArgs) -> Result<u8> {
    let fields = match &a.format {
        Some(f) => Field::parse_list(f)?,
        None => DEFAULT_FIELDS.to_vec(),
    };
    live::may_read("thin_ls", &a.input, a.force, a.metadata_snap)?;
    let dev = open_input(&a.input, false)?;
    let opts = CheckOptions { metadata_snap: a.metadata_snap, ..CheckOptions::default() };
    let report =
        check(dev.clone(), &opts).with_context(|| format!("checking {}", a.input.display()))?;
    if report.has_fatal() {
        for p in report.problems.iter().filter(|p| p.fatal) {
            eprintln!("{p}");
        }
        anyhow::bail!("{}: the metadata fails thin_check; run thin_repair", a.input.display());
    }
    let (block_size, rows) = list(dev, a.metadata_snap, &fields)
        .with_context(|| format!("listing {}", a.input.display()))?;
    let text = render(&fields, &rows, block_size, !a.no_headers);
    std::io::stdout().lock().write_all(text.as_bytes()).context("writing the listing")?;
    Ok(exit::SUCCESS)
}
