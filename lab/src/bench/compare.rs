//! `thinly bench compare A B`: two runs side by side. Every (suite, case, engine) of
//! either run is one line: A's and B's medians, the change B ÷ A − 1, its 95 % interval
//! (`stats::ratio_interval` over the two runs' rounds) and what it says: better, worse, or
//! within the noise when the interval holds no change (1.0). "Better" follows the figure:
//! more IOPS, fewer milliseconds. Rows in only one run are listed with the other side
//! empty.

use super::results::{Kind, Results, Row};
use super::stats::{self, Interval};
use anyhow::{Context, Result};
use std::fmt::Write as _;
use std::path::Path;

/// One line of a comparison.
#[derive(Debug, Clone, PartialEq)]
pub struct Change {
    pub suite: String,
    pub case: String,
    pub engine: String,
    pub unit: &'static str,
    pub a: Option<f64>,
    pub b: Option<f64>,
    /// B ÷ A of the medians.
    pub ratio: Option<f64>,
    /// B ÷ A with its interval (two rounds or more on both sides).
    pub ci: Option<Interval>,
    pub verdict: &'static str,
}

fn median(row: Option<&Row>) -> Option<f64> {
    row.and_then(|r| r.headline()).map(|s| s.median)
}

fn verdict(kind: Kind, ci: Option<Interval>, both: bool) -> &'static str {
    let Some(ci) = ci else {
        return if both { "no interval (1 round)" } else { "only in one run" };
    };
    let up = ci.lo > 1.0;
    let down = ci.hi < 1.0;
    match (kind, up, down) {
        (Kind::Io, true, _) | (Kind::TimeMs, _, true) => "better",
        (Kind::Io, _, true) | (Kind::TimeMs, true, _) => "worse",
        _ => "within noise",
    }
}

/// Every row of `a` and `b`, matched by (suite, case, engine).
pub fn compare(a: &Results, b: &Results) -> Vec<Change> {
    let key = |r: &Row| (r.suite.clone(), r.case.clone(), r.engine.clone());
    let mut keys: Vec<(String, String, String)> = Vec::new();
    for r in a.rows.iter().chain(&b.rows) {
        if !keys.contains(&key(r)) {
            keys.push(key(r));
        }
    }
    keys.into_iter()
        .map(|(suite, case, engine)| {
            let find = |r: &Results| -> Option<Row> {
                let hit = r
                    .rows
                    .iter()
                    .find(|x| x.suite == suite && x.case == case && x.engine == engine);
                hit.cloned()
            };
            let (ra, rb) = (find(a), find(b));
            let kind = ra.as_ref().or(rb.as_ref()).map(|r| r.kind).unwrap_or(Kind::Io);
            let (ma, mb) = (median(ra.as_ref()), median(rb.as_ref()));
            let ci = match (&ra, &rb) {
                (Some(x), Some(y)) => stats::ratio_interval(&y.values(), &x.values()),
                _ => None,
            };
            Change {
                suite,
                case,
                engine,
                unit: if kind == Kind::Io { "IOPS" } else { "ms" },
                a: ma,
                b: mb,
                ratio: ma.zip(mb).filter(|(x, _)| *x > 0.0).map(|(x, y)| y / x),
                ci,
                verdict: verdict(kind, ci, ma.is_some() && mb.is_some()),
            }
        })
        .collect()
}

/// The comparison as a Markdown table.
pub fn markdown(a_name: &str, b_name: &str, changes: &[Change]) -> String {
    let mut out = format!(
        "# thinly bench compare\n\nA: `{a_name}`\n\nB: `{b_name}`\n\n\
         | suite | case | engine | unit | A | B | change | 95 % CI of B ÷ A | verdict |\n\
         |---|---|---|---|---:|---:|---:|---:|---|\n"
    );
    let num = |v: Option<f64>| v.map(|v| format!("{v:.2}")).unwrap_or_else(|| "—".into());
    for c in changes {
        let change = c.ratio.map(|r| format!("{:+.1} %", (r - 1.0) * 100.0)).unwrap_or("—".into());
        let ci = c.ci.map(|i| format!("{:.3}–{:.3}", i.lo, i.hi)).unwrap_or("—".into());
        let _ = writeln!(
            out,
            "| {} | {} | {} | {} | {} | {} | {change} | {ci} | {} |",
            c.suite,
            c.case,
            c.engine,
            c.unit,
            num(c.a),
            num(c.b),
            c.verdict
        );
    }
    out
}

/// `thinly bench compare A B [--out FILE]`.
pub fn run(a: &Path, b: &Path, out: Option<&Path>) -> Result<()> {
    let (ra, rb) = (Results::load(a)?, Results::load(b)?);
    let text = markdown(&a.display().to_string(), &b.display().to_string(), &compare(&ra, &rb));
    print!("{text}");
    if let Some(p) = out {
        std::fs::write(p, &text).with_context(|| format!("writing {}", p.display()))?;
    }
    Ok(())
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::bench::results::IoSample;

    fn io(iops: f64) -> IoSample {
        IoSample {
            iops,
            mib_s: 0.0,
            lat_p50_us: 0.0,
            lat_p90_us: None,
            lat_p99_us: 0.0,
            lat_p999_us: None,
            lat_max_us: None,
            total_ios: None,
            write_bytes: 0,
            server_cpu_us_per_io: None,
            seed: None,
            raw: None,
        }
    }

    pub(crate) fn results(rows: Vec<Row>) -> Results {
        let text = r#"{"started_unix":0,"total_secs":0,"command":[],"machine":{"nproc":2,
            "memory_bytes":0,"kernel":"","cpu":"","filesystem":""},"tools":[],"config":{
            "quick":true,"repeat":2,"runtime":1.0,"ramp":0.0,"region_bytes":1,"fresh_bytes":1,
            "depths":[],"depth_region_bytes":1,"cow_region_bytes":1,"snapshots_max":1,
            "snapshot_points":[]},"servers":[],"rows":[],"space":[],"curves":[],"load":[],
            "skipped":[]}"#;
        let mut r: Results = serde_json::from_str(text).expect("a results.json of an older run");
        r.rows = rows;
        r
    }

    pub(crate) fn row(case: &str, kind: Kind, v: &[f64]) -> Row {
        let mut r = results(vec![]);
        let row = r.row("basic", case, "thinly", kind);
        match kind {
            Kind::Io => row.io = v.iter().map(|x| io(*x)).collect(),
            Kind::TimeMs => row.time_ms = v.to_vec(),
        }
        row.clone()
    }

    #[test]
    fn compare_gives_the_change_per_row_and_judges_it_by_its_interval() {
        let a = results(vec![
            row("fast", Kind::Io, &[100.0, 102.0]),
            row("same", Kind::Io, &[100.0, 120.0]),
            row("snap", Kind::TimeMs, &[10.0, 10.2]),
            row("gone", Kind::Io, &[1.0, 1.0]),
        ]);
        let b = results(vec![
            row("fast", Kind::Io, &[200.0, 204.0]),
            row("same", Kind::Io, &[110.0, 105.0]),
            row("snap", Kind::TimeMs, &[20.0, 20.4]),
            row("new", Kind::Io, &[5.0]),
        ]);
        let c = compare(&a, &b);
        let by = |case: &str| c.iter().find(|x| x.case == case).expect("a line per case");
        assert_eq!(by("fast").ratio, Some(2.0));
        assert_eq!(by("fast").verdict, "better");
        assert_eq!(by("same").verdict, "within noise");
        assert_eq!(by("snap").verdict, "worse", "twice the milliseconds is worse");
        assert_eq!((by("gone").b, by("gone").verdict), (None, "only in one run"));
        assert_eq!((by("new").a, by("new").b), (None, Some(5.0)));
        assert_eq!(c.len(), 5);
        let md = markdown("a", "b", &c);
        assert!(md.contains("| basic | fast | thinly | IOPS | 101.00 | 202.00 | +100.0 % |"));
    }
}
