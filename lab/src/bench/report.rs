//! Writes a run's results: results.json (everything, for reproduction), results.csv (one
//! record per row, by the `csv` crate), results.md (the tables, the targets with their
//! intervals, the machine, the commands) and the SVG plots (`plot`). Ratios compare an
//! engine with the best OTHER engine that stores data (the null exports never count):
//! IOPS ÷ best other IOPS, or best other time ÷ time (so > 1 is better), with the 95 %
//! interval of `stats::ratio_interval` over the rounds.

use super::plot;
use super::results::{Kind, Results, Row, Stats};
use super::stats::{self, Interval, Verdict};
use super::suites;
use anyhow::{Context, Result};
use std::fmt::Write as _;
use std::path::Path;

pub fn write_all(r: &Results, out: &Path) -> Result<()> {
    let write = |name: &str, bytes: &[u8]| {
        let p = out.join(name);
        std::fs::write(&p, bytes).with_context(|| format!("writing {}", p.display()))
    };
    write(
        "results.json",
        serde_json::to_string_pretty(r).context("encoding results.json")?.as_bytes(),
    )?;
    write("results.csv", &csv(r)?)?;
    let plots = plot::all(r);
    for p in &plots {
        write(&p.file, p.svg.as_bytes())?;
    }
    write("results.md", markdown(r, &plots).as_bytes())?;
    Ok(())
}

/// The rows of a suite, grouped by case (in order of first appearance), engines in order.
fn ordered<'a>(r: &'a Results, suite: &str) -> Vec<&'a Row> {
    let mut cases: Vec<&str> = Vec::new();
    let mut engines: Vec<&str> = Vec::new();
    for row in r.rows.iter().filter(|x| x.suite == suite) {
        if !cases.contains(&row.case.as_str()) {
            cases.push(&row.case);
        }
    }
    for row in &r.rows {
        if !engines.contains(&row.engine.as_str()) {
            engines.push(&row.engine);
        }
    }
    let mut rows: Vec<&Row> = r.rows.iter().filter(|x| x.suite == suite).collect();
    let pos = |v: &[&str], s: &str| v.iter().position(|x| *x == s).unwrap_or(usize::MAX);
    rows.sort_by_key(|x| (pos(&cases, &x.case), pos(&engines, &x.engine)));
    rows
}

/// The best other engine's row for `row`'s case: the highest median IOPS or the lowest
/// median time among engines that store data.
fn best_other<'a>(r: &'a Results, row: &Row) -> Option<&'a Row> {
    let others = r.rows.iter().filter(|o| {
        o.suite == row.suite && o.case == row.case && o.engine != row.engine && !o.ceiling
    });
    let key = |o: &&Row| o.headline().map(|s| s.median);
    let with: Vec<(&Row, f64)> = others.filter_map(|o| key(&o).map(|m| (o, m))).collect();
    let best = match row.kind {
        Kind::Io => with.into_iter().max_by(|a, b| a.1.total_cmp(&b.1)),
        Kind::TimeMs => with.into_iter().min_by(|a, b| a.1.total_cmp(&b.1)),
    };
    best.map(|b| b.0)
}

/// This row against the best other engine: the ratio of medians, and the 95 % interval
/// (`None` under two rounds on either side).
pub fn ratio(r: &Results, row: &Row) -> Option<(f64, Option<Interval>)> {
    let other = best_other(r, row)?;
    let (mine, theirs) = (row.headline()?.median, other.headline()?.median);
    match row.kind {
        Kind::Io => Some((mine / theirs, stats::ratio_interval(&row.values(), &other.values()))),
        Kind::TimeMs => {
            Some((theirs / mine, stats::ratio_interval(&other.values(), &row.values())))
        }
    }
}

/// The `tls` suite's TLS / TCP ratios of median IOPS, per case and engine (1.00: TLS
/// costs nothing; 0.50: half the throughput). Empty when the suite did not run.
fn tls_ratios(r: &Results) -> String {
    let mut cases: Vec<&str> = Vec::new();
    let mut engines: Vec<&str> = Vec::new();
    for row in r.rows.iter().filter(|x| x.suite == "tls") {
        if let Some(c) = row.case.strip_suffix(", tls") {
            if !cases.contains(&c) {
                cases.push(c);
            }
            if !engines.contains(&row.engine.as_str()) {
                engines.push(&row.engine);
            }
        }
    }
    if cases.is_empty() {
        return String::new();
    }
    let mut out = String::from("\n### tls: TLS / plain TCP (median IOPS)\n\n| case |");
    for e in &engines {
        let _ = write!(out, " {e} |");
    }
    out.push_str("\n|---|");
    out.push_str(&"---:|".repeat(engines.len()));
    out.push('\n');
    for c in cases {
        let _ = write!(out, "| {c} |");
        for e in &engines {
            let tls = median(r, "tls", &format!("{c}, tls"), e);
            let tcp = median(r, "tls", &format!("{c}, tcp"), e);
            let ratio = tls.zip(tcp).filter(|(_, t)| *t > 0.0).map(|(a, b)| a / b);
            let _ = write!(out, " {} |", ratio.map_or_else(|| "—".into(), |v| format!("{v:.2}")));
        }
        out.push('\n');
    }
    out
}

/// The median headline figure of (suite, case, engine).
pub fn median(r: &Results, suite: &str, case: &str, engine: &str) -> Option<f64> {
    r.rows
        .iter()
        .find(|x| x.suite == suite && x.case == case && x.engine == engine)
        .and_then(|x| x.headline())
        .map(|s| s.median)
}

/// "1.23× [1.10–1.40]", or "1.23× (1 round)".
fn ratio_text(x: Option<(f64, Option<Interval>)>) -> String {
    match x {
        None => "—".into(),
        Some((v, Some(ci))) => format!("{v:.2}× [{:.2}–{:.2}]", ci.lo, ci.hi),
        Some((v, None)) => format!("{v:.2}× (no interval: 1 round)"),
    }
}

/// The row of (suite, case, engine).
pub fn find<'a>(r: &'a Results, suite: &str, case: &str, engine: &str) -> Option<&'a Row> {
    r.rows.iter().find(|x| x.suite == suite && x.case == case && x.engine == engine)
}

fn short(e: &str) -> String {
    let first = e.lines().next().unwrap_or("");
    let s: String = first.chars().take(90).collect();
    if s.len() < e.len() {
        format!("{s}…")
    } else {
        s
    }
}

fn fmt_num(v: Option<f64>) -> String {
    match v {
        None => "—".into(),
        Some(v) if v >= 100.0 => format!("{v:.0}"),
        Some(v) if v >= 10.0 => format!("{v:.1}"),
        Some(v) => format!("{v:.2}"),
    }
}

fn range(s: Option<Stats>) -> String {
    s.map(|s| format!("{}–{}", fmt_num(Some(s.min)), fmt_num(Some(s.max))))
        .unwrap_or_else(|| "—".into())
}

fn med(s: Option<Stats>) -> Option<f64> {
    s.map(|s| s.median)
}

/// The Markdown tables of every suite that ran.
pub fn tables(r: &Results) -> String {
    let mut out = String::new();
    for suite in suites::ALL {
        let rows = ordered(r, suite);
        if rows.is_empty() {
            continue;
        }
        let _ = writeln!(out, "\n### {suite}\n");
        if rows.iter().any(|x| x.kind == Kind::Io) {
            out.push_str("| case | engine | flush | IOPS | IOPS min–max | CV % | MiB/s | p50 µs | p90 µs | p99 µs | p99.9 µs | max µs | server CPU µs/IO | × best other [95 % CI] |\n");
            out.push_str("|---|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|\n");
        } else {
            out.push_str("| case | engine | measures | ms | ms min–max | CV % | n | × best other [95 % CI] |\n|---|---|---|---:|---:|---:|---:|---:|\n");
        }
        for row in rows {
            let _ = writeln!(out, "{}", table_line(r, row));
        }
    }
    out.push_str(&tls_ratios(r));
    if !r.space.is_empty() {
        out.push_str("\n### space after each suite\n\n| suite | engine | written by clients | data allocated | metadata | data / written | note |\n|---|---|---:|---:|---:|---:|---|\n");
        for s in &r.space {
            let mib = |b: u64| format!("{:.1} MiB", b as f64 / (1u64 << 20) as f64);
            let amp = if s.written_bytes > 0 {
                format!("{:.2}", s.data_bytes as f64 / s.written_bytes as f64)
            } else {
                "—".into()
            };
            let _ = writeln!(
                out,
                "| {} | {} | {} | {} | {} | {amp} | {} |",
                s.suite,
                s.engine,
                mib(s.written_bytes),
                mib(s.data_bytes),
                s.metadata_bytes.map(mib).unwrap_or_else(|| "(in data)".into()),
                s.note
            );
        }
    }
    out
}

fn table_line(r: &Results, row: &Row) -> String {
    let err = row.error.as_deref().map(|e| format!(" ⚠ {}", short(e))).unwrap_or_default();
    let x = ratio_text(ratio(r, row));
    let cv = stats::cv_percent(&row.values()).map(|v| format!("{v:.1}")).unwrap_or("—".into());
    match row.kind {
        Kind::Io => {
            let m = |f: fn(&super::results::IoSample) -> Option<f64>| fmt_num(med(row.stat_opt(f)));
            format!(
                "| {} | {}{err} | {} | {} | {} | {cv} | {} | {} | {} | {} | {} | {} | {} | {x} |",
                row.case,
                row.engine,
                row.flush.as_deref().unwrap_or("—"),
                fmt_num(med(row.headline())),
                range(row.headline()),
                fmt_num(med(row.stat(|s| s.mib_s))),
                m(|s| Some(s.lat_p50_us)),
                m(|s| s.lat_p90_us),
                m(|s| Some(s.lat_p99_us)),
                m(|s| s.lat_p999_us),
                m(|s| s.lat_max_us),
                m(|s| s.server_cpu_us_per_io),
            )
        }
        Kind::TimeMs => format!(
            "| {} | {}{err} | {} | {} | {} | {cv} | {} | {x} |",
            row.case,
            row.engine,
            row.measures.as_deref().unwrap_or("—"),
            fmt_num(med(row.headline())),
            range(row.headline()),
            row.time_ms.len()
        ),
    }
}

/// One target of the project, judged on its interval.
#[derive(Debug, Clone)]
pub struct Target {
    pub name: String,
    /// The ratio of medians with its interval and the figures, or "not measured".
    pub measured: String,
    pub verdict: Verdict,
}

/// Judges `a ÷ b` (the headline figures of two rows) against `target`.
fn judge(name: String, a: Option<&Row>, b: Option<&Row>, target: f64, at_least: bool) -> Target {
    let (Some(a), Some(b)) = (a, b) else {
        return Target { name, measured: "not measured".into(), verdict: Verdict::NotJudged };
    };
    let (Some(ma), Some(mb)) = (med(a.headline()), med(b.headline())) else {
        return Target { name, measured: "not measured".into(), verdict: Verdict::NotJudged };
    };
    let ci = stats::ratio_interval(&a.values(), &b.values());
    let interval = match ci {
        Some(ci) => format!("[{:.3}–{:.3}]", ci.lo, ci.hi),
        None => "(no interval: fewer than 2 rounds)".into(),
    };
    let measured =
        format!("{:.3}× {interval} ({} vs {})", ma / mb, fmt_num(Some(ma)), fmt_num(Some(mb)));
    Target { name, measured, verdict: Verdict::judge(ci, target, at_least) }
}

/// The project's targets, checked against this run (those whose data is absent are "not
/// measured"). Every ratio is thinly ÷ peer on IOPS (higher is better) unless said.
pub fn targets(r: &Results) -> Vec<Target> {
    let mut t = Vec::new();
    let row = |suite: &str, case: &str, engine: &str| find(r, suite, case, engine);
    let (thinly, raw, qcow2) = ("thinly", "qemu-nbd raw", "qemu-nbd qcow2");
    let maxd = r.config.depths.iter().copied().max().unwrap_or(0);
    for qd in [1, 32] {
        let c = |d: u32| format!("rand read 4K qd{qd}, depth {d}");
        t.push(judge(
            format!("thinly depth {maxd} ≥ 0.9× thinly depth 1 (4K rand read qd{qd})"),
            row("depth", &c(maxd), thinly),
            row("depth", &c(1), thinly),
            0.9,
            true,
        ));
        if r.config.depths.contains(&500) {
            t.push(judge(
                format!("thinly ≥ 50× qemu-nbd qcow2 at depth 500 (4K rand read qd{qd})"),
                row("depth", &c(500), thinly),
                row("depth", &c(500), qcow2),
                50.0,
                true,
            ));
        }
    }
    for qd in [1, 32] {
        for (what, label) in
            [("rand read", "random read"), ("rand write", "overwrite (random write, provisioned)")]
        {
            let c = format!("{what} 4K qd{qd}, provisioned");
            t.push(judge(
                format!("thinly 4K {label} qd{qd} ≥ 1.0× qemu-nbd raw"),
                row("basic", &c, thinly),
                row("basic", &c, raw),
                1.0,
                true,
            ));
        }
    }
    for bs in ["4K", "64K"] {
        for qd in [1, 32] {
            let c = format!("first write {bs} qd{qd} (shared block)");
            t.push(judge(
                format!("thinly first write (COW) {bs} qd{qd} ≥ 1.5× qemu-nbd qcow2 overlay"),
                row("cow", &c, thinly),
                row("cow", &c, qcow2),
                1.5,
                true,
            ));
        }
    }
    for qd in [1, 32] {
        let c = format!("rand write 4K qd{qd}, fresh");
        t.push(judge(
            format!("thinly first write (fresh) 4K qd{qd} ≥ 1.5× qemu-nbd qcow2"),
            row("basic", &c, thinly),
            row("basic", &c, qcow2),
            1.5,
            true,
        ));
    }
    t.push(snapshot_flat(r));
    t
}

/// Flat live snapshot creation: the time at N = max within 1.5× of the fastest report
/// point (a single early point is noise-prone on a shared machine: fdatasync latency).
fn snapshot_flat(r: &Results) -> Target {
    let max = r.config.snapshots_max;
    let c = |n: u32| format!("create snapshot (live), N = {n}");
    let fastest = r
        .config
        .snapshot_points
        .iter()
        .filter_map(|n| find(r, "snapshots", &c(*n), "thinly"))
        .filter(|row| row.headline().is_some())
        .min_by(|a, b| {
            let m = |x: &Row| x.headline().map(|s| s.median).unwrap_or(f64::INFINITY);
            m(a).total_cmp(&m(b))
        });
    judge(
        format!(
            "thinly live snapshot create time flat: N = {max} ≤ 1.5× the fastest point (time ratio)"
        ),
        find(r, "snapshots", &c(max), "thinly"),
        fastest,
        1.5,
        false,
    )
}

fn markdown(r: &Results, plots: &[plot::Plot]) -> String {
    let mut out = String::from("# thinly bench results\n\n");
    let m = &r.machine;
    let _ = writeln!(out, "Command: `{}` — {:.0} s in all.\n", r.command.join(" "), r.total_secs);
    let _ = writeln!(out, "thinly: `{}`.\n", r.git_commit);
    let _ = writeln!(
        out,
        "Machine: {} CPUs ({}), {:.1} GiB memory, kernel {}, filesystem {}.\n",
        m.nproc,
        m.cpu,
        m.memory_bytes as f64 / (1u64 << 30) as f64,
        m.kernel,
        m.filesystem
    );
    out.push_str("Tools: ");
    out.push_str(
        &r.tools.iter().map(|(t, v)| format!("{t}: `{v}`")).collect::<Vec<_>>().join("; "),
    );
    let c = &r.config;
    let _ = writeln!(
        out,
        "\n\nRounds: {} (engines interleaved), time-based runs {} s after {} s ramp, fio randseed {}. \
         thinly pools: data block {} KiB, zeroing {}, commit interval {} ms; qcow2 cluster {} KiB \
         (the sweep suite sets both to its block size). Figures are medians of the rounds with \
         their min–max and coefficient of variation; latencies are fio's completion latencies \
         (submit to completion); server CPU is the server process's user + system time \
         (/proc/PID/stat) over the measured part of the run ÷ the I/Os measured. Ratios are \
         against the best other engine that stores data, with a {} Welch t-interval on the \
         logs of the rounds' figures (`lab/src/bench/stats.rs`); a target is met only when its \
         whole interval clears it. Every fio run's job file and JSON output are in `raw/`; \
         `config.toml` repeats this run (`thinly bench --config config.toml`).\n",
        c.repeat,
        c.runtime.as_secs_f64(),
        c.ramp.as_secs_f64(),
        c.seed,
        c.pool.block_size_bytes >> 10,
        if c.pool.zeroing { "on" } else { "off" },
        c.pool.commit_interval_ms,
        c.qcow2_cluster_bytes >> 10,
        stats::CONFIDENCE,
    );
    if !r.load.is_empty() {
        out.push_str("Load average (1/5/15 min; the machine may be shared): ");
        out.push_str(
            &r.load.iter().map(|(w, l)| format!("{w}: {l}")).collect::<Vec<_>>().join("; "),
        );
        out.push_str("\n\n");
    }
    if !r.skipped.is_empty() {
        out.push_str("**Skipped engines:** ");
        out.push_str(
            &r.skipped.iter().map(|(e, w)| format!("{e} ({w})")).collect::<Vec<_>>().join("; "),
        );
        out.push_str("\n\n");
    }
    out.push_str("## Tables\n");
    out.push_str(&tables(r));
    out.push_str("\n## Targets\n\n| target | measured (ratio of medians [95 % CI]) | verdict |\n|---|---|---|\n");
    for t in targets(r) {
        let _ = writeln!(out, "| {} | {} | {} |", t.name, t.measured, t.verdict.label());
    }
    if !plots.is_empty() {
        out.push_str("\n## Plots\n\n");
        for p in plots {
            let _ = writeln!(out, "![{}]({})\n\n*{}*\n", p.file, p.file, p.caption);
        }
    }
    errors_and_commands(r, &mut out);
    out
}

fn errors_and_commands(r: &Results, out: &mut String) {
    let errors: Vec<&Row> = r.rows.iter().filter(|x| x.error.is_some()).collect();
    if !errors.is_empty() {
        out.push_str("\n## Errors\n\n");
        for row in errors {
            let _ = writeln!(
                out,
                "- {} / {} / {}:\n\n```\n{}\n```",
                row.suite,
                row.case,
                row.engine,
                row.error.as_deref().unwrap_or("")
            );
        }
    }
    out.push_str("\n## How to reproduce\n\nServers:\n\n");
    for (e, cmd) in &r.servers {
        let _ = writeln!(out, "- {e}: `{cmd}`");
    }
    out.push_str(
        "\n<details><summary>fio and management command lines (first round)</summary>\n\n",
    );
    for row in &r.rows {
        for cmd in &row.commands {
            let _ = writeln!(out, "- {} / {} / {}: `{cmd}`", row.suite, row.case, row.engine);
        }
    }
    out.push_str("\n</details>\n");
}

/// One CSV record per row: the medians of every figure, the spread and the ratio with its
/// interval (empty fields where a figure is absent).
#[derive(serde::Serialize)]
struct CsvRecord<'a> {
    suite: &'a str,
    case: &'a str,
    engine: &'a str,
    kind: &'static str,
    flush: &'a str,
    measures: &'a str,
    n: usize,
    median: Option<f64>,
    min: Option<f64>,
    max: Option<f64>,
    cv_percent: Option<f64>,
    mib_s: Option<f64>,
    lat_p50_us: Option<f64>,
    lat_p90_us: Option<f64>,
    lat_p99_us: Option<f64>,
    lat_p999_us: Option<f64>,
    lat_max_us: Option<f64>,
    server_cpu_us_per_io: Option<f64>,
    ratio_best_other: Option<f64>,
    ratio_ci_lo: Option<f64>,
    ratio_ci_hi: Option<f64>,
    error: &'a str,
}

fn csv(r: &Results) -> Result<Vec<u8>> {
    let mut w = csv::Writer::from_writer(Vec::new());
    for row in &r.rows {
        let h = row.headline();
        let x = ratio(r, row);
        let m = |f: fn(&super::results::IoSample) -> Option<f64>| med(row.stat_opt(f));
        w.serialize(CsvRecord {
            suite: &row.suite,
            case: &row.case,
            engine: &row.engine,
            kind: if row.kind == Kind::Io { "iops" } else { "ms" },
            flush: row.flush.as_deref().unwrap_or(""),
            measures: row.measures.as_deref().unwrap_or(""),
            n: row.values().len(),
            median: h.map(|s| s.median),
            min: h.map(|s| s.min),
            max: h.map(|s| s.max),
            cv_percent: stats::cv_percent(&row.values()),
            mib_s: m(|s| Some(s.mib_s)),
            lat_p50_us: m(|s| Some(s.lat_p50_us)),
            lat_p90_us: m(|s| s.lat_p90_us),
            lat_p99_us: m(|s| Some(s.lat_p99_us)),
            lat_p999_us: m(|s| s.lat_p999_us),
            lat_max_us: m(|s| s.lat_max_us),
            server_cpu_us_per_io: m(|s| s.server_cpu_us_per_io),
            ratio_best_other: x.map(|x| x.0),
            ratio_ci_lo: x.and_then(|x| x.1).map(|c| c.lo),
            ratio_ci_hi: x.and_then(|x| x.1).map(|c| c.hi),
            error: row.error.as_deref().unwrap_or(""),
        })
        .context("writing a CSV record")?;
    }
    w.into_inner().context("finishing results.csv")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bench::compare::tests::{results, row};

    #[test]
    fn the_csv_quotes_every_field_it_must_and_reads_back_with_its_ratio_interval() {
        let mut peer = row("rand read 4K qd1, \"odd\" case", Kind::Io, &[50.0, 50.0]);
        peer.engine = "qemu-nbd raw".into();
        let mine = row("rand read 4K qd1, \"odd\" case", Kind::Io, &[100.0, 100.0]);
        let r = results(vec![mine, peer]);
        let bytes = csv(&r).expect("writes");
        let mut rd = ::csv::Reader::from_reader(bytes.as_slice());
        let head: Vec<String> = rd.headers().expect("header").iter().map(String::from).collect();
        let col = |name: &str| head.iter().position(|h| h == name).expect(name);
        let recs: Vec<::csv::StringRecord> = rd.records().map(|x| x.expect("a record")).collect();
        assert_eq!(recs.len(), 2, "one record per row");
        assert_eq!(&recs[0][col("case")], "rand read 4K qd1, \"odd\" case");
        assert_eq!(&recs[0][col("median")], "100.0");
        assert_eq!(&recs[0][col("ratio_best_other")], "2.0");
        let lo: f64 = recs[0][col("ratio_ci_lo")].parse().expect("a number");
        assert!((lo - 2.0).abs() < 1e-9, "no spread: a point interval");
        assert_eq!(&recs[1][col("error")], "");
    }

    #[test]
    fn a_target_with_one_round_is_not_judged_and_with_a_clear_interval_is_met() {
        let a = row("c", Kind::Io, &[200.0]);
        let b = row("c", Kind::Io, &[100.0]);
        let t = judge("one round".into(), Some(&a), Some(&b), 1.5, true);
        assert_eq!(t.verdict, Verdict::NotJudged);
        let a = row("c", Kind::Io, &[200.0, 210.0, 190.0]);
        let b = row("c", Kind::Io, &[100.0, 101.0, 99.0]);
        assert_eq!(judge("x".into(), Some(&a), Some(&b), 1.5, true).verdict, Verdict::Met);
        assert_eq!(judge("x".into(), Some(&a), Some(&b), 2.5, true).verdict, Verdict::Missed);
        assert_eq!(judge("x".into(), Some(&a), None, 1.5, true).verdict, Verdict::NotJudged);
    }
}
