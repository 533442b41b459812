//! The block traces the `trace` suite replays (fio iolog v2: `DEV write OFFSET LENGTH`,
//! `DEV read …`, `DEV sync 0 0`), and the generator of the two that ship in `lab/traces/`.
//! The shipped files are the generator's output for fixed seeds (a test checks they still
//! are), small enough to read, and replayed by fio's `read_iolog` with `replay_no_stall`:
//! as fast as the engine answers, in order, one I/O at a time.
//!
//! - `db-4k`: a database-like mix: 4 KiB I/Os over 64 MiB, 70 % reads, 80 % of all I/Os
//!   on a hot fifth of the region, a flush after every 64 writes.
//! - `vm-seq`: a VM-image-like mix: sequential reads of 64 KiB … 1 MiB runs through 64 MiB,
//!   with scattered 4 KiB writes (one in five I/Os) and a flush after every 32 writes.

use anyhow::{Context, Result};
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use thinly_test_support::Rng;

/// A shipped trace: its name, the seed it was generated from, and its text.
pub struct Shipped {
    pub name: &'static str,
    pub seed: u64,
    pub text: &'static str,
}

pub const SHIPPED: [Shipped; 2] = [
    Shipped { name: "db-4k", seed: 18, text: include_str!("../../traces/db-4k.iolog") },
    Shipped { name: "vm-seq", seed: 19, text: include_str!("../../traces/vm-seq.iolog") },
];

/// The virtual size every shipped trace stays within.
pub const TRACE_REGION_BYTES: u64 = 64 << 20;

const KIB: u64 = 1 << 10;

/// The text of the shipped trace `name` generated from `seed`.
pub fn generate(name: &str, seed: u64) -> Option<String> {
    let mut rng = Rng(seed);
    let mut ops: Vec<(&str, u64, u64)> = Vec::new();
    let mut writes = 0u64;
    let mut write = |ops: &mut Vec<_>, off, len, every| {
        ops.push(("write", off, len));
        writes += 1;
        if writes.is_multiple_of(every) {
            ops.push(("sync", 0, 0));
        }
    };
    let blocks = TRACE_REGION_BYTES / (4 * KIB);
    match name {
        "db-4k" => {
            for _ in 0..4000 {
                let hot = rng.below(100) < 80;
                let b = if hot { rng.below(blocks / 5) } else { rng.below(blocks) };
                if rng.below(100) < 70 {
                    ops.push(("read", b * 4 * KIB, 4 * KIB));
                } else {
                    write(&mut ops, b * 4 * KIB, 4 * KIB, 64);
                }
            }
        }
        "vm-seq" => {
            let mut at = 0u64;
            for _ in 0..1500 {
                if rng.below(5) == 0 {
                    write(&mut ops, rng.below(blocks) * 4 * KIB, 4 * KIB, 32);
                    continue;
                }
                let len = (64 * KIB) << rng.below(5); // 64 KiB … 1 MiB
                if at + len > TRACE_REGION_BYTES {
                    at = 0;
                }
                ops.push(("read", at, len));
                at += len;
            }
        }
        _ => return None,
    }
    let mut text = String::from("fio version 2 iolog\ntrace add\ntrace open\n");
    for (what, off, len) in ops {
        let _ = writeln!(text, "trace {what} {off} {len}");
    }
    text.push_str("trace close\n");
    Some(text)
}

/// `thinly bench write-traces DIR`: writes the shipped traces as DIR/NAME.iolog.
pub fn write_shipped(dir: &Path) -> Result<()> {
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    for t in &SHIPPED {
        let p = dir.join(format!("{}.iolog", t.name));
        let text = generate(t.name, t.seed).context("a shipped trace has a generator")?;
        std::fs::write(&p, text).with_context(|| format!("writing {}", p.display()))?;
        println!("{}", p.display());
    }
    Ok(())
}

/// The file to replay for `trace` (a shipped name is written into `dir` first; anything
/// else is a path to a fio iolog) and its label.
pub fn resolve(trace: &str, dir: &Path) -> Result<(PathBuf, String)> {
    if let Some(t) = SHIPPED.iter().find(|t| t.name == trace) {
        let p = dir.join(format!("{}.iolog", t.name));
        std::fs::write(&p, t.text).with_context(|| format!("writing {}", p.display()))?;
        return Ok((p, t.name.to_string()));
    }
    let p = PathBuf::from(trace);
    let head = std::fs::read_to_string(&p).with_context(|| format!("reading the trace {trace}"))?;
    if !head.starts_with("fio version 2 iolog") {
        anyhow::bail!("{trace} is not a fio iolog (version 2)");
    }
    let label = p.file_stem().and_then(|s| s.to_str()).unwrap_or(trace).to_string();
    Ok((p, label))
}

/// The highest byte a trace touches (the engines' images must be at least this big).
pub fn extent_bytes(text: &str) -> u64 {
    text.lines()
        .filter_map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            let off = f.get(2)?.parse::<u64>().ok()?;
            let len = f.get(3)?.parse::<u64>().ok()?;
            off.checked_add(len)
        })
        .max()
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_shipped_traces_are_the_generators_output_for_their_seeds() {
        for t in &SHIPPED {
            assert_eq!(generate(t.name, t.seed).as_deref(), Some(t.text), "{}", t.name);
            assert!(extent_bytes(t.text) <= TRACE_REGION_BYTES);
            assert!(t.text.lines().any(|l| l.starts_with("trace sync")));
        }
        assert!(generate("nope", 1).is_none());
    }

    #[test]
    fn the_extent_of_a_trace_is_its_highest_byte() {
        let t = "fio version 2 iolog\ntrace add\ntrace write 4096 512\ntrace read 0 8192\n";
        assert_eq!(extent_bytes(t), 8192);
    }
}
