//! Side-by-side comparison of two runs of one workload (thinly and the kernel).
//!
//! What a reader of either pool sees must not differ: per device, the checksum of every
//! block; which devices exist; how many blocks each maps (exclusive and shared); which
//! operations failed; the sharing structure; the data blocks in use. Allocation order may
//! differ, so data block numbers are never compared. Metadata blocks in use depend on the
//! B-tree's shape and on when each side committed, so they are shown, not judged.

use super::observe::{MetaView, ReaderView, Sum};
use super::runner::OpOutcome;
use std::fmt;

/// One implementation's results.
pub struct Side<'a> {
    pub meta: &'a MetaView,
    /// What a reader of each device saw (thinly: Volume::read; kernel: the guest's dump).
    pub reader: &'a ReaderView,
    pub outcomes: &'a [OpOutcome],
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    Same,
    Differs,
    /// Shown for information only.
    Info,
}

#[derive(Debug, Clone)]
pub struct Row {
    pub scope: String,
    pub what: String,
    pub thinly: String,
    pub kernel: String,
    pub verdict: Verdict,
    /// Details of a difference (first few differing blocks, groups …).
    pub detail: String,
}

#[derive(Debug, Clone)]
pub struct Report {
    pub title: String,
    pub rows: Vec<Row>,
}

impl Report {
    /// No row differs.
    pub fn identical(&self) -> bool {
        self.rows.iter().all(|r| r.verdict != Verdict::Differs)
    }

    pub fn differences(&self) -> impl Iterator<Item = &Row> {
        self.rows.iter().filter(|r| r.verdict == Verdict::Differs)
    }

    fn push(&mut self, scope: &str, what: &str, a: String, b: String, detail: String) {
        let verdict = if a == b { Verdict::Same } else { Verdict::Differs };
        self.rows.push(Row {
            scope: scope.into(),
            what: what.into(),
            thinly: a,
            kernel: b,
            verdict,
            detail,
        });
    }

    fn info(&mut self, scope: &str, what: &str, a: String, b: String) {
        let (thinly, kernel) = (a, b);
        self.rows.push(Row {
            scope: scope.into(),
            what: what.into(),
            thinly,
            kernel,
            verdict: Verdict::Info,
            detail: String::new(),
        });
    }
}

impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let w = |get: &dyn Fn(&Row) -> usize, min: usize| {
            self.rows.iter().map(get).max().unwrap_or(0).max(min)
        };
        let (ws, ww) = (w(&|r| r.scope.len(), 5), w(&|r| r.what.len(), 4));
        let (wa, wb) = (w(&|r| r.thinly.len(), 6), w(&|r| r.kernel.len(), 6));
        writeln!(f, "== {} ==", self.title)?;
        writeln!(
            f,
            "{:<ws$}  {:<ww$}  {:>wa$}  {:>wb$}  VERDICT",
            "SCOPE", "WHAT", "THINLY", "KERNEL"
        )?;
        for r in &self.rows {
            let v = match r.verdict {
                Verdict::Same => "same",
                Verdict::Differs => "DIFFERS",
                Verdict::Info => "(info)",
            };
            writeln!(
                f,
                "{:<ws$}  {:<ww$}  {:>wa$}  {:>wb$}  {v}",
                r.scope, r.what, r.thinly, r.kernel
            )?;
            if !r.detail.is_empty() {
                writeln!(f, "{:ws$}    {}", "", r.detail)?;
            }
        }
        let n = self.differences().count();
        if n == 0 {
            writeln!(f, "identical: thinly and the kernel agree on contents, mappings, sharing and data usage")
        } else {
            writeln!(f, "{n} difference(s)")
        }
    }
}

fn sums_summary(s: Option<&Vec<Sum>>) -> String {
    match s {
        None => "absent".into(),
        Some(v) => format!("{} nonzero/{}", v.iter().filter(|&&x| x != 0).count(), v.len()),
    }
}

/// Blocks where two sum lists differ: "vblock V: thinly S, kernel S" for the first few.
fn block_diffs(
    a: Option<&Vec<Sum>>,
    b: Option<&Vec<Sum>>,
    labels: (&str, &str),
) -> (usize, String) {
    let (Some(a), Some(b)) = (a, b) else { return (0, String::new()) };
    let diffs: Vec<usize> = (0..a.len().max(b.len())).filter(|&i| a.get(i) != b.get(i)).collect();
    let show: Vec<String> = diffs
        .iter()
        .take(6)
        .map(|&i| {
            let f = |v: Option<&Sum>| {
                v.map_or("-".into(), |s| if *s == 0 { "zeros".into() } else { format!("{s:016x}") })
            };
            format!("vblock {i}: {} {} {} {}", labels.0, f(a.get(i)), labels.1, f(b.get(i)))
        })
        .collect();
    (diffs.len(), show.join("; "))
}

fn mapped(s: &Side, dev: u64) -> String {
    s.meta.devices.get(&dev).map_or("absent".into(), |d| {
        let (e, sh) = s.meta.exclusive_shared(dev);
        format!("{} ({e} excl, {sh} shared)", d.mappings.len())
    })
}

/// Device ids as compact ranges: "0-50" or "1,2,4,7-9".
fn id_list(s: &Side) -> String {
    let ids: Vec<u64> = s.meta.devices.keys().copied().collect();
    let mut out: Vec<String> = Vec::new();
    let mut i = 0;
    while i < ids.len() {
        let mut j = i;
        while j + 1 < ids.len() && ids[j + 1] == ids[j] + 1 {
            j += 1;
        }
        out.push(if j > i { format!("{}-{}", ids[i], ids[j]) } else { ids[i].to_string() });
        i = j + 1;
    }
    if out.is_empty() {
        "none".into()
    } else {
        out.join(",")
    }
}

/// Compares the two runs of one script.
pub fn compare(title: &str, t: &Side, k: &Side) -> Report {
    let mut r = Report { title: title.to_string(), rows: Vec::new() };
    // Operations.
    let fails = |o: &[OpOutcome]| {
        o.iter().filter(|x| !x.ok).map(|x| x.line.to_string()).collect::<Vec<_>>()
    };
    let (ft, fk) = (fails(t.outcomes), fails(k.outcomes));
    let summary =
        |o: &[OpOutcome], f: &[String]| format!("{} ok, {} failed", o.len() - f.len(), f.len());
    let detail = if ft != fk {
        format!("failed lines: thinly [{}], kernel [{}]", ft.join(" "), fk.join(" "))
    } else {
        String::new()
    };
    r.push("ops", "outcomes", summary(t.outcomes, &ft), summary(k.outcomes, &fk), detail);
    // Devices: one summary row per field; a row per device only where the device differs.
    r.push("pool", "devices", id_list(t), id_list(k), String::new());
    let tid = |s: &Side| s.meta.transaction_id.to_string();
    r.push("pool", "transaction id", tid(t), tid(k), String::new());
    let all: std::collections::BTreeSet<u64> =
        t.meta.devices.keys().chain(k.meta.devices.keys()).copied().collect();
    let mut per_dev = Report { title: String::new(), rows: Vec::new() };
    for &dev in &all {
        let scope = format!("dev {dev}");
        let (rt, rk) = (t.reader.get(&dev), k.reader.get(&dev));
        let (n, detail) = block_diffs(rt, rk, ("thinly", "kernel"));
        let mut a = sums_summary(rt);
        let mut b = sums_summary(rk);
        if n > 0 {
            a.push_str(&format!(" ({n} differ)"));
            b.push_str(&format!(" ({n} differ)"));
        }
        per_dev.push(&scope, "block checksums (reader)", a, b, detail);
        per_dev.push(&scope, "mapped blocks", mapped(t, dev), mapped(k, dev), String::new());
        let details = |s: &Side| {
            s.meta
                .devices
                .get(&dev)
                .map_or("absent".into(), |d| d.details_mapped_blocks.to_string())
        };
        per_dev.push(&scope, "details.mapped_blocks", details(t), details(k), String::new());
    }
    let total = |s: &Side, f: &dyn Fn(&Side, u64) -> u64| all.iter().map(|&d| f(s, d)).sum::<u64>();
    let nonzero = |s: &Side, d: u64| {
        s.reader.get(&d).map_or(0, |v| v.iter().filter(|&&x| x != 0).count() as u64)
    };
    let nblocks = |s: &Side, d: u64| s.reader.get(&d).map_or(0, |v| v.len() as u64);
    let nmapped = |s: &Side, d: u64| s.meta.devices.get(&d).map_or(0, |x| x.mappings.len() as u64);
    let ndetails = |s: &Side, d: u64| s.meta.devices.get(&d).map_or(0, |x| x.details_mapped_blocks);
    let differing = |what: &str| {
        per_dev.rows.iter().filter(|x| x.what == what && x.verdict == Verdict::Differs).count()
    };
    for (what, a, b) in [
        (
            "block checksums (reader)",
            format!("{} nonzero/{}", total(t, &nonzero), total(t, &nblocks)),
            format!("{} nonzero/{}", total(k, &nonzero), total(k, &nblocks)),
        ),
        ("mapped blocks", total(t, &nmapped).to_string(), total(k, &nmapped).to_string()),
        ("details.mapped_blocks", total(t, &ndetails).to_string(), total(k, &ndetails).to_string()),
    ] {
        let n = differing(what);
        let verdict = if n == 0 { Verdict::Same } else { Verdict::Differs };
        let detail =
            if n == 0 { String::new() } else { format!("{n} device(s) differ (rows below)") };
        r.rows.push(Row {
            scope: format!("all devs ({})", all.len()),
            what: what.into(),
            thinly: a,
            kernel: b,
            verdict,
            detail,
        });
    }
    let diff_rows: Vec<Row> =
        per_dev.rows.into_iter().filter(|x| x.verdict == Verdict::Differs).collect();
    r.rows.extend(diff_rows);
    // Each side's reads agree with its own mappings and data (checked by the caller and
    // passed in as `consistent`), and its space map with what the mappings use.
    let users = |s: &Side| s.meta.data_block_users().len() as u64;
    r.push(
        "pool",
        "data blocks used",
        t.meta.used_data_blocks.to_string(),
        k.meta.used_data_blocks.to_string(),
        String::new(),
    );
    r.push(
        "pool",
        "distinct data blocks mapped",
        users(t).to_string(),
        users(k).to_string(),
        String::new(),
    );
    r.push(
        "pool",
        "total data blocks",
        t.meta.total_data_blocks.to_string(),
        k.meta.total_data_blocks.to_string(),
        String::new(),
    );
    let (gt, gk) = (t.meta.sharing_groups(), k.meta.sharing_groups());
    let detail = match (gt.difference(&gk).next(), gk.difference(&gt).next()) {
        (None, None) => String::new(),
        (a, b) => format!("e.g. only thinly: {a:?}; only kernel: {b:?}"),
    };
    let desc = |g: &std::collections::BTreeSet<Vec<(u64, u64)>>| {
        format!("{} groups, {} members", g.len(), g.iter().map(|x| x.len()).sum::<usize>())
    };
    r.push("pool", "sharing (dev,vblock groups)", desc(&gt), desc(&gk), detail);
    r.info(
        "pool",
        "metadata blocks used",
        format!("{}/{}", t.meta.used_metadata_blocks, t.meta.total_metadata_blocks),
        format!("{}/{}", k.meta.used_metadata_blocks, k.meta.total_metadata_blocks),
    );
    r.info("pool", "metadata time", t.meta.time.to_string(), k.meta.time.to_string());
    r
}

/// Adds a row saying whether each side's reader view matches what its own metadata and
/// data file say (a reader and the on-disk mappings agree).
pub fn consistency_row(
    report: &mut Report,
    thinly_ok: Result<(), String>,
    kernel_ok: Result<(), String>,
) {
    let s = |r: &Result<(), String>| if r.is_ok() { "yes".to_string() } else { "NO".to_string() };
    let detail = [("thinly", &thinly_ok), ("kernel", &kernel_ok)]
        .iter()
        .filter_map(|(n, r)| r.as_ref().err().map(|e| format!("{n}: {e}")))
        .collect::<Vec<_>>()
        .join("; ");
    let verdict =
        if thinly_ok.is_ok() && kernel_ok.is_ok() { Verdict::Same } else { Verdict::Differs };
    report.rows.push(Row {
        scope: "pool".into(),
        what: "reads = mappings+data file".into(),
        thinly: s(&thinly_ok),
        kernel: s(&kernel_ok),
        verdict,
        detail,
    });
}

/// Adds rows comparing the live status lines: thinly's `PoolStatus` and the kernel's
/// `dmsetup status` of the pool (`0 LEN thin-pool TID META/TOTAL DATA/TOTAL HELD MODE …`).
pub fn status_rows(
    report: &mut Report,
    thinly: &thinly_engine::pool::PoolStatus,
    kernel_line: &str,
) {
    let w: Vec<&str> = kernel_line.split_whitespace().collect();
    let field = |i: usize| w.get(i).copied().unwrap_or("?").to_string();
    report.push(
        "status",
        "used/total data blocks",
        format!("{}/{}", thinly.used_data_blocks, thinly.total_data_blocks),
        field(5),
        String::new(),
    );
    report.push("status", "mode", thinly.mode.clone(), field(7), String::new());
    report.push(
        "status",
        "transaction id",
        thinly.transaction_id.to_string(),
        field(3),
        String::new(),
    );
    report.info(
        "status",
        "used/total metadata blocks",
        format!("{}/{}", thinly.used_metadata_blocks, thinly.total_metadata_blocks),
        field(4),
    );
}

/// Whether a reader view equals the view rebuilt from the mappings and the data file.
pub fn check_consistent(reader: &ReaderView, from_files: &ReaderView) -> Result<(), String> {
    let mut bad = Vec::new();
    for (dev, sums) in reader {
        let (n, d) = block_diffs(Some(sums), from_files.get(dev), ("read", "files"));
        if from_files.get(dev).is_none() {
            bad.push(format!("dev {dev} is not in the metadata"));
        } else if n > 0 {
            bad.push(format!("dev {dev}: {n} blocks ({d})"));
        }
    }
    if bad.is_empty() {
        Ok(())
    } else {
        Err(bad.join("; "))
    }
}
