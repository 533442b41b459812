//! The plots of a run, drawn with plotters' SVG backend. Every plot has a caption saying
//! what was measured; axes are logarithmic where figures span decades (IOPS across
//! engines, snapshot times, chain depths); error bars show the rounds' min–max around the
//! median; 4 KiB and 1 MiB cases get separate axes (their IOPS differ by orders of
//! magnitude). Rows without figures are left out (the tables list their errors).

use super::results::{Kind, Results, Row, Stats};
use super::suites::slug;
use anyhow::{anyhow, Result};
use plotters::prelude::*;

/// One SVG and its caption.
pub struct Plot {
    pub file: String,
    pub svg: String,
    pub caption: String,
}

const PALETTE: [RGBColor; 8] = [
    RGBColor(214, 39, 40),
    RGBColor(31, 119, 180),
    RGBColor(44, 160, 44),
    RGBColor(255, 127, 14),
    RGBColor(127, 127, 127),
    RGBColor(148, 103, 189),
    RGBColor(140, 86, 75),
    RGBColor(227, 119, 194),
];

/// Every plot of `r`; a plot that fails to draw is reported on stderr and left out.
pub fn all(r: &Results) -> Vec<Plot> {
    let mut out = Vec::new();
    let mut push = |p: Result<Plot>| match p {
        Ok(p) => out.push(p),
        Err(e) => eprintln!("thinly bench: WARNING: a plot was not drawn: {e:#}"),
    };
    for (suite, series) in series_of(r) {
        push(series_plot(r, &suite, &series));
    }
    for c in r.curves.iter().map(|c| c.name.clone()).collect::<std::collections::BTreeSet<_>>() {
        push(curve_plot(r, &c));
    }
    for (suite, filter, what) in [
        ("basic", "4K", "4 KiB cases"),
        ("basic", "1M", "1 MiB cases"),
        ("cow", "", "every case"),
        ("trace", "", "every trace"),
    ] {
        let rows: Vec<&Row> = r
            .rows
            .iter()
            .filter(|x| x.suite == suite && x.case.contains(filter) && x.headline().is_some())
            .collect();
        if !rows.is_empty() {
            push(dot_plot(suite, filter, what, &rows));
        }
    }
    out
}

/// (suite, series) of every plotted series, in order of first appearance.
fn series_of(r: &Results) -> Vec<(String, String)> {
    let mut v: Vec<(String, String)> = Vec::new();
    for row in &r.rows {
        if let Some(s) = &row.series {
            if !v.contains(&(row.suite.clone(), s.clone())) {
                v.push((row.suite.clone(), s.clone()));
            }
        }
    }
    v
}

fn color(i: usize) -> RGBColor {
    PALETTE[i % PALETTE.len()]
}

/// A log range covering `values` (positive ones), widened to whole decades.
fn log_range(values: impl Iterator<Item = f64>) -> std::ops::Range<f64> {
    let v: Vec<f64> = values.filter(|x| x.is_finite() && *x > 0.0).collect();
    let lo = v.iter().copied().fold(f64::INFINITY, f64::min);
    let hi = v.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    if !lo.is_finite() {
        return 1.0..10.0;
    }
    let lo = 10f64.powf(lo.log10().floor());
    let hi = 10f64.powf(hi.log10().ceil().max(lo.log10() + 1.0));
    lo..hi
}

/// A tick label: 1, 2.5, 10, 1k, 2.5k, 1M (no trailing ".0", thousands as k and M).
fn tick(v: &f64) -> String {
    let (x, unit) = match v.abs() {
        a if a >= 1e6 => (v / 1e6, "M"),
        a if a >= 1e3 => (v / 1e3, "k"),
        _ => (*v, ""),
    };
    let s = format!("{x:.2}");
    let s = s.trim_end_matches('0').trim_end_matches('.');
    format!("{s}{unit}")
}

fn err(e: impl std::fmt::Display) -> anyhow::Error {
    anyhow!("{e}")
}

/// (x, min, median, max) per engine, for the rows of one series.
type Points = Vec<(String, Vec<(f64, Stats)>)>;

fn series_points(rows: &[&Row]) -> Points {
    let mut lines: Points = Vec::new();
    for row in rows {
        let (Some(x), Some(y)) = (row.x, row.headline()) else { continue };
        match lines.iter_mut().find(|l| l.0 == row.engine) {
            Some(l) => l.1.push((x, y)),
            None => lines.push((row.engine.clone(), vec![(x, y)])),
        }
    }
    for l in &mut lines {
        l.1.sort_by(|a, b| a.0.total_cmp(&b.0));
    }
    lines
}

/// A line per engine over x (depth, N, block size), log–log, with min–max error bars.
fn series_plot(r: &Results, suite: &str, series: &str) -> Result<Plot> {
    let rows: Vec<&Row> =
        r.rows.iter().filter(|x| x.suite == suite && x.series.as_deref() == Some(series)).collect();
    let lines = series_points(&rows);
    let io = rows.first().is_some_and(|x| x.kind == Kind::Io);
    let (x_desc, y_desc) = match suite {
        "depth" => ("snapshot chain depth (log)", "IOPS, median of the rounds (log)"),
        "sweep" => ("data block / cluster size, KiB (log)", "IOPS, median of the rounds (log)"),
        _ if io => ("x (log)", "IOPS (log)"),
        _ => ("N: snapshots existing (log)", "milliseconds, median of the window at N (log)"),
    };
    let caption = format!(
        "{suite}: {series}. One line per engine; the point is the median of the rounds (of \
         the window of operations at N for snapshots), the error bar their min–max."
    );
    let pts = || lines.iter().flat_map(|l| l.1.iter());
    let xr = log_range(pts().map(|p| p.0));
    let yr = log_range(pts().flat_map(|p| [p.1.min, p.1.max]));
    let mut svg = String::new();
    {
        let root = SVGBackend::with_string(&mut svg, (900, 520)).into_drawing_area();
        root.fill(&WHITE).map_err(err)?;
        let mut chart = ChartBuilder::on(&root)
            .caption(format!("{suite}: {series}"), ("sans-serif", 20))
            .margin(12)
            .x_label_area_size(48)
            .y_label_area_size(80)
            .build_cartesian_2d(xr.log_scale(), yr.log_scale())
            .map_err(err)?;
        chart
            .configure_mesh()
            .x_desc(x_desc)
            .y_desc(y_desc)
            .x_label_formatter(&tick)
            .y_label_formatter(&tick)
            .draw()
            .map_err(err)?;
        for (i, (engine, p)) in lines.iter().enumerate() {
            let c = color(i);
            chart
                .draw_series(LineSeries::new(
                    p.iter().map(|(x, s)| (*x, s.median)),
                    c.stroke_width(2),
                ))
                .map_err(err)?
                .label(engine.as_str())
                .legend(move |(x, y)| {
                    PathElement::new(vec![(x, y), (x + 20, y)], c.stroke_width(2))
                });
            chart
                .draw_series(p.iter().map(|(x, s)| {
                    ErrorBar::new_vertical(*x, s.min, s.median, s.max, c.filled(), 8)
                }))
                .map_err(err)?;
        }
        legend(&mut chart)?;
        root.present().map_err(err)?;
    }
    Ok(Plot { file: format!("{suite}-{}.svg", slug(series)), svg, caption })
}

fn legend<'a, 'b: 'a, X, Y>(
    chart: &mut ChartContext<'a, SVGBackend<'b>, Cartesian2d<X, Y>>,
) -> Result<()>
where
    X: plotters::coord::ranged1d::Ranged,
    Y: plotters::coord::ranged1d::Ranged,
{
    chart
        .configure_series_labels()
        .background_style(WHITE.mix(0.85))
        .border_style(BLACK)
        .position(SeriesLabelPosition::UpperLeft)
        .draw()
        .map_err(err)
}

/// Every operation of a long series (snapshot N = 1 … max), medians of at most 400
/// buckets per engine, log–log.
fn curve_plot(r: &Results, name: &str) -> Result<Plot> {
    let lines: Vec<(String, Vec<(f64, f64)>)> = r
        .curves
        .iter()
        .filter(|c| c.name == name)
        .map(|c| (c.engine.clone(), bucket(&c.points, 400)))
        .collect();
    let caption = format!(
        "{name}: the time of every operation N (N snapshots existing), as medians of up to 400 \
         equal buckets of N per engine."
    );
    let xr = log_range(lines.iter().flat_map(|l| l.1.iter().map(|p| p.0)));
    let yr = log_range(lines.iter().flat_map(|l| l.1.iter().map(|p| p.1)));
    let mut svg = String::new();
    {
        let root = SVGBackend::with_string(&mut svg, (900, 520)).into_drawing_area();
        root.fill(&WHITE).map_err(err)?;
        let mut chart = ChartBuilder::on(&root)
            .caption(format!("{name}: every operation"), ("sans-serif", 20))
            .margin(12)
            .x_label_area_size(48)
            .y_label_area_size(80)
            .build_cartesian_2d(xr.log_scale(), yr.log_scale())
            .map_err(err)?;
        chart
            .configure_mesh()
            .x_desc("N (log)")
            .y_desc("milliseconds (log)")
            .x_label_formatter(&tick)
            .y_label_formatter(&tick)
            .draw()
            .map_err(err)?;
        for (i, (engine, p)) in lines.iter().enumerate() {
            let c = color(i);
            chart
                .draw_series(LineSeries::new(p.iter().copied(), c.stroke_width(1)))
                .map_err(err)?
                .label(engine.as_str())
                .legend(move |(x, y)| {
                    PathElement::new(vec![(x, y), (x + 20, y)], c.stroke_width(2))
                });
        }
        legend(&mut chart)?;
        root.present().map_err(err)?;
    }
    Ok(Plot { file: format!("snapshots-all-{}.svg", slug(name)), svg, caption })
}

/// Cases down the y axis, IOPS along a log x axis: a dot per engine at the median with a
/// min–max error bar.
fn dot_plot(suite: &str, filter: &str, what: &str, rows: &[&Row]) -> Result<Plot> {
    let mut cases: Vec<String> = Vec::new();
    let mut engines: Vec<String> = Vec::new();
    for row in rows {
        if !cases.contains(&row.case) {
            cases.push(row.case.clone());
        }
        if !engines.contains(&row.engine) {
            engines.push(row.engine.clone());
        }
    }
    let caption = format!(
        "{suite}, {what}: IOPS per case and engine (log axis); the dot is the median of the \
         rounds, the bar their min–max. Null exports store nothing: they are transports."
    );
    let xr = log_range(rows.iter().filter_map(|x| x.headline()).flat_map(|s| [s.min, s.max]));
    let n = cases.len();
    let height = 140 + 34 * n as u32;
    let mut svg = String::new();
    {
        let root = SVGBackend::with_string(&mut svg, (1200, height)).into_drawing_area();
        root.fill(&WHITE).map_err(err)?;
        let cases_for_labels = cases.clone();
        let mut chart = ChartBuilder::on(&root)
            .caption(format!("{suite}: IOPS, {what}"), ("sans-serif", 20))
            .margin(12)
            .x_label_area_size(48)
            .y_label_area_size(420)
            .build_cartesian_2d(xr.log_scale(), -0.5f64..(n as f64 - 0.5))
            .map_err(err)?;
        chart
            .configure_mesh()
            .x_desc("IOPS (log)")
            .x_label_formatter(&tick)
            .y_labels(n.max(1))
            .y_label_formatter(&|y: &f64| {
                let i = y.round();
                if (y - i).abs() < 1e-6 && i >= 0.0 {
                    cases_for_labels.get(i as usize).cloned().unwrap_or_default()
                } else {
                    String::new()
                }
            })
            .draw()
            .map_err(err)?;
        let k = engines.len().max(1) as f64;
        for (i, engine) in engines.iter().enumerate() {
            let c = color(i);
            // Engines side by side within a case's band.
            let dy = (i as f64 - (k - 1.0) / 2.0) * 0.6 / k;
            let pts: Vec<(f64, Stats)> = rows
                .iter()
                .filter(|x| &x.engine == engine)
                .filter_map(|x| {
                    let y = cases.iter().position(|c| *c == x.case)? as f64;
                    Some((y + dy, x.headline()?))
                })
                .collect();
            chart
                .draw_series(pts.iter().map(|(y, s)| Circle::new((s.median, *y), 4, c.filled())))
                .map_err(err)?
                .label(engine.as_str())
                .legend(move |(x, y)| Circle::new((x + 10, y), 4, c.filled()));
            chart
                .draw_series(pts.iter().map(|(y, s)| {
                    ErrorBar::new_horizontal(*y, s.min, s.median, s.max, c.filled(), 6)
                }))
                .map_err(err)?;
        }
        legend(&mut chart)?;
        root.present().map_err(err)?;
    }
    let tag = if filter.is_empty() { String::new() } else { format!("-{}", slug(filter)) };
    Ok(Plot { file: format!("{suite}{tag}-iops.svg"), svg, caption })
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tick_labels_are_short_and_have_no_trailing_zeroes() {
        let t = |v: f64| tick(&v);
        assert_eq!(
            [t(1.0), t(2.5), t(10.0), t(1000.0), t(2500.0), t(1e6)],
            ["1", "2.5", "10", "1k", "2.5k", "1M"]
        );
        assert_eq!(t(0.25), "0.25");
    }
}
