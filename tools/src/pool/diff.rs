//! `thinly diff A B`: the byte ranges where B's data blocks differ from A's, through the
//! serving pool's control socket or, when nobody serves it, on the pool opened here once.
//! Bounded requests (`Request::Diff`) are repeated from where each answer stops, so a huge
//! diff never makes one huge answer; each step is consistent on its own (diff snapshots,
//! which do not change, for a backup).

use super::control::{self, execute, Request, Response, MAX_DIFF_RANGES_PER_REQUEST};
use anyhow::{bail, Context, Result};
use std::io::Write;
use std::path::Path;
use thinly_engine::io::IoMode;
use thinly_engine::pool::Pool;

/// One step's answer.
#[derive(Debug, serde::Deserialize)]
struct Step {
    ranges: Vec<(u64, u64)>,
    complete_to_bytes: u64,
    size_bytes: u64,
}

/// Prints the changed ranges of `b` against `a` (or their totals with `stat`).
pub fn run(dir: &Path, a: &str, b: &str, json: bool, stat: bool) -> Result<()> {
    let request = |offset| Request::Diff {
        base: a.to_string(),
        target: b.to_string(),
        offset_bytes: offset,
        max_ranges: MAX_DIFF_RANGES_PER_REQUEST,
    };
    let ranges = match control::send(dir, &request(0)) {
        Some(first) => {
            let first =
                first.with_context(|| format!("talking to the server of {}", dir.display()))?;
            collect(first, |off| {
                control::send(dir, &request(off))
                    .context("the server went away")?
                    .context("talking to the server")
            })?
        }
        None => {
            if !Pool::exists(dir) {
                bail!("no pool in {}", dir.display());
            }
            let pool = Pool::open(dir, IoMode::Auto)
                .with_context(|| format!("opening the pool in {}", dir.display()))?;
            let r = collect(execute(&pool, &request(0)), |off| Ok(execute(&pool, &request(off))));
            pool.close().context("closing the pool")?;
            r?
        }
    };
    print(&ranges, json, stat)
}

/// Follows the steps from `first` to the end; adjacent ranges of two steps are merged.
fn collect(
    first: Response,
    mut next: impl FnMut(u64) -> Result<Response>,
) -> Result<Vec<(u64, u64)>> {
    let mut out: Vec<(u64, u64)> = Vec::new();
    let mut response = first;
    let mut at = 0u64;
    loop {
        if !response.ok {
            bail!("{}", response.error.unwrap_or_else(|| "diff failed".into()));
        }
        let step: Step = serde_json::from_value(response.result).context("a diff answer")?;
        for (offset, len) in step.ranges {
            match out.last_mut() {
                Some((o, l)) if *o + *l == offset => *l += len,
                _ => out.push((offset, len)),
            }
        }
        if step.complete_to_bytes >= step.size_bytes {
            return Ok(out);
        }
        if step.complete_to_bytes <= at && at > 0 {
            bail!("the diff made no progress at offset {at}");
        }
        at = step.complete_to_bytes;
        response = next(at)?;
    }
}

fn print(ranges: &[(u64, u64)], json: bool, stat: bool) -> Result<()> {
    let mut out = std::io::BufWriter::new(std::io::stdout().lock());
    let changed: u64 = ranges.iter().map(|r| r.1).sum();
    match (json, stat) {
        (true, true) => {
            let v = serde_json::json!({ "changed_bytes": changed, "extents": ranges.len() });
            writeln!(out, "{v}")?;
        }
        (false, true) => writeln!(out, "{changed} bytes changed in {} extents", ranges.len())?,
        (true, false) => {
            let v: Vec<_> = ranges
                .iter()
                .map(|(o, l)| serde_json::json!({ "offset": o, "length": l }))
                .collect();
            writeln!(out, "{}", serde_json::Value::Array(v))?;
        }
        (false, false) => {
            for (o, l) in ranges {
                writeln!(out, "{o} {l}")?;
            }
        }
    }
    out.flush()?;
    Ok(())
}
