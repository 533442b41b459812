//! Writes a run's results: results.json (everything, for reproduction), results.csv (one
//! line per row), results.md (the tables, the targets, the machine and the commands) and
//! one SVG per plotted series. Ratios compare an engine with the best OTHER engine that is
//! not a ceiling: IOPS / best other IOPS, or best other time / time (so > 1 is better).

use super::results::{Kind, Results, Row, Stats};
use super::suites;
use super::svg;
use anyhow::{Context, Result};
use std::fmt::Write as _;
use std::path::Path;

pub fn write_all(r: &Results, out: &Path) -> Result<()> {
    let write = |name: &str, text: &str| {
        let p = out.join(name);
        std::fs::write(&p, text).with_context(|| format!("writing {}", p.display()))
    };
    write("results.json", &serde_json::to_string_pretty(r).context("encoding results.json")?)?;
    write("results.csv", &csv(r))?;
    let plots = plots(r);
    for (name, svg) in &plots {
        write(name, svg)?;
    }
    let names: Vec<&str> = plots.iter().map(|p| p.0.as_str()).collect();
    write("results.md", &markdown(r, &names))?;
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

/// This row against the best other non-ceiling engine of the same case.
pub fn ratio(r: &Results, row: &Row) -> Option<f64> {
    let mine = row.headline()?.median;
    let others = r
        .rows
        .iter()
        .filter(|o| {
            o.suite == row.suite && o.case == row.case && o.engine != row.engine && !o.ceiling
        })
        .filter_map(|o| o.headline().map(|s| s.median));
    match row.kind {
        Kind::Io => {
            others.fold(None, |b: Option<f64>, v| Some(b.map_or(v, |b| b.max(v)))).map(|b| mine / b)
        }
        Kind::TimeMs => {
            others.fold(None, |b: Option<f64>, v| Some(b.map_or(v, |b| b.min(v)))).map(|b| b / mine)
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

fn short(e: &str) -> String {
    let first = e.lines().next().unwrap_or("");
    let s: String = first.chars().take(90).collect();
    if s.len() < e.len() {
        format!("{s}…")
    } else {
        s
    }
}

fn f(v: Option<f64>) -> String {
    match v {
        None => "—".into(),
        Some(v) if v >= 100.0 => format!("{v:.0}"),
        Some(v) if v >= 10.0 => format!("{v:.1}"),
        Some(v) => format!("{v:.2}"),
    }
}

fn range(s: Option<Stats>) -> String {
    s.map(|s| format!("{}–{}", f(Some(s.min)), f(Some(s.max)))).unwrap_or_else(|| "—".into())
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
            out.push_str("| case | engine | IOPS | IOPS min–max | MiB/s | p50 µs | p99 µs | × best other |\n");
            out.push_str("|---|---|---:|---:|---:|---:|---:|---:|\n");
        } else {
            out.push_str("| case | engine | ms | ms min–max | n | × best other |\n|---|---|---:|---:|---:|---:|\n");
        }
        for row in rows {
            let err = row.error.as_deref().map(|e| format!(" ⚠ {}", short(e))).unwrap_or_default();
            let x = ratio(r, row).map(|v| format!("{v:.2}×")).unwrap_or_else(|| "—".into());
            match row.kind {
                Kind::Io => {
                    let _ = writeln!(
                        out,
                        "| {} | {}{err} | {} | {} | {} | {} | {} | {x} |",
                        row.case,
                        row.engine,
                        f(med(row.headline())),
                        range(row.headline()),
                        f(med(row.stat(|s| s.mib_s))),
                        f(med(row.stat(|s| s.lat_p50_us))),
                        f(med(row.stat(|s| s.lat_p99_us))),
                    );
                }
                Kind::TimeMs => {
                    let _ = writeln!(
                        out,
                        "| {} | {}{err} | {} | {} | {} | {x} |",
                        row.case,
                        row.engine,
                        f(med(row.headline())),
                        range(row.headline()),
                        row.time_ms.len()
                    );
                }
            }
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

/// The project's targets, checked against this run (only those whose data is present).
pub fn targets(r: &Results) -> Vec<(String, String, Option<bool>)> {
    let mut t = Vec::new();
    let thinly = "thinly";
    let mut check = |name: String, a: Option<f64>, b: Option<f64>, min_ratio: f64| {
        let (measured, met) = match (a, b) {
            (Some(a), Some(b)) if b > 0.0 => (
                format!("{:.3}× ({} vs {})", a / b, f(Some(a)), f(Some(b))),
                Some(a / b >= min_ratio),
            ),
            _ => ("not measured".to_string(), None),
        };
        t.push((name, measured, met));
    };
    let maxd = r.config.depths.iter().copied().max().unwrap_or(0);
    for qd in [1, 32] {
        let c = |d: u32| format!("rand read 4K qd{qd}, depth {d}");
        check(
            format!("thinly depth {maxd} ≥ 0.9× thinly depth 1 (4K rand read qd{qd})"),
            median(r, "depth", &c(maxd), thinly),
            median(r, "depth", &c(1), thinly),
            0.9,
        );
        if r.config.depths.contains(&500) {
            check(
                format!("thinly ≥ 50× qemu-nbd qcow2 at depth 500 (4K rand read qd{qd})"),
                median(r, "depth", &c(500), thinly),
                median(r, "depth", &c(500), "qemu-nbd qcow2"),
                50.0,
            );
        }
    }
    for qd in [1, 32] {
        for what in ["rand read", "rand write"] {
            let c = format!("{what} 4K qd{qd}, provisioned");
            let label = if what == "rand read" {
                "random read"
            } else {
                "overwrite (random write, provisioned)"
            };
            check(
                format!("thinly 4K {label} qd{qd} ≥ 1.0× qemu-nbd raw"),
                median(r, "basic", &c, thinly),
                median(r, "basic", &c, "qemu-nbd raw"),
                1.0,
            );
        }
    }
    for bs in ["4K", "64K"] {
        for qd in [1, 32] {
            let c = format!("first write {bs} qd{qd} (shared block)");
            check(
                format!("thinly first write (COW) {bs} qd{qd} ≥ 1.5× qemu-nbd qcow2 overlay"),
                median(r, "cow", &c, thinly),
                median(r, "cow", &c, "qemu-nbd qcow2"),
                1.5,
            );
        }
    }
    for qd in [1, 32] {
        let c = format!("rand write 4K qd{qd}, fresh");
        check(
            format!("thinly first write (fresh) 4K qd{qd} ≥ 1.5× qemu-nbd qcow2"),
            median(r, "basic", &c, thinly),
            median(r, "basic", &c, "qemu-nbd qcow2"),
            1.5,
        );
    }
    let max = r.config.snapshots_max;
    let c = |n: u32| format!("create snapshot, N = {n}");
    // Flat: t(max) ≤ 1.5 × t(1). A single early point is noise-prone on a shared machine
    // (fdatasync latency), so the baseline is the fastest report point, N = 1 included.
    let baseline = r
        .config
        .snapshot_points
        .iter()
        .filter_map(|n| median(r, "snapshots", &c(*n), thinly))
        .fold(None, |b: Option<f64>, v| Some(b.map_or(v, |b| b.min(v))));
    let (a, b) = (median(r, "snapshots", &c(max), thinly), baseline);
    let (measured, met) = match (a, b) {
        (Some(a), Some(b)) if b > 0.0 => (
            format!(
                "{:.2}× ({} ms at N = {max} vs {} ms, the fastest point; N = 1: {} ms)",
                a / b,
                f(Some(a)),
                f(Some(b)),
                f(median(r, "snapshots", &c(1), thinly))
            ),
            Some(a / b <= 1.5),
        ),
        _ => ("not measured".to_string(), None),
    };
    t.push((
        format!("thinly snapshot create time flat: N = {max} within 1.5× of N = 1"),
        measured,
        met,
    ));
    t
}

fn markdown(r: &Results, plots: &[&str]) -> String {
    let mut out = String::from("# thinly bench results\n\n");
    let m = &r.machine;
    let _ = writeln!(out, "Command: `{}` — {:.0} s in all.\n", r.command.join(" "), r.total_secs);
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
        "\n\nRounds: {} (engines interleaved), time-based runs {} s after {} s ramp; medians, with min–max of the rounds.\n",
        c.repeat,
        c.runtime.as_secs_f64(),
        c.ramp.as_secs_f64()
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
    out.push_str("\n## Targets\n\n| target | measured | met |\n|---|---|---|\n");
    for (name, measured, met) in targets(r) {
        let m = match met {
            Some(true) => "yes",
            Some(false) => "**no**",
            None => "—",
        };
        let _ = writeln!(out, "| {name} | {measured} | {m} |");
    }
    if !plots.is_empty() {
        out.push_str("\n## Plots\n\n");
        for p in plots {
            let _ = writeln!(out, "![{p}]({p})");
        }
    }
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
    out
}

fn csv(r: &Results) -> String {
    let mut out = String::from("suite,case,engine,kind,n,median,min,max,mib_s,lat_p50_us,lat_p99_us,ratio_best_other,error\n");
    let q = |s: &str| format!("\"{}\"", s.replace('"', "\"\""));
    let num = |v: Option<f64>| v.map(|v| format!("{v:.3}")).unwrap_or_default();
    for row in &r.rows {
        let h = row.headline();
        let n = match row.kind {
            Kind::Io => row.io.len(),
            Kind::TimeMs => row.time_ms.len(),
        };
        let _ = writeln!(
            out,
            "{},{},{},{},{n},{},{},{},{},{},{},{},{}",
            q(&row.suite),
            q(&row.case),
            q(&row.engine),
            if row.kind == Kind::Io { "iops" } else { "ms" },
            num(h.map(|s| s.median)),
            num(h.map(|s| s.min)),
            num(h.map(|s| s.max)),
            num(med(row.stat(|s| s.mib_s))),
            num(med(row.stat(|s| s.lat_p50_us))),
            num(med(row.stat(|s| s.lat_p99_us))),
            num(ratio(r, row)),
            q(row.error.as_deref().unwrap_or(""))
        );
    }
    out
}

/// (file name, SVG) of every plot.
fn plots(r: &Results) -> Vec<(String, String)> {
    let mut out = Vec::new();
    // One line chart per (suite, series): x = depth or N, one line per engine.
    let mut series: Vec<(String, String)> = Vec::new();
    for row in &r.rows {
        if let Some(s) = &row.series {
            if !series.contains(&(row.suite.clone(), s.clone())) {
                series.push((row.suite.clone(), s.clone()));
            }
        }
    }
    for (suite, s) in series {
        let rows: Vec<&Row> =
            r.rows.iter().filter(|x| x.suite == suite && x.series.as_ref() == Some(&s)).collect();
        let mut lines: Vec<svg::Line> = Vec::new();
        for row in &rows {
            let (Some(x), Some(y)) = (row.x, row.headline()) else { continue };
            match lines.iter_mut().find(|l| l.label == row.engine) {
                Some(l) => l.points.push((x, y.median)),
                None => {
                    lines.push(svg::Line { label: row.engine.clone(), points: vec![(x, y.median)] })
                }
            }
        }
        let io = rows.first().is_some_and(|x| x.kind == Kind::Io);
        let (x_label, y_label) = if suite == "depth" {
            ("snapshot chain depth", "IOPS (median)")
        } else {
            ("N (snapshot number)", "milliseconds (median of the window at N)")
        };
        let name = format!("{suite}-{}.svg", slug(&s));
        out.push((
            name,
            svg::line_chart(&format!("{suite}: {s}"), x_label, y_label, true, !io, &lines),
        ));
    }
    // Every snapshot operation, bucketed to at most 400 points per engine.
    for op in ["create snapshot", "delete snapshot"] {
        let mut lines: Vec<svg::Line> = r
            .curves
            .iter()
            .filter(|c| c.name == op)
            .map(|c| svg::Line {
                label: format!("{} (every N)", c.engine),
                points: bucket(&c.points, 400),
            })
            .collect();
        if lines.is_empty() {
            continue;
        }
        for row in r.rows.iter().filter(|x| x.series.as_deref() == Some(op) && x.engine != "thinly")
        {
            let (Some(x), Some(y)) = (row.x, row.headline()) else { continue };
            match lines.iter_mut().find(|l| l.label == row.engine) {
                Some(l) => l.points.push((x, y.median)),
                None => {
                    lines.push(svg::Line { label: row.engine.clone(), points: vec![(x, y.median)] })
                }
            }
        }
        out.push((
            format!("snapshots-all-{}.svg", slug(op)),
            svg::line_chart(
                &format!("{op}: time of operation N"),
                "N",
                "milliseconds",
                true,
                true,
                &lines,
            ),
        ));
    }
    // Bars for basic and cow.
    for suite in ["basic", "cow"] {
        let rows = ordered(r, suite);
        let mut engines: Vec<String> = Vec::new();
        let mut cases: Vec<String> = Vec::new();
        for row in &rows {
            if !engines.contains(&row.engine) {
                engines.push(row.engine.clone());
            }
            if !cases.contains(&row.case) && !row.case.starts_with('(') {
                cases.push(row.case.clone());
            }
        }
        if cases.is_empty() {
            continue;
        }
        let groups: Vec<(String, Vec<Option<f64>>)> = cases
            .iter()
            .map(|c| {
                let v = engines.iter().map(|e| median(r, suite, c, e)).collect();
                (c.clone(), v)
            })
            .collect();
        out.push((
            format!("{suite}-iops.svg"),
            svg::bar_chart(&format!("{suite}: IOPS (median)"), "IOPS", &engines, &groups),
        ));
    }
    out
}

/// At most `n` points: medians of equal buckets of x.
fn bucket(points: &[[f64; 2]], n: usize) -> Vec<(f64, f64)> {
    let size = points.len().div_ceil(n.max(1)).max(1);
    points
        .chunks(size)
        .filter_map(|c| {
            let y = Stats::of(&c.iter().map(|p| p[1]).collect::<Vec<_>>())?.median;
            Some((c[c.len() / 2][0], y))
        })
        .collect()
}

fn slug(s: &str) -> String {
    let mut out = String::new();
    for ch in s.chars() {
        if ch.is_ascii_alphanumeric() {
            out.push(ch.to_ascii_lowercase());
        } else if !out.ends_with('-') {
            out.push('-');
        }
    }
    out.trim_matches('-').to_string()
}
